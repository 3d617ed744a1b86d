"""Lean routes (``@app.get(rule, raw=True)``): dispatched before Quart, served in one task.

**Matching.** A rule without converters is a dict lookup; the others go through a werkzeug
``Map`` of their own (Quart's rule syntax and converters: ``/users/<int:id>``). A request
that no lean route takes — another path, or a method the route does not serve — goes on to
Quart, where every lean rule is registered too: so Quart answers 405 with the right
``Allow``, ``OPTIONS``, and a path with a lean ``GET`` and a Quart ``POST`` works. A ``GET``
route serves ``HEAD`` (the front sends no body).

**Serving.** The handler runs in the task that called the ASGI app. On the fast front it runs
inside the front's :class:`~._watch.DisconnectWatch` (a peer that leaves cancels it with
its connection); on
hypercorn a receiver task beside it reads the body and watches for ``http.disconnect``, as
Quart's does. Its return value follows Quart's conventions (:func:`to_response`). An
``HTTPException`` (``abort(404)``) is answered with megatrio's error page for its status;
any other exception is logged (through the redacting pipeline) and answered 500, and the
connection keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import trio
from quart import request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule

from ..logs._context import REQUEST_ID
from ._asgi import Receive, Scope, Send
from ._error_pages import accept_of, prefers_json, render_error
from ._raw_request import BodyReader, Disconnected, RawRequest, read_all
from ._watch import INLINE, DisconnectWatch

log = logging.getLogger("megatrio.http")

Handler = Callable[..., Awaitable[Any]]
Dumps = Callable[[Any], str]

_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"


class RawRoute:
    """One lean route: its rule (the metrics' route label), methods and handler."""

    __slots__ = ("handler", "methods", "rule")

    def __init__(self, rule: str, methods: Iterable[str], handler: Handler) -> None:
        self.rule = rule
        self.methods = frozenset(m.upper() for m in methods)
        if "GET" in self.methods:
            self.methods |= {"HEAD"}
        self.handler = handler


class RawRoutes:
    """The lean routes of one app, and their matching (see the module docstring)."""

    def __init__(self, dumps: Dumps) -> None:
        self._dumps = dumps
        self._static: dict[str, list[RawRoute]] = {}
        self._map = Map()
        self._adapter = self._map.bind("localhost")
        self._dynamic: list[RawRoute] = []
        # The literal start of each rule with converters: a path that starts with none of
        # them is no lean route's, and werkzeug's match (~6.6 us, raising NotFound) is skipped.
        self._prefixes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._static or self._dynamic)

    def add(self, rule: str, methods: Iterable[str], handler: Handler) -> RawRoute:
        """Add a route. Raises ValueError for a malformed rule (werkzeug's message)."""
        route = RawRoute(rule, methods, handler)
        methods = sorted(route.methods)
        # A rule werkzeug cannot compile is refused here, static or not (ValueError).
        Map([Rule(rule, methods=methods)])
        if "<" in rule:
            self._map.add(Rule(rule, endpoint=len(self._dynamic), methods=methods))
            self._dynamic.append(route)
            self._prefixes = (*self._prefixes, rule.partition("<")[0])
        else:
            self._static.setdefault(rule, []).append(route)
        return route

    def match(self, method: str, path: str) -> tuple[RawRoute, dict[str, Any]] | None:
        """The route serving *method* on *path* and its converted parameters, or None (then
        Quart serves the request). Not a checkpoint."""
        static = self._static.get(path)
        if static is not None:
            for route in static:
                if method in route.methods:
                    return route, {}
        if path.startswith(self._prefixes):
            try:
                index, params = self._adapter.match(path, method)
            except (NotFound, MethodNotAllowed, RequestRedirect):
                return None
            return self._dynamic[index], dict(params)
        return None

    async def serve(
        self,
        route: RawRoute,
        params: dict[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
    ) -> None:
        """Run *route*'s handler for this request and send its response (module docstring).

        Raises only ``Cancelled``: of the caller's scope, or — on the fast front, when the
        peer leaves — of the connection's, which the front catches to end the connection.
        """
        extensions = scope.get("extensions")
        watch: DisconnectWatch | None = extensions.get(INLINE) if extensions else None
        if watch is not None:

            async def read_body() -> bytes:
                return await read_all(receive)

            with watch.cancelled_on_disconnect():
                await self._respond(route, params, scope, read_body, send, request_id)
            return
        receiver = _Receiver(receive)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver.run, nursery.cancel_scope)
            await self._respond(route, params, scope, receiver.read, send, request_id)
            nursery.cancel_scope.cancel()

    async def _respond(
        self,
        route: RawRoute,
        params: dict[str, Any],
        scope: Scope,
        read_body: BodyReader,
        send: Send,
        request_id: str,
    ) -> None:
        request = RawRequest(scope, params, read_body, request_id)
        try:
            value = await route.handler(request, **params)
            status, headers, body = to_response(value, self._dumps)
        except Disconnected:
            return
        except HTTPException as error:
            status, headers, body = _error_response(scope, error)
        except Exception as error:
            log.error("Exception on request %s %s", scope["method"], scope["path"], exc_info=error)
            status, headers, body = _error_response(scope, None)
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Receiver:
    """The body and the disconnect of a request on a front without a DisconnectWatch."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._chunks: list[bytes] = []
        self._complete = trio.Event()
        self._gone = False

    async def run(self, scope: trio.CancelScope) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.request":
                self._chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._complete.set()
            else:
                self._gone = True
                self._complete.set()
                scope.cancel()
                return

    async def read(self) -> bytes:
        await self._complete.wait()
        if self._gone:
            raise Disconnected
        return b"".join(self._chunks)


def to_response(value: Any, dumps: Dumps) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``(status, headers, body)`` of a lean handler's return value, by Quart's conventions.

    ``str`` is ``text/html`` (UTF-8), ``bytes`` too; a ``dict`` or ``list`` is JSON (the
    app's JSON provider, compact, with a final newline, as Quart's); a tuple is ``(body,
    status)``, ``(body, headers)`` or ``(body, status, headers)``, with headers a mapping or
    a list of pairs (a ``Content-Type`` there replaces the default).

    Raises:
        TypeError: anything else (None, a Quart ``Response``, a generator...).
    """
    status = 200
    extra: Any = ()
    if isinstance(value, tuple):
        if len(value) == 3:
            value, status, extra = value
        elif len(value) == 2:
            value, second = value
            if isinstance(second, dict | list | tuple) or hasattr(second, "items"):
                extra = second
            else:
                status = second
        else:
            raise TypeError(f"a raw route returned a tuple of {len(value)} items")
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError(f"a raw route returned a status that is not an int: {status!r}")
    if isinstance(value, str):
        body, content_type = value.encode(), _HTML
    elif isinstance(value, bytes | bytearray | memoryview):
        body, content_type = bytes(value), _HTML
    elif isinstance(value, dict | list):
        body, content_type = (dumps(value) + "\n").encode(), _JSON
    else:
        raise TypeError(
            "a raw route returns str, bytes, a dict or a list (optionally in a (body, status, "
            f"headers) tuple), not {type(value).__name__}"
        )
    headers: list[tuple[bytes, bytes]] = []
    pairs = extra.items() if hasattr(extra, "items") else extra
    for name, header_value in pairs:
        key = str(name).lower().encode("latin-1")
        if key == b"content-type":
            content_type = str(header_value).encode("latin-1")
        elif key != b"content-length":
            headers.append((key, str(header_value).encode("latin-1")))
    headers.insert(0, (b"content-type", content_type))
    return status, headers, body


def _error_response(
    scope: Scope, error: HTTPException | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """megatrio's error page for *error* (None: a 500), as Quart routes get it."""
    status = 500 if error is None else (error.code or 500)
    if status >= 500:
        message = "The server could not complete the request."
    else:
        assert error is not None
        message = error.description or ""
    body, content_type = render_error(
        status, message, as_json=prefers_json(accept_of(scope["headers"]))
    )
    headers = [(b"content-type", content_type.encode())]
    if error is not None:
        for name, value in error.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return status, headers, body


def quart_view(handler: Handler) -> Callable[..., Awaitable[Any]]:
    """A Quart view serving *handler* with a :class:`RawRequest`: what Quart itself calls
    when a lean route's request reaches it (its test client, which bypasses the front)."""

    async def view(**params: Any) -> Any:
        async def read_body() -> bytes:
            data = await request.get_data(as_text=False)
            return data if isinstance(data, bytes) else data.encode()

        scope = cast(Scope, request.scope)
        raw = RawRequest(scope, params, read_body, REQUEST_ID.get() or "")
        return await handler(raw, **params)

    view.__name__ = getattr(handler, "__name__", "raw_view")
    view.__doc__ = handler.__doc__
    return view
