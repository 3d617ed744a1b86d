"""The fast HTTP/1.1 front: one trio task serves one plain connection, speaking ASGI 3.

**Why.** hypercorn's trio worker runs h11 in pure Python and hops between tasks for each
event; this front parses with llhttp (:mod:`._h1parse`) and runs the app *in the connection's
own task*: no task is spawned per request. The app's ``receive()`` reads the socket itself
when it needs body bytes, so a body streams with backpressure (nothing is read that the app
has not asked for, beyond one read's worth). On a plain socket the bytes travel through a
:class:`~._wire.SocketWire` (a readiness wait then one read per request; a response's last
piece sent with no trip through the scheduler).

**One request at a time, pipelining allowed.** Requests are answered in order; the head and
body of a pipelined request wait in their cycle until it is served. A ``receive()`` that has
nothing left to deliver waits for the peer to go away (``http.disconnect``); it returns as
soon as the response is complete, as ASGI requires. It first only parks, which costs nothing;
a response still not complete after a tick of the listener's watch
(:data:`WATCH_TICK_SECONDS`) has it read the socket to notice the peer leaving. Reading at
once would cost a readiness registration and a cancellation per request (~20% of a
hello-world request on this front, measured). Once a following request has begun to arrive
the peer is evidently still there, and nothing more is read until this response is done.

**Framing.** A response without ``content-length`` is sent chunked when it has more than one
body message (HTTP/1.0: delimited by the close), else with the length of its one body. HEAD,
1xx, 204 and 304 responses carry no body.

**Limits and timeouts.** A request head beyond :class:`~._h1parse.Limits` is answered 431, a
body beyond ``max_body_bytes`` 413, a head that does not complete within
``request_timeout_seconds`` (or a body that pauses that long) 408. An idle keep-alive
connection closes after ``keep_alive_timeout_seconds``. A malformed request is answered 400
(505 for an unsupported version) and the connection closes; so does every error response.

**Inline handlers.** A request whose body is all read offers the app a
:class:`~._watch.DisconnectWatch` in ``scope["extensions"]``: a handler may then run in this
task with no receiver beside it and still be cancelled when the peer leaves.

**Draining.** Once :meth:`~._watch.Connections.begin_drain` is called, idle connections close
at once, and a connection with a request in flight closes after its response
(``Connection: close``).

This module is longer than the ~400 lines megatrio aims for: it is one connection's state
machine (reading, the ASGI receive and send of each cycle, framing, errors, closing), whose
parts share the connection's state at every step; the parsing is apart, in :mod:`._h1parse`.
"""

from __future__ import annotations

import collections
import email.utils
import http
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import unquote

import attrs
import trio

from ._h1parse import END, Head, Limits, ProtocolError, make_parser
from ._watch import INLINE, Connections, DisconnectWatch
from ._wire import SocketWire

Message = dict[str, Any]
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

_READ_BYTES: Final = 65536
_LINGER_SECONDS: Final = 1.0
"""After an error response, how long the peer may take to read it before the socket closes:
closing with unread bytes from the peer would reset the connection and lose the response."""
_DRAIN_BODY_BYTES: Final = 1 << 20
"""An unread request body up to this size is read and dropped to keep the connection."""

_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}
_DISCONNECT: Final = {"type": "http.disconnect"}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUSES: Final = frozenset({204, 304})


@attrs.frozen(kw_only=True)
class FastSettings:
    """How the fast front serves (0 for a limit: none)."""

    keep_alive_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 10.0
    max_body_bytes: int = 0
    limits: Limits = attrs.field(factory=Limits)
    root_path: str = ""
    prefer_httptools: bool = True


def _status_line(status: int) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")


_STATUS_LINES: Final = {status: _status_line(status) for status in http.HTTPStatus}

_date_second = 0
_date_header = b""


def _date() -> bytes:
    # The wall clock, not trio's: this is the Date header's text, not a deadline.
    global _date_second, _date_header
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_header = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_header


