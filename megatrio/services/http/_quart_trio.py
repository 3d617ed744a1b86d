"""Every use of quart-trio's internals, in one module: the App's requests served inline.

quart-trio serves each HTTP request with a nursery and two tasks: one receives the body and
waits for ``http.disconnect`` (then cancels the other), one runs the handler and sends the
response. On the fast front that pair is most of what a request costs beyond the handler
(the nursery, two task spawns, their cancel scopes and the cancellation of the receiver).

:class:`InlineHTTPConnection` serves a request whose body the fast front has already read
whole (every GET, and every small POST that arrived with its head) in the calling task
instead: it hands the body to Quart's request at once, then runs Quart's own
``handle_request`` — hooks, error handlers, the request context, streaming responses, all
unchanged — inside the front's :class:`~._watch.DisconnectWatch`, so a peer that goes away
still cancels the handler, as quart-trio's receiver would (the cancellation then ends the
connection, whose peer is gone); a response whose body is in memory is sent as one body
message. Either way the matched rule's template is recorded in the
ASGI scope for the request metrics (``ROUTE_KEY``), which a ``before_request`` hook did at a
measured ~2% of a hello-world request. Any other request (hypercorn's
front, a body still to come) takes quart-trio's own path.

None of this is public API: :data:`REQUIRED` names every quart/quart-trio internal used, and
:func:`missing_internals` reports those a version lacks; a unit test calls it, and
:func:`inline_connection_class` falls back to quart-trio's own class (logging the names) when
one is missing, so an upgrade degrades speed, never behaviour.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from quart.utils import encode_headers
from quart.wrappers import Response
from quart.wrappers.response import DataBody
from quart_trio.asgi import TrioASGIHTTPConnection

from ..._util import missing_references
from ._access import ROUTE_KEY
from ._watch import INLINE, DisconnectWatch

log = logging.getLogger("megatrio.http")

REQUIRED: Final = (
    "quart_trio.asgi:TrioASGIHTTPConnection",
    "quart_trio.asgi:TrioASGIHTTPConnection.__call__",
    "quart_trio.asgi:TrioASGIHTTPConnection.handle_request",
    "quart.wrappers.request:Request.url_rule",
    "quart.asgi:ASGIHTTPConnection._create_request_from_scope",
    "quart.asgi:ASGIHTTPConnection._send_response",
    "quart_trio.app:QuartTrio.handle_request",
    "quart_trio.app:QuartTrio.asgi_http_class",
    "quart.wrappers.request:Body.append",
    "quart.wrappers.request:Body.set_complete",
    "quart.wrappers.response:DataBody",
    "quart.utils:encode_headers",
)
"""``module:attribute.path`` of every quart and quart-trio name used here."""


DATA_BODY_ATTRIBUTES: Final = ("data", "begin", "end")
"""What a response's in-memory body (``DataBody(b"")``) must have."""


def missing_internals() -> list[str]:
    """The names of :data:`REQUIRED` (and the attributes of an in-memory body) this
    quart/quart-trio lacks. Not a checkpoint."""
    missing = missing_references(REQUIRED)
    if missing:
        return missing
    body = DataBody(b"")
    return [f'DataBody(b"").{a}' for a in DATA_BODY_ATTRIBUTES if not hasattr(body, a)]


class InlineHTTPConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP connection, serving in the caller's task when the fast front allows
    it (see the module docstring)."""

    async def __call__(self, receive: Any, send: Any) -> None:
        extensions: Any = self.scope.get("extensions")
        watch: DisconnectWatch | None = extensions.get(INLINE) if extensions else None
        if watch is None or not watch.body_buffered():
            await super().__call__(receive, send)
            return
        request = self._create_request_from_scope(send)
        # The body is buffered: this receive() returns it at once, without a checkpoint.
        message = await receive()
        if message["type"] != "http.request":
            return  # the peer is gone already
        request.body.append(message.get("body", b""))
        request.body.set_complete()
        app = self.app
        with watch.cancelled_on_disconnect():
            try:
                response = await app.handle_request(request)
            finally:
                _record_route(self.scope, request)
            if isinstance(response, Response) and response.timeout != Ellipsis:
                timeout = response.timeout
            else:
                timeout = app.config["RESPONSE_TIMEOUT"]
            if timeout is None:
                await self._send(send, response)
            else:
                # Past the timeout the connection ends: its response is cut short either way.
                with watch.cancelled_after(timeout):
                    await self._send(send, response)

    async def _send(self, send: Any, response: Any) -> None:
        body = response.response if isinstance(response, Response) else None
        if body.__class__ is not DataBody:
            await self._send_response(send, response)
            return
        # A body in memory (what most handlers return): one body message, where Quart's
        # _send_response iterates the body in an async context and ends with an empty one.
        start = {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": encode_headers(response.headers),
        }
        await send(start)
        await send({"type": "http.response.body", "body": body.data[body.begin : body.end]})

    async def handle_request(self, nursery: Any, request: Any, send: Any) -> None:  # type: ignore[override]
        """quart-trio's own path (its handler task), recording the matched rule too."""
        try:
            await super().handle_request(nursery, request, send)
        finally:
            _record_route(self.scope, request)


def _record_route(scope: Any, request: Any) -> None:
    # The matched rule's template, for the request metrics (a bounded label, unlike the path).
    rule = request.url_rule
    if rule is not None:
        scope[ROUTE_KEY] = rule.rule


def inline_connection_class() -> type[TrioASGIHTTPConnection]:
    """:class:`InlineHTTPConnection`, or quart-trio's own class (with a warning naming what is
    missing) when this quart/quart-trio lacks an internal it relies on."""
    missing = missing_internals()
    if missing:
        log.warning(
            "quart-trio lacks internals megatrio's inline requests use (%s): requests take "
            "quart-trio's own, slower path",
            ", ".join(missing),
        )
        return TrioASGIHTTPConnection
    return InlineHTTPConnection
