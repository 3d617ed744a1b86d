"""HTTP serving as a supervised child: megatrio's accept loop, hypercorn per connection.

**Containment.** megatrio binds the listening sockets and accepts connections itself; each
connection is served by hypercorn's per-connection server (see :mod:`._hypercorn`) in its own
task, and whatever ``Exception`` escapes that task — hypercorn handles only ``OSError`` —
ends that connection alone: it is logged once (through the logging pipeline, so redacted),
counted in the child's ``connection_errors`` annotation, and the socket is closed. Nothing a
peer sends can crash the listener, so no remote input counts against a restart intensity.
``Cancelled``, ``KeyboardInterrupt`` and ``SystemExit`` are never contained: they belong to
the scope or process that raised them.

**Stopping.** On the child's stop request the listeners close at once (a new connection is
refused; in a cluster another worker takes it), idle keep-alive connections close, and
in-flight requests have *graceful_seconds* to finish. Then every connection left is
cancelled and its socket closed, which also ends a send that hypercorn shields from
cancellation (a peer that never reads would otherwise hold the stop forever). The child's
own cancel-scope deadline bounds the whole stop, including the app's lifespan shutdown.

**The ``Connection: close`` trap.** The App's ASGI layer (:mod:`._app_front`) works around a
hypercorn 0.18 trio worker trap with :func:`shielding_the_end`. For a ``Connection: close``
(or HTTP/1.0) request, the app's ``send`` of the last body chunk runs hypercorn's whole
connection close — ``send_eof()`` then ``aclose()`` — inside the app's own task. While that
close is at its first checkpoint, hypercorn delivers ``http.disconnect`` to the app's pending
``receive()``, and an app that still awaits ``receive()`` (Quart does) cancels its request
task group in response: the cancellation lands in hypercorn's close, which is abandoned, and
the socket stays open — clients reading to EOF (health checks, HTTP/1.0) hang until they time
out. That layer shields the last ``send``, only for requests whose connection closes after
the response (:func:`closes_after_response`): shielding every request costs ~25% of
requests/s (hypercorn then completes its keep-alive bookkeeping on each one; measured with
bench/bench_http.py), and keep-alive responses are delimited by length, so clients do not
hang.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import ssl
from collections.abc import Callable, Sequence

import attrs
import trio

from ..._policy._throttle import TokenBucket
from ...nursery._child import ChildContext, current_child
from ...nursery._errors import containing, describe, log_exception
from ._asgi import ASGIApp as ASGIApp
from ._asgi import Message as Message
from ._asgi import Receive as Receive
from ._asgi import Scope as Scope
from ._asgi import Send as Send
from ._error_pages import accept_of, prefers_json, render_error
from ._fast import FastSettings, serve_connection
from ._front import HttpFront
from ._h1parse import Limits
from ._hypercorn import HypercornServer, OrderedSendStream, make_config
from ._proxy_headers import TrustedPeers, proxy_headers
from ._sockets import bind_listeners, closing_all, socket_url
from ._upgrade import ReplayStream, UpgradeRouter, parse_head, read_head
from ._watch import Connections
from ._wire import SocketWire

log = logging.getLogger("megatrio.http")

_CLOSE_SECONDS = 10.0

# accept(2) errors that mean "the system is out of something", not "this listener is broken":
# wait a moment and accept again (as trio.serve_listeners does).
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY_SECONDS = 0.1

# Tracebacks of failed connections logged per minute (after a burst of this many); past it a
# failure is still logged, as one line. Whatever a peer can trigger, it cannot flood the log
# with tracebacks.
_TRACEBACKS_PER_MINUTE = 10


async def send_body(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"
) -> None:
    """Send a complete response with *status* and *body*."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    await send_body(send, status, body, b"application/json")


def closes_after_response(scope: Scope) -> bool:
    """Whether hypercorn will close this connection after the response (the trap's case)."""
    if scope.get("http_version") == "1.0":
        return True
    return any(
        name == b"connection" and b"close" in value.lower() for name, value in scope["headers"]
    )


