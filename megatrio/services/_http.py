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

**The ``Connection: close`` trap.** The front answers ``/healthz`` and ``/readyz`` itself and
works around a hypercorn 0.18 trio worker trap. For a ``Connection: close`` (or HTTP/1.0)
request, the app's ``send`` of the last body chunk runs hypercorn's whole connection close —
``send_eof()`` then ``aclose()`` — inside the app's own task. While that close is at its
first checkpoint, hypercorn delivers ``http.disconnect`` to the app's pending ``receive()``,
and an app that still awaits ``receive()`` (Quart does) cancels its request task group in
response: the cancellation lands in hypercorn's close, which is abandoned, and the socket
stays open — clients reading to EOF (health checks, HTTP/1.0) hang until they time out. The
front shields that last ``send``, only for requests whose connection closes after the
response: shielding every request costs ~25% of requests/s (hypercorn then completes its
keep-alive bookkeeping on each one; measured with bench/bench_http.py), and keep-alive
responses are delimited by length, so clients do not hang.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from collections.abc import Callable, Sequence

import trio

from .._policy._throttle import TokenBucket
from ..nursery._child import ChildContext, current_child
from ..nursery._errors import describe, log_exception, split_exit
from ._asgi import ASGIApp as ASGIApp
from ._asgi import Message as Message
from ._asgi import Receive as Receive
from ._asgi import Scope as Scope
from ._asgi import Send as Send
from ._hypercorn import HypercornServer, OrderedSendStream, make_config
from ._sockets import bind_listeners, closing_all, socket_url

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


def health_front(app: ASGIApp, readiness: Callable[[], tuple[bool, list[str]]]) -> ASGIApp:
    """Wrap *app*: serve ``/healthz`` and ``/readyz``, and shield the close of each response.

    ``/healthz`` is 200 while the process serves. ``/readyz`` is 200 only when *readiness*
    says so, else 503 with the names of what is not ready. Both answer at the root and under
    the configured ``root_path``.
    """

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        if path == "/healthz":
            await send_body(send, 200, b"ok\n")
            return
        if path == "/readyz":
            ready, waiting = readiness()
            await send_json(send, 200 if ready else 503, {"ready": ready, "not_ready": waiting})
            return
        if _closes_after_response(scope):
            await _call_shielding_the_end(app, scope, receive, send)
        else:
            await app(scope, receive, send)

    return front


def _closes_after_response(scope: Scope) -> bool:
    """Whether hypercorn will close this connection after the response (the trap's case)."""
    if scope.get("http_version") == "1.0":
        return True
    return any(
        name == b"connection" and b"close" in value.lower() for name, value in scope["headers"]
    )


async def _call_shielding_the_end(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    async def send_shielding_the_end(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            # This send runs hypercorn's connection close in the app's task; see the module
            # docstring. Bounded, so a peer that never reads cannot pin the task.
            with trio.move_on_after(_CLOSE_SECONDS, shield=True):
                await send(message)
        else:
            await send(message)

    await app(scope, receive, send_shielding_the_end)


async def serve_http(
    app: ASGIApp,
    binds: Sequence[str],
    label: str,
    graceful_seconds: float,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* on *binds* (``HOST:PORT`` or ``fd://N``) until this child is asked to stop
    (or cancelled).

    Runs the app's ASGI lifespan startup first, then reports started — with the bound URLs
    (real ports when port 0 was asked) — once the sockets listen. A connection's failure is
    contained to it (see the module docstring). On the stop request it stops accepting and
    lets in-flight requests finish within *graceful_seconds*, then closes what is left and
    runs the lifespan shutdown; the child's own deadline bounds all of it. Cancelled from
    outside, it closes every connection at once (including a send hypercorn shields from
    cancellation) and lets the cancellation propagate, without the lifespan shutdown.

    Raises (before reporting started): OSError when a bind fails; ValueError for a malformed
    bind; RuntimeError when this hypercorn lacks an internal megatrio needs; hypercorn's
    ``LifespanFailureError`` when the app's startup fails.
    """
    config = make_config(graceful_seconds=graceful_seconds)
    server = _Server(HypercornServer(app, config), label, graceful_seconds)
    with closing_all(bind_listeners(binds, backlog=config.backlog)) as sockets:
        await server.run(sockets, task_status)


class _Server:
    """One listener child's accept loop, connections, limits and counters."""

    def __init__(
        self,
        hypercorn: HypercornServer,
        label: str,
        graceful_seconds: float,
    ) -> None:
        self._hypercorn = hypercorn
        self._label = label
        self._graceful_seconds = graceful_seconds
        self._ctx: ChildContext | None = current_child()
        self._tracebacks = TokenBucket.per_period(_TRACEBACKS_PER_MINUTE, 60.0)
        # Invariant: every accepted connection's transport is in _live from accept until its
        # task has closed it.
        self._live: set[OrderedSendStream] = set()
        self._stopping = False
        self._drained = trio.Event()
        self.connection_errors = 0

    async def run(
        self, sockets: Sequence[socket.socket], task_status: trio.TaskStatus[list[str]]
    ) -> None:
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        urls = [socket_url(s) for s in sockets]
        self._annotate()
        async with self._hypercorn.open_lifespan(), trio.open_nursery() as connections:
            connections.start_soon(self._close_stragglers)
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
            self._stopping = True
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
        self._live.add(transport)
        self._annotate()
        connections.start_soon(self._serve_connection, transport)

    async def _serve_connection(self, transport: OrderedSendStream) -> None:
        """Serve one connection; contain its failure (see the module docstring)."""
        peer = _peer_of(transport.socket)
        try:
            await self._hypercorn.serve(transport)
        except BaseException as exc:
            error, propagate = split_exit(exc)
            del exc
            if error is not None:
                self._connection_failed(error, peer)
            if propagate is not None:
                raise propagate from None
        finally:
            transport.close_now()
            self._live.discard(transport)
            self._annotate()
            if self._stopping and not self._live:
                self._drained.set()

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
                connections=len(self._live), connection_errors=self.connection_errors
            )


def _peer_of(sock: trio.socket.SocketType) -> str:
    if sock.family == socket.AF_UNIX:
        return "a Unix socket peer"
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "an unknown peer"  # already reset by the peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
