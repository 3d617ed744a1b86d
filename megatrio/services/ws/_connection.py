"""One WebSocket connection: the handle handlers get, and its small task tree.

The tree, in the hub's task group: the trio-websocket protocol task, a **reader** (this task:
messages in order to ``on_message``), a **writer** draining the connection's bounded
:class:`~megatrio._policy._send_queue.SendQueue`, a **heartbeat** (a ping every
``ping_interval_seconds``, 1011 when no pong comes within ``ping_timeout_seconds``) and a
**stop watcher** (1001 when the server begins its graceful stop). When the connection closes,
however it closes, the rest of its tree is cancelled.

Sending never waits for the peer: :meth:`Connection.send` only offers the message to the queue.
Close codes (RFC 6455): 1000 normal, 1001 going away (server stop), 1003 unsupported data (a
binary message to a JSON endpoint), 1007 invalid payload (bad UTF-8 — trio-websocket's — or bad
JSON), 1008 policy (inbound rate), 1009 too big (trio-websocket's), 1011 internal (a handler
failed, no pong), 1013 try again later (send queue full, a send stalled).
"""

from __future__ import annotations

import enum
import http.cookies
import json
import logging
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio
import trio_websocket

from ..._policy._send_queue import Offered, SendQueue
from ..._policy._throttle import TokenBucket
from ._endpoint import Reject, WebSocketEndpoint
from ._frames import check_internals, encode_frame, send_frames

if TYPE_CHECKING:
    from ._hub import Hub

log = logging.getLogger("megatrio.ws")

NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

_CLOSE_SECONDS = 2.0
"""Bound on a close handshake (a peer that never answers it is simply dropped)."""
_DISCONNECT_HANDLER_SECONDS = 5.0
_WRITE_BYTES = 256 * 1024
"""Bytes of queued frames one write of the writer carries at most."""

Frame = str | bytes