def shielding_the_end(send: Send) -> Send:
    """*send*, with the last body message shielded from cancellation (bounded): the
    ``Connection: close`` trap's way out (see the module docstring)."""

    async def send_shielding_the_end(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            # This send runs hypercorn's connection close in the app's task; see the module
            # docstring. Bounded, so a peer that never reads cannot pin the task.
            with trio.move_on_after(_CLOSE_SECONDS, shield=True):
                await send(message)
        else:
            await send(message)

    return send_shielding_the_end


@attrs.frozen(kw_only=True)
class HttpOptions:
    """How :func:`serve_http` serves; the defaults are hypercorn's (and uvicorn's)."""

    keep_alive_timeout_seconds: float = 5.0
    """An idle keep-alive connection (or one that never sends a request) closes after this."""
    max_concurrent_connections: int = 0
    """0: no limit. Otherwise connections past this many are answered 503 (``Retry-After:
    1``, ``Connection: close``); past twice this many they are closed unanswered."""
    root_path: str = ""
    """The path prefix the app is mounted under behind a proxy (ASGI ``root_path``); the
    proxy may forward the prefix or strip it."""
    forwarded_allow_ips: tuple[str, ...] = ()
    """Peers whose ``X-Forwarded-For``/``-Proto`` are applied (see :mod:`._proxy_headers`);
    empty: proxy headers are ignored."""
    certfile: str = ""
    """PEM certificate chain; with :attr:`keyfile`, connections are TLS (HTTP/2 by ALPN)."""
    keyfile: str = ""
    upgrade: UpgradeRouter | None = None
    """Who else may serve a connection, decided from its first request head (see
    :mod:`._upgrade`): the WebSocket hub's way onto this port. None: the front serves all."""
    front: HttpFront = HttpFront.FAST
    """Who serves plain HTTP/1.1 connections (TLS ones are hypercorn's either way)."""
    request_timeout_seconds: float = 10.0
    """Fast front: a request head must arrive, and a body may pause, no longer than this."""
    max_body_bytes: int = 0
    """Fast front: a request body past this is answered 413 (0: no limit)."""
    max_header_count: int = 100
    """Fast front: more request headers than this are answered 431 (0: no limit)."""
    max_head_bytes: int = 64 * 1024
    """Fast front: a request head past this size is answered 431 (0: no limit)."""


async def serve_http(
    app: ASGIApp,
    binds: Sequence[str],
    label: str,
    graceful_seconds: float,
    *,
    options: HttpOptions | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* on *binds* (``HOST:PORT``, ``unix:PATH`` or ``fd://N``) until this child is
    asked to stop (or cancelled).

    Runs the app's ASGI lifespan startup first, then reports started — with the bound URLs
    (real ports when port 0 was asked; ``unix:PATH`` for Unix sockets) — once the sockets
    listen. A connection's failure is contained to it (see the module docstring). On the stop
    request it stops accepting and lets in-flight requests finish within *graceful_seconds*,
    then closes what is left and runs the lifespan shutdown; the child's own deadline bounds
    all of it. Cancelled from outside, it closes every connection at once (including a send
    hypercorn shields from cancellation) and lets the cancellation propagate, without the
    lifespan shutdown.

    Raises (before reporting started): OSError when a bind fails; OSError or ``ssl.SSLError``
    when the certificate or key cannot be loaded; ValueError for a malformed bind or
    ``forwarded_allow_ips`` entry; RuntimeError when this hypercorn lacks an internal megatrio
    needs; hypercorn's ``LifespanFailureError`` when the app's startup fails.
    """
    options = HttpOptions() if options is None else options
    if options.root_path:
        app = _under_root_path(app, options.root_path.rstrip("/"))
    if options.forwarded_allow_ips:
        app = proxy_headers(app, TrustedPeers(options.forwarded_allow_ips))
    config = make_config(
        graceful_seconds=graceful_seconds,
        keep_alive_timeout_seconds=options.keep_alive_timeout_seconds,
        root_path=options.root_path,
        certfile=options.certfile,
        keyfile=options.keyfile,
    )
    ssl_context = config.create_ssl_context()
    server = _Server(
        HypercornServer(app, config), app, label, graceful_seconds, options, ssl_context
    )
    with closing_all(bind_listeners(binds, backlog=config.backlog)) as sockets:
        await server.run(sockets, task_status)


def _under_root_path(app: ASGIApp, root_path: str) -> ASGIApp:
    """Wrap *app* so that a request path always includes *root_path*, as ASGI requires.

    A proxy either forwards ``/api/users`` unchanged (hypercorn's convention) or strips the
    prefix to ``/users`` (uvicorn's, which then prepends ``root_path``); both reach the app as
    ``/api/users`` with ``root_path`` ``/api``, so the app routes ``/users`` and builds URLs
    under ``/api`` either way.
    """
    prefix = root_path.encode()

    async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            under = path == root_path or path.startswith(root_path + "/")
            if path.startswith("/") and not under:
                scope = dict(scope)
                scope["path"] = root_path + path
                scope["raw_path"] = prefix + scope.get("raw_path", path.encode())
        await app(scope, receive, send)

    return mounted


class _Server:
    """One listener child's accept loop, connections, limits and counters."""

    def __init__(
        self,
        hypercorn: HypercornServer,
        app: ASGIApp,
        label: str,
        graceful_seconds: float,
        options: HttpOptions,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._hypercorn = hypercorn
        self._app = app
        self._fast = options.front is HttpFront.FAST and ssl_context is None
        self._fast_settings = FastSettings(
            keep_alive_timeout_seconds=options.keep_alive_timeout_seconds,
            request_timeout_seconds=options.request_timeout_seconds,
            max_body_bytes=options.max_body_bytes,
            limits=Limits(
                max_header_count=options.max_header_count, max_head_bytes=options.max_head_bytes
            ),
            root_path=options.root_path.rstrip("/"),
        )
        self._drain = Connections()
        self._label = label
        self._graceful_seconds = graceful_seconds
        self._limit = options.max_concurrent_connections
        self._ssl_context = ssl_context
        self._upgrade = options.upgrade
        self._head_timeout = options.keep_alive_timeout_seconds
        self._stop_began = trio.Event()
        self._ctx: ChildContext | None = current_child()
        self._unavailable = hypercorn.wrap(_unavailable)
        self._tracebacks = TokenBucket.per_period(_TRACEBACKS_PER_MINUTE, 60.0)
        # Invariant: every accepted connection's transport is in _live from accept until its
        # task has closed it; _serving + _rejecting == len(_live).
        self._live: set[OrderedSendStream] = set()
        self._serving = 0
        self._rejecting = 0
        self._stopping = False
        self._drained = trio.Event()
        self.connection_errors = 0
        self.connections_rejected = 0
        self.connections_dropped = 0

    async def run(
        self, sockets: Sequence[socket.socket], task_status: trio.TaskStatus[list[str]]
    ) -> None:
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        tls = self._ssl_context is not None
        urls = [socket_url(s, tls=tls) for s in sockets]
        self._annotate()
        async with self._hypercorn.open_lifespan(), trio.open_nursery() as connections:
            connections.start_soon(self._close_stragglers)
            if self._fast:
                connections.start_soon(self._drain.watch, self._drained)
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(self._accept, listener, connections)
                log.info("serving %s on %s", self._label, ", ".join(urls))
                task_status.started(urls)
                await self._wait_stopping()
                accepting.cancel_scope.cancel()
            for listener in listeners:
                listener.socket.close()
            await self._hypercorn.stop_keep_alive()
            self._drain.begin_drain()
            self._stopping = True
            self._stop_began.set()
            if not self._live:
                self._drained.set()
            connections.cancel_scope.deadline = trio.current_time() + self._graceful_seconds

    async def _wait_stopping(self) -> None:
        if self._ctx is None:
            await trio.sleep_forever()
        else:
            await self._ctx.wait_stopping()

    async def _close_stragglers(self) -> None:
        # Lives as long as the connections nursery. Cancelled — the graceful deadline, or a
        # cancellation from outside — it closes every socket still open, which wakes any task
        # blocked on one, shielded or not.
        try:
            await self._drained.wait()
        finally:
            for transport in list(self._live):
                transport.close_now()

    async def _accept(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error(
                    "%s: accept failed (%s); retrying in %.1f s",
                    self._label,
                    errno.errorcode.get(exc.errno or 0, exc.errno),
                    _ACCEPT_RETRY_SECONDS,
                )
                await trio.sleep(_ACCEPT_RETRY_SECONDS)
                continue
            self._admit(stream, connections)

    def _admit(self, stream: trio.SocketStream, connections: trio.Nursery) -> None:
        transport = OrderedSendStream(stream)
        app: object | None = None
        rejected = False
        if self._limit and self._serving >= self._limit:
            if self._rejecting >= self._limit:
                self.connections_dropped += 1
                transport.close_now()
                self._annotate()
                return
            app, rejected = self._unavailable, True
            self._rejecting += 1
            self.connections_rejected += 1
        else:
            self._serving += 1
        self._live.add(transport)
        self._annotate()
        connections.start_soon(self._serve_connection, transport, app, rejected)

    async def _serve_connection(
        self, transport: OrderedSendStream, app: object | None, rejected: bool
    ) -> None:
        """Serve one connection; contain its failure (see the module docstring)."""
        peer = _peer_of(transport.socket)
        stream: trio.abc.Stream = transport
        if self._ssl_context is not None:
            stream = trio.SSLStream(
                transport, self._ssl_context, server_side=True, https_compatible=True
            )
        try:
            with containing(lambda error: self._connection_failed(error, peer)):
                if self._upgrade is None or rejected:
                    await self._serve_http(stream, app, rejected)
                else:
                    await self._route(stream, peer)
        finally:
            transport.close_now()
            self._live.discard(transport)
            if rejected:
                self._rejecting -= 1
            else:
                self._serving -= 1
            self._annotate()
            if self._stopping and not self._live:
                self._drained.set()

    async def _route(self, stream: trio.abc.Stream, peer: str) -> None:
        """The HTTP front, hypercorn for a WebSocket the router does not take (the fast
        front speaks no WebSocket), or the upgrade router's handler, by the first head."""
        head, complete = await read_head(stream, self._head_timeout)
        if not head:
            return  # closed or silent before a first byte: nothing to serve
        request = parse_head(head) if complete else None
        router = self._upgrade
        handler = router(request) if request is not None and router is not None else None
        replay = ReplayStream(stream, head)
        websocket = request is not None and request.is_websocket_upgrade()
        if handler is None and self._fast and websocket:
            # The app's own (Quart) WebSocket routes: hypercorn speaks WebSocket.
            await self._hypercorn.serve(replay)
            return
        if handler is None:
            await self._serve_http(stream, None, False, prefix=head)
        else:
            await handler(replay, peer, self._stop_began)

    async def _serve_http(
        self, stream: trio.abc.Stream, app: object | None, rejected: bool, prefix: bytes = b""
    ) -> None:
        """One HTTP connection on the fast front (plain) or hypercorn (TLS, or as chosen);
        *prefix* is what was already read from *stream*."""
        wire: SocketWire | None = None
        if self._fast and isinstance(stream, OrderedSendStream):
            wire = SocketWire(stream.socket, prefix)
        elif prefix:
            stream = ReplayStream(stream, prefix)
        if not self._fast:
            await self._hypercorn.serve(stream, app)
            return
        sock = stream.socket  # type: ignore[attr-defined]
        handoff = await serve_connection(
            _unavailable if rejected else self._app,
            stream,
            self._fast_settings,
            self._drain,
            state=self._hypercorn.lifespan_state,
            server=_address(sock.getsockname),
            client=_address(sock.getpeername),
            fileno=sock.fileno(),
            wire=wire,
        )
        if handoff is not None:
            # A WebSocket handshake for the app's own (Quart) routes: hypercorn speaks it.
            await self._hypercorn.serve(ReplayStream(stream, handoff))

    def _connection_failed(self, error: Exception, peer: str) -> None:
        self.connection_errors += 1
        if self._tracebacks.try_acquire(trio.current_time()):
            log_exception(
                log,
                logging.ERROR,
                error,
                "%s: connection from %s failed and was closed: %s",
                self._label,
                peer,
                describe(error),
            )
        else:
            log.error(
                "%s: connection from %s failed and was closed: %s (traceback not logged: "
                "more than %d per minute)",
                self._label,
                peer,
                describe(error),
                _TRACEBACKS_PER_MINUTE,
            )

    def _annotate(self) -> None:
        if self._ctx is not None:
            self._ctx.annotate(
                connections=len(self._live),
                connection_errors=self.connection_errors,
                connections_rejected=self.connections_rejected,
                connections_dropped=self.connections_dropped,
            )


def _address(get: Callable[[], object]) -> tuple[str, int] | None:
    """A socket's (host, port) for an ASGI scope; None for a Unix socket or a reset peer."""
    try:
        address = get()
    except OSError:
        return None
    if isinstance(address, tuple):
        return (str(address[0]), int(address[1]))
    return None


def _peer_of(sock: trio.socket.SocketType) -> str:
    if sock.family == socket.AF_UNIX:
        return "a Unix socket peer"
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "an unknown peer"  # already reset by the peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app of connections past the limit: 503, then the connection closes."""
    if scope["type"] == "http":
        body, content_type = render_error(
            503,
            "Too many connections; retry later.",
            as_json=prefers_json(accept_of(scope["headers"])),
        )
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"1"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1013})  # "try again later"
