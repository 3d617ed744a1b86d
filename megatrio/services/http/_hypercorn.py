"""Every use of hypercorn's internals, in one module.

megatrio binds its listening sockets and runs its own accept loop (see
:func:`megatrio.services.http._server.serve_http`), so that one connection's failure stays with that
connection. What it takes from hypercorn is the per-connection server (``TCPServer``: h11,
h2, WebSocket, TLS ALPN), the ASGI lifespan protocol and the worker context they share. None
of those is public API: :data:`REQUIRED` lists every name this module relies on, and
:func:`missing_internals` reports those a hypercorn version lacks. A unit test calls it, so an
upgrade that renames one fails that test with the name; :class:`HypercornServer` calls it too,
so serving fails at startup with the same message instead of deep inside a connection.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, cast, final

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from ..._util import missing_references

ASGIApp = Callable[..., Awaitable[None]]

REQUIRED: Final = (
    "hypercorn.app_wrappers:ASGIWrapper",
    "hypercorn.config:Config",
    "hypercorn.config:Config.create_ssl_context",
    "hypercorn.trio.lifespan:Lifespan",
    "hypercorn.trio.lifespan:Lifespan.handle_lifespan",
    "hypercorn.trio.lifespan:Lifespan.wait_for_startup",
    "hypercorn.trio.lifespan:Lifespan.wait_for_shutdown",
    "hypercorn.trio.tcp_server:TCPServer",
    "hypercorn.trio.tcp_server:TCPServer.run",
    "hypercorn.trio.tcp_server:TCPServer.protocol_send",
    "hypercorn.trio.tcp_server:TCPServer._close",
    "hypercorn.trio.tcp_server:TCPServer._read_data",
    "hypercorn.trio.worker_context:TrioSingleTask.stop",
    "hypercorn.trio.worker_context:WorkerContext",
    "hypercorn.typing:ConnectionState",
)
"""``module:attribute.path`` of every hypercorn name used here."""

CONFIG_ATTRIBUTES: Final = (
    "accesslog",
    "backlog",
    "certfile",
    "errorlog",
    "graceful_timeout",
    "keep_alive_timeout",
    "keyfile",
    "root_path",
    "ssl_enabled",
)
"""Attributes of ``hypercorn.config.Config`` that :func:`make_config` sets or reads."""

CONTEXT_ATTRIBUTES: Final = ("terminated",)
"""Attributes of a ``WorkerContext`` instance used here (created in its ``__init__``)."""

SERVER_ATTRIBUTES: Final = ("idle_task",)
"""Attributes of a ``TCPServer`` instance used here (created in its ``__init__``)."""


def missing_internals() -> list[str]:
    """The names of :data:`REQUIRED` (and the instance attributes) this hypercorn lacks.

    Not a checkpoint; imports only hypercorn modules.
    """
    missing = missing_references(REQUIRED)
    if missing:
        return missing
    try:
        config = Config()
        context = WorkerContext(None)
        server = TCPServer(cast(Any, None), config, context, {}, cast(Any, None))
    except Exception as exc:  # a changed constructor is as fatal as a missing name
        return [f"constructing Config(), WorkerContext(None), TCPServer(...): {exc!r}"]
    missing += [f"Config().{a}" for a in CONFIG_ATTRIBUTES if not hasattr(config, a)]
    missing += [f"WorkerContext(None).{a}" for a in CONTEXT_ATTRIBUTES if not hasattr(context, a)]
    missing += [f"TCPServer(...).{a}" for a in SERVER_ATTRIBUTES if not hasattr(server, a)]
    return missing


def check_internals() -> None:
    """Raise RuntimeError naming every hypercorn internal megatrio needs but cannot find."""
    missing = missing_internals()
    if missing:
        version = importlib.metadata.version("hypercorn")
        raise RuntimeError(
            f"hypercorn {version} lacks internals megatrio serves with: {', '.join(missing)}"
        )


def make_config(
    *,
    graceful_seconds: float,
    keep_alive_timeout_seconds: float,
    root_path: str,
    certfile: str,
    keyfile: str,
) -> Config:
    """A hypercorn ``Config`` for one listener child; logs go to the ``hypercorn.error`` logger
    (through megatrio's logging pipeline), there is no access log."""
    config = Config()
    config.graceful_timeout = graceful_seconds
    config.keep_alive_timeout = keep_alive_timeout_seconds
    config.root_path = root_path
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    if certfile:
        config.certfile = certfile
        config.keyfile = keyfile
    return config


@final
class OrderedSendStream(trio.abc.HalfCloseableStream):
    """A connection's :class:`trio.SocketStream` whose ``send_all`` and ``send_eof`` take turns.

    Why: hypercorn's ``TCPServer`` serialises its own ``send_all`` calls with a lock, but its
    ``_close`` — run from whichever task decides the connection is over, often the app's task
    after its last body chunk — calls ``send_eof`` outside that lock, and
    ``SocketStream.send_eof`` holds the stream's send-conflict detector across a checkpoint.
    A ``send_all`` from the reading task in that window (the 400 that h11 answers to a
    malformed chunked body, racing the app's response) raised ``BusyResourceError``. Here both
    take one FIFO lock, so the EOF goes out after the bytes already being sent, and a send
    after the EOF fails with the ``BrokenResourceError``/``ClosedResourceError`` that
    hypercorn handles.

    Nothing else can damage the wire when the app's response and that 400 race: h11 lets
    out one response per request (once either has started, the other's events raise
    ``LocalProtocolError`` in h11, which hypercorn drops because the peer's state is
    ``ERROR``), and ``TCPServer``'s own lock keeps each ``send_all`` whole. So the peer
    receives one complete response, then the EOF; anything else hypercorn lets escape is
    contained to the connection by the caller.

    ``socket`` is the raw socket, which ``TCPServer`` reads for the peer's address; the stream
    has no ``do_handshake``, which is how ``TCPServer`` tells plain connections from TLS ones.
    :meth:`close_now` closes the socket synchronously: any task blocked on it — including a
    send hypercorn shields from cancellation — wakes with ``ClosedResourceError``.
    """

    __slots__ = ("_lock", "socket", "transport")

    def __init__(self, transport: trio.SocketStream) -> None:
        self.transport = transport
        self.socket = transport.socket
        self._lock = trio.StrictFIFOLock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._acquire()
        try:
            await self.transport.send_all(data)
        finally:
            self._lock.release()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._acquire()
        try:
            await self.transport.send_eof()
        finally:
            self._lock.release()

    async def _acquire(self) -> None:
        # Uncontended (nearly always), take the lock without the checkpoint of `async with`:
        # 0.8 us instead of 5.4 us per send, measured, and the send itself is a checkpoint.
        # acquire_nowait refuses while others wait, so the order stays first come, first served.
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.transport.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.transport.aclose()

    def close_now(self) -> None:
        """Close the socket at once (idempotent). Not a checkpoint."""
        self.socket.close()


@final
class _TCPServer(TCPServer):
    """hypercorn's connection server, minus a linger: once the peer has closed, nothing can
    arrive any more, so the keep-alive idle timer is stopped. hypercorn keeps it running,
    so a connection the peer closed while idle held its task, its socket and its place
    under ``max_concurrent_connections`` for the whole keep-alive timeout."""

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()


@final
class HypercornServer:
    """hypercorn's lifespan protocol and per-connection server for one ASGI *app*.

    Raises RuntimeError at construction when this hypercorn lacks an internal it needs.
    """

    def __init__(self, app: ASGIApp, config: Config) -> None:
        check_internals()
        self.config = config
        self._app = ASGIWrapper(cast(Any, app))
        self._context = WorkerContext(None)
        self._lifespan_state: dict[str, Any] = {}
        self._connection_state = ConnectionState(self._lifespan_state.copy())

    @property
    def lifespan_state(self) -> dict[str, Any]:
        """What the app put in the lifespan state at startup (every request's starting
        state)."""
        return self._lifespan_state

    @staticmethod
    def wrap(app: ASGIApp) -> object:
        """*app* as the callable hypercorn's protocol layer calls (for :meth:`serve`)."""
        return ASGIWrapper(cast(Any, app))

    @contextlib.asynccontextmanager
    async def open_lifespan(self) -> AsyncIterator[None]:
        """Run the app's ASGI lifespan: startup on entry, shutdown after a normal exit.

        Entry raises hypercorn's ``LifespanFailureError`` when the app reports a failed startup
        (and ``LifespanTimeoutError`` after ``startup_timeout``). When the body raises or is
        cancelled, the app's shutdown is not awaited (as hypercorn does); the lifespan task is
        cancelled either way.
        """
        lifespan = Lifespan(self._app, self.config, self._lifespan_state)
        async with trio.open_nursery() as nursery:
            await nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            # What the app put in the lifespan state is every request's starting state.
            self._connection_state = ConnectionState(self._lifespan_state.copy())
            yield
            await lifespan.wait_for_shutdown()
            nursery.cancel_scope.cancel()

    async def serve(self, stream: trio.abc.Stream, app: object | None = None) -> None:
        """Serve one connection until it closes, with *app* (from :meth:`wrap`) or the app.

        Raises whatever hypercorn's connection server lets escape (it handles only
        ``OSError``): the caller contains it. Cancellation ends the connection, except for a
        send in progress, which hypercorn shields; :meth:`OrderedSendStream.close_now` ends
        that.
        """
        server = _TCPServer(
            cast(Any, self._app if app is None else app),
            self.config,
            self._context,
            self._connection_state,
            cast(Any, stream),
        )
        await server.run()

    async def stop_keep_alive(self) -> None:
        """From now on, idle keep-alive connections close and no connection is recycled for
        another request (hypercorn's ``terminated`` flag). Not a checkpoint in hypercorn 0.18
        (an event's ``set``), though it is an ``async`` call there."""
        await self._context.terminated.set()