def encode(message: object) -> Frame:
    """*message* as a frame's payload: str as text, bytes as binary, anything else as compact
    JSON text. Encode once, offer to many.

    Raises:
        TypeError / ValueError: not JSON-serialisable.
    """
    if isinstance(message, str | bytes):
        return message
    return _JSON.encode(message)


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class State(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Connection:
    """A WebSocket connection as handlers see it.

    ``id`` (unique in the cluster), ``path``, ``params`` (the rule's ``<name>`` segments),
    ``query`` (name -> last value), ``headers`` (lower-case names), ``cookies``, ``remote``
    (the peer), ``state`` (a dict for the application), ``channels`` it is in, and ``hub``.
    """

    def __init__(
        self,
        hub: Hub,
        endpoint: WebSocketEndpoint,
        conn_id: str,
        request: trio_websocket.WebSocketRequest,
        params: dict[str, str],
        remote: str,
    ) -> None:
        settings = endpoint.settings
        self.hub = hub
        self.endpoint = endpoint
        self.id = conn_id
        target = request.path
        self.path, _, query = target.partition("?")
        self.params = params
        self.query: Mapping[str, str] = dict(urllib.parse.parse_qsl(query))
        self.headers: Mapping[str, str] = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in request.headers
        }
        self.cookies: Mapping[str, str] = _cookies(self.headers.get("cookie", ""))
        self.remote = remote
        self.state: dict[str, Any] = {}
        self.channels: set[str] = set()
        self.conn_state = State.CONNECTING
        self.close_code: int | None = None
        self.close_reason = ""
        self._queue: SendQueue[bytes] = SendQueue(
            max_bytes=settings.max_buffered_bytes, max_messages=settings.max_queued_messages
        )
        self._wake = trio.Event()
        self._closing: tuple[int, str] | None = None
        self._sending: trio.CancelScope | None = None
        self._flush = True
        self._inbound = (
            TokenBucket(capacity=settings.burst, rate_per_second=settings.rate_per_second)
            if settings.rate_per_second
            else None
        )

    # -- what handlers call -------------------------------------------------------------------

    def send(self, message: object) -> bool:
        """Queue *message* (see :func:`encode`); never waits. False when it was not queued:
        the connection is closing, or this send overflowed its queue and closed it (1013)."""
        frame = encode_frame(encode(message))
        return self.offer(frame, len(frame))

    def join(self, channel: str) -> None:
        self.hub.join(self, channel)

    def leave(self, channel: str) -> None:
        self.hub.leave(self, channel)

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Close after what is queued has been sent (within the close bound). Idempotent."""
        self._begin_close(code, reason, flush=True)

    @property
    def queued_bytes(self) -> int:
        return self._queue.queued_bytes

    @property
    def dropped(self) -> int:
        """``drop_oldest`` messages this connection dropped."""
        return self._queue.dropped

    # -- the hub's side ---------------------------------------------------------------------

    def offer(self, frame: bytes, size: int, *, drop_oldest: bool = False) -> bool:
        """Queue *frame* (complete frame bytes, :func:`encode_frame`) of *size* bytes."""
        offer = self._queue.offer(frame, size, drop_oldest=drop_oldest)
        outcome = offer.outcome
        if outcome is Offered.QUEUED or outcome is Offered.DROPPED:
            self._wake.set()
            return True
        if outcome is Offered.OVERFLOW:
            self._begin_close(TRY_AGAIN_LATER, "send queue full", flush=False)
        return False

    def _begin_close(self, code: int, reason: str, *, flush: bool) -> None:
        if self._closing is not None:
            return
        self._closing = (code, reason)
        self._flush = flush
        self._queue.close()
        if not flush:
            self._queue.clear()
        self.conn_state = State.CLOSING
        self._wake.set()
        if not flush:
            # Nothing more is sent: not even the message a stalled peer holds up now.
            if self._sending is not None:
                self._sending.cancel()
            for channel in list(self.channels):
                self.hub.leave(self, channel)

    async def run(self, request: trio_websocket.WebSocketRequest, stopping: trio.Event) -> None:
        """The connection's whole life, from the handshake's answer to its close."""
        endpoint = self.endpoint
        if endpoint.connect_handler is not None:
            try:
                await endpoint.connect_handler(self)
            except Reject as rejection:
                await request.reject(rejection.status, body=rejection.reason.encode())
                self.hub.rejected(self, rejection.status)
                return
            except Exception as exc:
                self.hub.handler_failed(self, "on_connect", exc)
                await request.reject(500)
                return
        ws = await request.accept()
        check_internals(ws)
        self.conn_state = State.OPEN
        self.hub.opened(self)
        try:
            async with trio.open_nursery() as tree:
                # Whichever ends the connection — the peer (the reader returns) or this side
                # (the writer has sent the close) — ends the whole tree.
                tree.start_soon(self._writer, ws, tree.cancel_scope)
                if endpoint.settings.ping_interval_seconds:
                    tree.start_soon(self._heartbeat, ws)
                tree.start_soon(self._watch_stop, stopping)
                try:
                    await self._reader(ws)
                finally:
                    tree.cancel_scope.cancel()
        finally:
            self.conn_state = State.CLOSED
            reason = ws.closed
            if reason is not None and self.close_code is None:
                self.close_code, self.close_reason = reason.code, reason.reason or ""
            self.hub.closed(self)
            if endpoint.disconnect_handler is not None:
                with trio.move_on_after(_DISCONNECT_HANDLER_SECONDS, shield=True):
                    try:
                        await endpoint.disconnect_handler(
                            self, self.close_code or 1006, self.close_reason
                        )
                    except Exception as exc:
                        self.hub.handler_failed(self, "on_disconnect", exc)

    async def _reader(self, ws: trio_websocket.WebSocketConnection) -> None:
        settings = self.endpoint.settings
        handler = self.endpoint.message_handler
        while self._closing is None:
            try:
                message: Any = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            if self._inbound is not None and not self._inbound.try_acquire(trio.current_time()):
                self._begin_close(POLICY_VIOLATION, "message rate limit exceeded", flush=False)
                break
            if settings.json:
                if isinstance(message, bytes):
                    self._begin_close(UNSUPPORTED_DATA, "binary messages not accepted", flush=False)
                    break
                try:
                    message = json.loads(message)
                except ValueError:
                    self._begin_close(INVALID_PAYLOAD, "invalid JSON", flush=False)
                    break
            if handler is None:
                continue
            try:
                await handler(self, message)
            except Exception as exc:
                self.hub.handler_failed(self, "on_message", exc)
                self._begin_close(INTERNAL_ERROR, "internal error", flush=False)
                break
        # Closing by this side's decision: the writer sends the close frame, then ends the tree.
        await trio.sleep_forever()

    async def _writer(self, ws: trio_websocket.WebSocketConnection, tree: trio.CancelScope) -> None:
        timeout = self.endpoint.settings.send_timeout_seconds
        queue = self._queue
        try:
            while True:
                # Everything queued goes in one write (up to a bound): a burst of broadcasts
                # costs a connection one send, not one per message.
                batch: list[bytes] = []
                size = 0
                while size < _WRITE_BYTES and (taken := queue.take()) is not None:
                    batch.append(taken[0])
                    size += taken[1]
                if not batch:
                    if self._closing is not None:
                        break
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                with trio.move_on_after(timeout) as send:
                    self._sending = send
                    await send_frames(ws, batch[0] if len(batch) == 1 else b"".join(batch))
                self._sending = None
                if send.cancelled_caught:
                    self._begin_close(TRY_AGAIN_LATER, "send timed out", flush=False)
                    queue.clear()
                    break
                if self._closing is not None and not self._flush:
                    break
        except trio_websocket.ConnectionClosed:
            pass
        else:
            assert self._closing is not None
            code, reason = self._closing
            self.close_code, self.close_reason = code, reason
            with trio.move_on_after(_CLOSE_SECONDS):
                await ws.aclose(code, reason)
        tree.cancel()

    async def _heartbeat(self, ws: trio_websocket.WebSocketConnection) -> None:
        settings = self.endpoint.settings
        while True:
            await trio.sleep(settings.ping_interval_seconds)
            with trio.move_on_after(settings.ping_timeout_seconds) as wait:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
            if wait.cancelled_caught:
                self._begin_close(INTERNAL_ERROR, "ping timeout", flush=False)
                return

    async def _watch_stop(self, stopping: trio.Event) -> None:
        await stopping.wait()
        self.close(GOING_AWAY, "server going away")

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.path} {self.conn_state.value}>"


def _cookies(header: str) -> dict[str, str]:
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    try:
        jar.load(header)
    except http.cookies.CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}