class _Cycle:
    """One request and its response."""

    __slots__ = (
        "body",
        "body_bytes",
        "chunked",
        "complete",
        "delivered",
        "done",
        "failed",
        "head",
        "keep_alive",
        "no_body",
        "parked",
        "response_complete",
        "response_started",
        "sent_continue",
        "start",
        "waiter",
    )

    def __init__(self, head: Head) -> None:
        self.head = head
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.complete = False  # every body byte has been received
        self.delivered = False  # the final http.request message was returned
        self.keep_alive = head.keep_alive and not head.upgrade
        self.response_started = False
        self.response_complete = False
        self.start: Message | None = None
        self.chunked = False
        self.no_body = head.method == "HEAD"
        self.sent_continue = False
        self.waiter: trio.CancelScope | None = None
        self.parked: trio.lowlevel.Task | None = None
        self.done = False
        self.failed = False


class _Connection:
    def __init__(
        self,
        app: App,
        stream: trio.abc.Stream,
        settings: FastSettings,
        drain: Connections,
        state: Mapping[str, Any],
        server: tuple[str, int] | None,
        client: tuple[str, int] | None,
        fileno: int | None,
        wire: SocketWire | None,
    ) -> None:
        self._app = app
        self._stream = stream
        self._wire = wire
        self._settings = settings
        self._drain = drain
        self._state = state
        self._server = server
        self._client = client
        self._parser = make_parser(settings.limits, prefer_httptools=settings.prefer_httptools)
        self._cycles: collections.deque[_Cycle] = collections.deque()
        self._receiving: _Cycle | None = None
        self._error: ProtocolError | None = None
        self._eof = False
        self._broken = False  # the socket failed: nothing more can be sent
        self._head_began: float | None = None
        # The bytes read before the first request head is complete: replayed to hypercorn
        # when that request is a WebSocket handshake (this front speaks no WebSocket).
        self._first: bytearray | None = bytearray()
        self.handoff: bytes | None = None
        self._own = trio.CancelScope()
        self._watch = None if fileno is None else DisconnectWatch(drain, fileno, self._own)
        self._extensions = None if self._watch is None else {INLINE: self._watch}

    async def run(self) -> None:
        # The connection's own scope: cancelled by an idle timeout, the drain (while idle),
        # or an inline handler's timer or peer leaving; the connection then simply ends.
        with self._own:
            await self._run()

    async def _run(self) -> None:
        cycle: _Cycle | None = None
        try:
            while await self._next_request():
                cycle = self._cycles[0]
                await self._serve(cycle)
                self._cycles.popleft()
                if not cycle.keep_alive or self._broken or self._drain.draining:
                    break
            else:
                if self.handoff is not None:
                    return  # nothing sent: the caller replays the bytes to another server
                if self._error is not None and not self._broken:
                    await self._send_error(self._error.status, self._error.reason)
                    return
            if self._broken:
                return
            if self._error is not None or (cycle is not None and not cycle.complete):
                await _linger(self._stream)  # the peer may still be sending what we refused
            elif isinstance(self._stream, trio.abc.HalfCloseableStream):
                await self._stream.send_eof()  # a FIN after the last response, then the close
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._broken = True

    # -- reading ---------------------------------------------------------------------------

    async def _read(self) -> None:
        """Read once and parse what came; EOF sets ``_eof``. A protocol error stops parsing."""
        try:
            if self._wire is None:
                data = await self._stream.receive_some(_READ_BYTES)
            else:
                data = await self._wire.receive_some(_READ_BYTES)
        except trio.BrokenResourceError:  # reset by the peer: it is gone, as after an EOF
            self._eof = self._broken = True
            return
        if not data:
            self._eof = True
            return
        if self._first is not None:
            self._first += data
        try:
            events = self._parser.feed(bytes(data))
        except ProtocolError as exc:
            self._fail(exc)
            return
        for event in events:
            if event.__class__ is bytes:
                cycle = self._receiving
                assert cycle is not None
                assert isinstance(event, bytes)
                cycle.body_bytes += len(event)
                limit = self._settings.max_body_bytes
                if limit and cycle.body_bytes > limit:
                    self._fail(ProtocolError(413, "request body too large"))
                    return
                cycle.body.append(event)
            elif event is END:
                assert self._receiving is not None
                self._receiving.complete = True
                self._receiving = None
            else:
                assert isinstance(event, Head)
                limit = self._settings.max_body_bytes
                if limit and event.content_length is not None and event.content_length > limit:
                    self._fail(ProtocolError(413, "request body too large"))
                    return
                if self._first is not None:
                    if _is_websocket(event):
                        self.handoff = bytes(self._first)
                        return
                    self._first = None
                self._receiving = cycle = _Cycle(event)
                self._cycles.append(cycle)
        if self._parser.in_head:
            if self._head_began is None:
                self._head_began = trio.current_time()
        else:
            self._head_began = None

    def _fail(self, error: ProtocolError) -> None:
        self._error = error
        if self._receiving is not None:
            self._receiving.failed = True
            # Its body is cut short: it is never served if it has not started.
            if self._cycles and self._cycles[-1] is self._receiving and len(self._cycles) > 1:
                self._cycles.pop()
            self._receiving = None

    async def _next_request(self) -> bool:
        """Whether a request is ready to serve; reads (within the timeouts) until one is."""
        while not self._cycles:
            if self._error is not None or self._eof or self.handoff is not None:
                return False
            if self._head_began is not None:
                deadline = self._head_began + self._settings.request_timeout_seconds
                with trio.move_on_at(deadline):
                    await self._read()
                    continue
                self._error = ProtocolError(408, "the request head took too long")
                return False
            if self._drain.draining:
                return False
            # Idle past the keep-alive timeout, or draining: the watch or the drain cancels
            # the connection's own scope, and run() ends.
            own = self._own
            deadline = trio.current_time() + self._settings.keep_alive_timeout_seconds
            slot = self._drain.cancel_at(own, deadline)
            self._drain.idle.add(own)
            try:
                await self._read()
            finally:
                self._drain.idle.discard(own)
                self._drain.forget(own, slot)
            if own.cancel_called:
                return False  # cancelled as the request arrived: it is not served
        return True

    async def _read_body(self, cycle: _Cycle) -> None:
        """Read until *cycle* has body bytes, is complete, or the connection failed."""
        while not cycle.body and not cycle.complete and self._error is None and not self._eof:
            with trio.move_on_after(self._settings.request_timeout_seconds) as scope:
                await self._read()
            if scope.cancelled_caught:
                self._fail(ProtocolError(408, "the request body paused too long"))

    # -- ASGI ------------------------------------------------------------------------------

    def _scope(self, head: Head) -> dict[str, Any]:
        target = head.target
        if target[:1] != b"/":
            target = _origin_form(target)
        raw_path, _, query = target.partition(b"?")
        if b"#" in query:
            query = query.partition(b"#")[0]
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(400, "non-ASCII request target") from None
        if "%" in path:
            path = unquote(path)
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": head.http_version,
            "server": self._server,
            "client": self._client,
            "scheme": "http",
            "method": head.method,
            "root_path": self._settings.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": head.headers,
            "state": dict(self._state),
        }
        if self._extensions is not None:
            scope["extensions"] = self._extensions
        return scope

    async def _serve(self, cycle: _Cycle) -> None:
        try:
            scope = self._scope(cycle.head)
        except ProtocolError as exc:
            self._error = exc
            cycle.keep_alive = False
            return

        async def receive() -> Message:
            return await self._receive(cycle)

        async def send(message: Message) -> None:
            await self._send(cycle, message)

        if self._watch is not None:
            self._watch.buffered = cycle.complete
        try:
            await self._app(scope, receive, send)
        except Exception:
            # The app's own failure: 500 if nothing was sent, and the caller logs it.
            if not cycle.response_started and not self._broken:
                cycle.keep_alive = False
                await self._send_simple(cycle, 500, b"Internal Server Error\n")
            cycle.keep_alive = False
            raise
        if not cycle.response_started:
            if self._error is not None:
                cycle.keep_alive = False
                cycle.failed = False
                await self._send_simple(cycle, self._error.status, self._error.reason.encode())
                self._error = None  # answered
            else:
                cycle.keep_alive = False  # an app that forgot to answer: trust it no further
                await self._send_simple(cycle, 500, b"Internal Server Error\n")
        elif not cycle.response_complete:
            cycle.keep_alive = False  # a truncated response: only the close can tell
        if cycle.keep_alive and not cycle.complete:
            await self._discard_body(cycle)

    async def _discard_body(self, cycle: _Cycle) -> None:
        if cycle.head.expect_continue and not cycle.sent_continue:
            cycle.keep_alive = False  # the peer may never send the body it announced
            return
        while cycle.keep_alive and not cycle.complete:
            cycle.body.clear()
            if cycle.body_bytes > _DRAIN_BODY_BYTES or self._error is not None or self._eof:
                cycle.keep_alive = False
                return
            await self._read_body(cycle)

    async def _receive(self, cycle: _Cycle) -> Message:
        if cycle.response_complete or self._broken:
            return _DISCONNECT
        if not cycle.delivered:
            if not cycle.body and not cycle.complete and not self._eof:
                if cycle.head.expect_continue and not cycle.sent_continue:
                    cycle.sent_continue = True
                    if not cycle.response_started:
                        await self._stream.send_all(_CONTINUE)
                await self._read_body(cycle)
            if cycle.body or cycle.complete:
                body = b"".join(cycle.body) if len(cycle.body) != 1 else cycle.body[0]
                cycle.body.clear()
                cycle.delivered = cycle.complete
                return {"type": "http.request", "body": body, "more_body": not cycle.complete}
            return _DISCONNECT  # the body was cut short (an error, a timeout or the peer left)
        if not self._eof:
            await self._wait_disconnect(cycle)
        return _DISCONNECT

    async def _wait_disconnect(self, cycle: _Cycle) -> None:
        """Until the peer goes away or *cycle*'s response is complete (see the docstring)."""
        cycle.parked = trio.lowlevel.current_task()
        try:
            if not await self._drain.park():
                return  # the response is complete
        finally:
            cycle.parked = None
        if cycle.response_complete:
            return
        with trio.CancelScope() as scope:
            cycle.waiter = scope
            try:
                if self._cycles[-1] is cycle and not self._parser.in_head and not self._error:
                    await self._read()
                if not self._eof:
                    await trio.sleep_forever()
            finally:
                cycle.waiter = None

    async def _send(self, cycle: _Cycle, message: Message) -> None:
        if cycle.failed and not cycle.response_started:
            return  # its request failed (a limit, a timeout): the error is the answer
        kind = message["type"]
        if kind == "http.response.start":
            if cycle.response_started:
                raise RuntimeError("ASGI: http.response.start sent twice")
            cycle.response_started = True
            cycle.start = message
            return
        if kind != "http.response.body":
            raise RuntimeError(f"ASGI: unexpected message type {kind!r} on an HTTP request")
        if not cycle.response_started:
            raise RuntimeError("ASGI: http.response.body sent before http.response.start")
        if cycle.response_complete:
            raise RuntimeError("ASGI: http.response.body sent after the response completed")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if not more:
            cycle.response_complete = True
            if cycle.parked is not None:
                self._drain.unpark(cycle.parked)
            elif cycle.waiter is not None:
                cycle.waiter.cancel()
        if self._broken:
            return  # the peer is gone; the app finishes without it, as ASGI allows
        if cycle.start is not None:
            data = self._head(cycle, cycle.start, body, more)
            cycle.start = None
            if not cycle.no_body:
                data += b"%x\r\n%b\r\n" % (len(body), body) if cycle.chunked and body else body
        elif cycle.no_body:
            return
        elif cycle.chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
        else:
            data = body
        if not more and cycle.chunked and not cycle.no_body:
            data += b"0\r\n\r\n"
        if data:
            try:
                if self._wire is None:
                    await self._stream.send_all(data)
                else:
                    # The last piece of a response needs no checkpoint: the next read is one.
                    await self._wire.send_all(data, checkpoint=more)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._broken = True
                cycle.keep_alive = False

    def _head(self, cycle: _Cycle, start: Message, body: bytes, more: bool) -> bytes:
        status = start["status"]
        line = _STATUS_LINES.get(status) or _status_line(status)
        parts = [line]
        framed = False
        for name, value in start.get("headers", ()):
            lowered = name.lower()
            if b"\n" in name or b"\r" in name or b"\n" in value or b"\r" in value:
                raise RuntimeError(f"ASGI: a CR or LF in response header {name!r}")
            if lowered == b"content-length" or lowered == b"transfer-encoding":
                framed = True
                if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                    cycle.chunked = True
            elif lowered == b"connection" and b"close" in value.lower():
                cycle.keep_alive = False
            parts.append(b"%b: %b\r\n" % (name, value))
        if status < 200 or status in _NO_BODY_STATUSES:
            cycle.no_body = True
        elif not framed:
            if not more:
                parts.append(b"content-length: %d\r\n" % len(body))
            elif cycle.head.http_version == "1.1":
                cycle.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                cycle.keep_alive = False
        if self._drain.draining or self._error is not None:
            cycle.keep_alive = False
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(_date())
        parts.append(b"\r\n")
        return b"".join(parts)

    async def _send_simple(self, cycle: _Cycle, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await self._send(
            cycle, {"type": "http.response.start", "status": status, "headers": headers}
        )
        await self._send(cycle, {"type": "http.response.body", "body": body})

    async def _send_error(self, status: int, reason: str) -> None:
        """Answer a request that could not be served, then close without losing the answer."""
        head = Head("GET", b"/", "1.1", [], False, None, False)
        cycle = _Cycle(head)
        await self._send_simple(cycle, status, reason.encode() + b"\n")
        await _linger(self._stream)


def _is_websocket(head: Head) -> bool:
    if head.method != "GET":
        return False
    upgrade = connection = False
    for name, value in head.headers:
        if name == b"upgrade":
            upgrade = value.lower() == b"websocket"
        elif name == b"connection":
            connection = b"upgrade" in value.lower()
    return upgrade and connection


def _origin_form(target: bytes) -> bytes:
    """The path and query of an absolute-form target (``http://host/p?q``); ``*`` as is."""
    if target == b"*":
        return target
    _, sep, rest = target.partition(b"://")
    if not sep:
        raise ProtocolError(400, "malformed request target")
    slash = rest.find(b"/")
    return b"/" if slash < 0 else rest[slash:]


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then read and drop what the peer still sends, briefly, until its EOF."""
    try:
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        with trio.move_on_after(_LINGER_SECONDS):
            while await stream.receive_some(_READ_BYTES):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def serve_connection(
    app: App,
    stream: trio.abc.Stream,
    settings: FastSettings,
    drain: Connections,
    *,
    state: Mapping[str, Any],
    server: tuple[str, int] | None,
    client: tuple[str, int] | None,
    fileno: int | None = None,
    wire: SocketWire | None = None,
) -> bytes | None:
    """Serve HTTP/1.1 on *stream* with the ASGI *app* until the connection is over.

    Returns None, or — when the connection's first request is a WebSocket handshake, which
    this front does not speak — the bytes read so far, for the caller to replay to a server
    that does; nothing has been sent then.

    *state* is the app's lifespan state (each request gets a shallow copy, as ASGI asks);
    *server* and *client* are the scope's addresses (None for a Unix socket); *fileno*, the
    socket's, lets handlers run inline (see the module docstring); *wire*, when given, is
    how the request and response bytes travel instead of *stream* (a plain socket's
    :class:`~._wire.SocketWire`: fewer syscalls and scheduler trips; *stream* still sends a
    ``100 Continue``, error answers and the final EOF). Returns when the
    peer closes, a timeout or limit ends the connection, or *drain* says so (see the module
    docstring); the caller closes the socket. Raises what the app raises (after answering 500
    when it had sent nothing); socket errors end the connection quietly. Cancellation ends
    the connection at once.
    """
    connection = _Connection(app, stream, settings, drain, state, server, client, fileno, wire)
    await connection.run()
    return connection.handoff
