"""What a lean (``raw=True``) route's handler receives: :class:`RawRequest`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final
from urllib.parse import parse_qsl

from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import BadRequest

from ._asgi import Scope


class Disconnected(Exception):
    """The peer went away before the request body was read (ends the request quietly)."""


BodyReader = Callable[[], Awaitable[bytes]]


@final
class RawRequest:
    """The request a ``raw=True`` route's handler gets: a thin view of the ASGI scope.

    Everything is computed on first use only: :attr:`query` and :attr:`headers` are parsed
    when read, and the body is read from the connection when awaited. Not constructed by
    users; one is made per request.
    """

    __slots__ = ("_body", "_headers", "_query", "_read_body", "_scope", "params", "request_id")

    def __init__(
        self, scope: Scope, params: dict[str, Any], read_body: BodyReader, request_id: str
    ) -> None:
        self._scope = scope
        self._read_body = read_body
        self._body: bytes | None = None
        self._headers: Headers | None = None
        self._query: MultiDict[str, str] | None = None
        self.params = params
        """The path parameters, converted by the rule's converters (``<int:id>``: an int);
        also passed to the handler as keyword arguments."""
        self.request_id = request_id
        """The request id (the client's sane ``X-Request-ID``, or a new one); it is also in
        every log record written while the request is handled, and in the response."""

    @property
    def method(self) -> str:
        """``GET``, ``POST``, ...; ``HEAD`` for a HEAD request to a GET route."""
        method: str = self._scope["method"]
        return method

    @property
    def path(self) -> str:
        """The percent-decoded path, including the ``root_path`` prefix when mounted."""
        path: str = self._scope["path"]
        return path

    @property
    def query_string(self) -> bytes:
        """The raw query string (without ``?``)."""
        query: bytes = self._scope.get("query_string", b"")
        return query

    @property
    def query(self) -> MultiDict[str, str]:
        """The query arguments, as Quart's ``request.args`` (a werkzeug ``MultiDict``:
        ``query["q"]``, ``query.get("q")``, ``query.getlist("tag")``)."""
        if self._query is None:
            pairs = parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True)
            self._query = MultiDict(pairs)
        return self._query

    @property
    def headers(self) -> Headers:
        """The request headers, case-insensitive (``headers["content-type"]``), as werkzeug
        ``Headers``; repeated headers keep every value (``headers.getlist(name)``)."""
        if self._headers is None:
            self._headers = Headers(
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._scope["headers"]]
            )
        return self._headers

    @property
    def client(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)`` (the proxy's client when proxy headers are trusted);
        None on a Unix socket."""
        client = self._scope.get("client")
        return None if client is None else (client[0], client[1])

    @property
    def scope(self) -> Mapping[str, Any]:
        """The ASGI scope, read-only, for what the attributes above do not cover."""
        return self._scope

    async def body(self) -> bytes:
        """The whole request body (read once, then kept). A checkpoint when it has to be read.

        Raises:
            Disconnected: the peer went away before sending all of it; the request then ends
                quietly (nothing is logged, nothing is sent).
        """
        if self._body is None:
            self._body = await self._read_body()
        return self._body

    async def json(self) -> Any:
        """The body decoded as JSON (``None`` for an empty body).

        Raises:
            werkzeug.exceptions.BadRequest: the body is not valid JSON (answered 400).
        """
        body = await self.body()
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise BadRequest("The request body is not valid JSON.") from None

    def __repr__(self) -> str:
        return f"<RawRequest {self.method} {self.path!r}>"


async def read_all(receive: Callable[[], Awaitable[Any]]) -> bytes:
    """Read the body through ASGI *receive* to its end; raises :class:`Disconnected`."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
