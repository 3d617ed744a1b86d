"""The App's Quart classes: Quart's request, response and URL map, minus three costs that
Quart and werkzeug pay on every request for nothing.

Measured on a hello-world route served by ``megatrio run`` under wrk, in back-to-back pairs
with and without each (``bench/RESULTS.md``), each of these was 6-10% of the App's request:

- **A missing header raised an exception.** werkzeug's ``Headers.get`` and ``in`` look a
  name up by raising and catching ``BadRequestKeyError`` (an ``HTTPException``, costly to
  build) when it is absent, and every GET misses ``Content-Length`` and
  ``Transfer-Encoding`` (the request's ``content_length``) and a fresh response misses
  ``Content-Type``. :class:`FastHeaders` answers the same lookups by a scan.
- **An import on every access of ``request.blueprints``** (Quart imports its helper inside
  the property, to avoid a cycle; the import machinery runs each time), three times per
  request. :class:`AppRequest` imports it once.
- **IDNA-encoding the ``Host`` on every request** to bind the URL map (Python's ``idna``
  codec is pure Python). :class:`AppMap` remembers the encodings of the last
  :data:`IDNA_CACHE_SIZE` hosts (bounded: the ``Host`` header is the client's to choose).

Everything else is Quart's own code, and what each class returns is what Quart's would:
``tests/property/test_quart_classes.py`` compares them with werkzeug's and Quart's on
generated headers, keys and hosts. :data:`REQUIRED` names the one Quart internal used;
:func:`quart_app_class` falls back to Quart's own classes (with a warning) when it is
missing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any, Final

from quart.routing import QuartMap
from quart_trio import QuartTrio
from quart_trio.wrappers.request import TrioRequest
from quart_trio.wrappers.response import TrioResponse
from werkzeug.datastructures import Headers
from werkzeug.exceptions import BadHost, HTTPException
from werkzeug.routing import Map, MapAdapter

from ..._util import missing_references

log = logging.getLogger("megatrio.http")

REQUIRED: Final = ("quart.helpers:_split_blueprint_path",)
"""``module:attribute`` of every Quart internal used here."""

IDNA_CACHE_SIZE: Final = 256
"""How many hosts' IDNA encodings :class:`AppMap` keeps."""


class FastHeaders(Headers):
    """werkzeug's ``Headers`` whose ``get`` (without ``type``) and ``in`` find a missing name
    without raising and catching an exception; the same answers otherwise."""

    def get(  # type: ignore[override]
        self, key: str, default: Any = None, type: Any = None
    ) -> Any:
        if type is not None or not isinstance(key, str):
            return super().get(key, default, type)
        wanted = key.lower()
        for name, value in self:
            if name.lower() == wanted:
                return value
        return default

    def __contains__(self, key: str) -> bool:
        if not isinstance(key, str):
            return super().__contains__(key)
        wanted = key.lower()
        for name, _ in self:  # noqa: SIM110 - a loop: any() and its generator cost more here
            if name.lower() == wanted:
                return True
        return False


class AppRequest(TrioRequest):
    """quart-trio's request, its headers answering lookups as :class:`FastHeaders` and its
    ``blueprints`` without an import per access."""

    def __init__(
        self,
        method: str,
        scheme: str,
        path: str,
        query_string: bytes,
        headers: Headers,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if headers.__class__ is Headers:
            # Quart built this object for this request alone; a subclass adding no state
            # takes its place without a copy.
            headers.__class__ = FastHeaders
        super().__init__(method, scheme, path, query_string, headers, *args, **kwargs)

    @property
    def blueprints(self) -> list[str]:
        blueprint = self.blueprint
        if blueprint is None:
            return []
        return _split_blueprint_path(blueprint)  # type: ignore[no-any-return]


class AppResponse(TrioResponse):
    """quart-trio's response, its headers (unless given as a ``Headers`` object, which is
    kept as is) answering lookups as :class:`FastHeaders`."""

    def __init__(
        self,
        response: Any = None,
        status: Any = None,
        headers: Headers | Mapping[str, Any] | Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if not isinstance(headers, Headers):
            headers = FastHeaders(headers) if headers else FastHeaders()
        super().__init__(response, status, headers, *args, **kwargs)


class _BindingMap(Map):
    """werkzeug's ``Map.bind`` with a bounded memory of hosts' IDNA encodings; the adapter it
    returns is the one ``Map.bind`` would."""

    def bind(
        self,
        server_name: str,
        script_name: str | None = None,
        subdomain: str | None = None,
        url_scheme: str = "http",
        default_method: str = "GET",
        path_info: str | None = None,
        query_args: Mapping[str, Any] | str | None = None,
    ) -> MapAdapter:
        if self.host_matching:
            if subdomain is not None:
                raise RuntimeError("host matching enabled and a subdomain was provided")
        elif subdomain is None:
            subdomain = self.default_subdomain
        return MapAdapter(
            self,
            _server_name(server_name),
            "/" if script_name is None else script_name,
            subdomain,
            url_scheme,
            "/" if path_info is None else path_info,
            default_method,
            query_args,
        )


class AppMap(QuartMap, _BindingMap):
    """Quart's URL map: its ``bind_to_request`` calls ``super().bind``, which is then
    :class:`_BindingMap`'s (the method resolution order is ``AppMap``, ``QuartMap``,
    ``_BindingMap``, ``Map``)."""


@functools.lru_cache(maxsize=IDNA_CACHE_SIZE)
def _idna(name: str) -> str | None:
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _server_name(server_name: str) -> str:
    # The port is not part of IDNA (and could push a name past the 63-octet label limit).
    name, sep, port = server_name.lower().partition(":")
    encoded = _idna(name)
    if encoded is None:
        raise BadHost(description="The request's Host header is not a valid host name.")
    return f"{encoded}{sep}{port}"


def quart_app_class() -> type[QuartTrio]:
    """``QuartTrio`` with :class:`AppRequest`, :class:`AppResponse` and :class:`AppMap` as its
    request, response and URL map classes; ``QuartTrio`` itself (with a warning naming what
    is missing) when this Quart lacks the internal they use."""
    missing = missing_references(REQUIRED)
    if missing:
        log.warning(
            "quart lacks internals megatrio's request classes use (%s): Quart's own classes "
            "serve, at their speed",
            ", ".join(missing),
        )
        return QuartTrio
    return AppQuart


class AppQuart(QuartTrio):
    """The App's Quart app: see the module docstring. Also, a request whose ``Host`` cannot
    be bound (``a..b``: not IDNA) is answered 400 by the app's error handlers, as Flask does;
    Quart let that ``BadHost`` escape before its handlers, as a 500 and a logged traceback."""

    request_class = AppRequest
    response_class = AppResponse
    url_map_class = AppMap

    def create_url_adapter(self, request: Any) -> MapAdapter | None:
        try:
            return super().create_url_adapter(request)
        except HTTPException as error:
            if request is None:
                raise
            return _RefusingAdapter(self.url_map, error)


class _RefusingAdapter(MapAdapter):
    """The URL adapter of a request that cannot be bound: matching it raises why, which Quart
    records as the request's routing exception and answers with its error handlers."""

    def __init__(self, url_map: Map, error: HTTPException) -> None:
        super().__init__(url_map, "", "/", None, "http", "/", "GET", None)
        self._error = error

    def match(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error

    def build(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error


def _blueprint_path_splitter() -> Any:
    try:
        from quart.helpers import _split_blueprint_path
    except ImportError:  # reported by app_classes()
        return None
    return _split_blueprint_path


_split_blueprint_path: Final = _blueprint_path_splitter()
