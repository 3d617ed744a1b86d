"""The NATS connection: a nats-py client on the bridge's loop, its reconnects made visible.

The client reconnects forever (every ``reconnect_time_wait_seconds``); each loss, reconnect,
error and the final close is logged on ``megatrio.nats`` and reflected in
:attr:`NatsConnection.status`, which :func:`serve_nats_status` publishes as the annotations of
a supervised child. Every URL and error text that leaves this module goes through
:func:`redact_url` first: credentials never reach a log line, an exception or a snapshot.

nats-py's callbacks run on the bridge's loop (another thread under trio); they only replace
the immutable :class:`NatsStatus` (one reference assignment) and ask the host to wake whoever
waits for a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar, TypeVarTuple, final

import anyio
import anyio.abc
import attrs
import nats.aio.client
import nats.errors
import nats.js

from ..._exceptions import BackendUnavailable
from ..._util import NoPublicConstructor
from ...nursery._child import current_child
from ...nursery._errors import describe
from ._bridge import AsyncioBridge, Cancel, Done, open_asyncio_bridge

log = logging.getLogger("megatrio.nats")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# scheme://userinfo@ — userinfo is "user:password" or a bare token; commas separate the
# servers of one NATS URL list, so they end a userinfo too.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://)([^@/\s,]*)@")


def redact_url(text: str) -> str:
    """*text* with the credentials of every URL in it masked: ``nats://user:secret@host`` →
    ``nats://user:***@host``, ``nats://token@host`` → ``nats://***@host``.

    Works on a URL, a comma-separated list of them, or free text (an error message).
    """

    def mask(match: re.Match[str]) -> str:
        user, colon, _ = match[2].partition(":")
        return f"{match[1]}{user}:***@" if colon else f"{match[1]}***@"

    return _USERINFO.sub(mask, text)


State = Literal["connecting", "connected", "disconnected", "closed"]


@attrs.frozen(kw_only=True)
class NatsStatus:
    """The connection as last seen: immutable, replaced whole on every change."""

    state: State
    reconnects: int = 0
    """Reconnects since the connection was opened."""
    last_error: str | None = None
    """The last error nats-py reported (``"TypeName: message"``, credentials redacted)."""

    def annotations(self, url: str) -> dict[str, object]:
        """The plain-data form a supervised child annotates itself with."""
        return {
            "nats_url": url,
            "nats_state": self.state,
            "nats_reconnects": self.reconnects,
            "nats_last_error": self.last_error,
        }


@final
class NatsConnection(metaclass=NoPublicConstructor):
    """An open NATS connection (see :func:`open_nats`): a nats-py client on an asyncio loop.

    The client lives on the bridge's loop; use it only inside :meth:`run`.
    """

    __slots__ = (
        "_bridge", "_changed", "_client", "_closing", "_slow_consumers", "_status", "_url", "name",
    )  # fmt: skip

    def __init__(self, bridge: AsyncioBridge, url: str, name: str) -> None:
        self._bridge = bridge
        self._url = url
        self.name = name
        """The client name the server sees (``CONNZ`` lists it)."""
        self._client = nats.aio.client.Client()
        self._status = NatsStatus(state="connecting")
        self._changed = anyio.Event()
        self._closing = False
        # id() of a nats-py subscription -> what counts a message nats-py dropped for it (its
        # pending queue was full). Touched only on the bridge's loop.
        self._slow_consumers: dict[int, Callable[[], None]] = {}

    @property
    def url(self) -> str:
        """The server URL(s), credentials redacted."""
        return redact_url(self._url)

    @property
    def status(self) -> NatsStatus:
        """The connection's state, reconnect count and last error. Not a checkpoint."""
        return self._status

    @property
    def client(self) -> nats.aio.client.Client:
        """The nats-py client. It belongs to the bridge's loop: call it only through :meth:`run`."""
        return self._client

    @property
    def bridge(self) -> AsyncioBridge:
        """The bridge the client's loop runs on."""
        return self._bridge

    def jetstream(self, **options: Any) -> nats.js.JetStreamContext:
        """The nats-py JetStream context of the client (*options* as nats-py takes them).

        Its methods are coroutines of the bridge's loop: call them through :meth:`run`.
        """
        return self._client.jetstream(**options)

    async def run(self, async_fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """``await async_fn(*args)`` on the client's loop (:meth:`AsyncioBridge.run`): the
        result or the exception comes back unchanged. Cancelling it cancels the call and waits
        for it to finish. Batch: each call crosses the loop boundary.
        """
        return await self._bridge.run(async_fn, *args)

    async def run_callback(self, start: Callable[[Done[T], *Ts], Cancel], *args: *Ts) -> T:
        """``start(done, *args)`` on the client's loop, its outcome back here
        (:meth:`AsyncioBridge.run_callback`): for operations that need no task of their own."""
        return await self._bridge.run_callback(start, *args)

    async def wait_status_change(self, seen: NatsStatus) -> NatsStatus:
        """Wait until :attr:`status` is no longer *seen*; return the new one. A checkpoint."""
        while self._status is seen:
            await self._changed.wait()
        return self._status

    # -- nats-py's callbacks (on the bridge's loop) -------------------------------------

    def _set(self, status: NatsStatus) -> None:
        self._status = status
        self._bridge.call_soon_in_host(self._wake)

    def _wake(self) -> None:
        # In the host: every waiter holds the old event, and the next wait gets a fresh one.
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        log.warning("NATS connection to %s lost; reconnecting", self.url)
        self._set(attrs.evolve(self._status, state="disconnected"))

    async def _on_reconnected(self) -> None:
        status = self._status
        log.info(
            "NATS connection to %s re-established (reconnect %d)", self.url, status.reconnects + 1
        )
        self._set(attrs.evolve(status, state="connected", reconnects=status.reconnects + 1))

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.SlowConsumerError):
            # One per dropped message: counted by its subscription, never one log line each.
            count = self._slow_consumers.get(id(error.sub))
            if count is not None:
                count()
            return
        text = redact_url(describe(error))
        if self._status.state != "connecting":
            log.warning("NATS connection to %s: %s", self.url, text)
        self._set(attrs.evolve(self._status, last_error=text))

    async def _on_closed(self) -> None:
        log.info("NATS connection to %s closed", self.url)
        self._set(attrs.evolve(self._status, state="closed"))

    # -- opening and closing (on the bridge's loop) ---------------------------------------

    async def _connect(
        self, connect_timeout_seconds: float, reconnect_time_wait_seconds: float
    ) -> BaseException | None:
        """Connect; return the first error instead if one comes first (or the timeout)."""
        first_error: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def error_cb(error: Exception) -> None:
            if not first_error.done():
                first_error.set_result(error)
            await self._on_error(error)

        connecting = asyncio.ensure_future(
            self._client.connect(
                servers=[server.strip() for server in self._url.split(",")],
                name=self.name,
                error_cb=error_cb,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                allow_reconnect=True,
                # Unlimited: an outage of any length ends in a reconnect, never a dead client.
                max_reconnect_attempts=-1,
                reconnect_time_wait=reconnect_time_wait_seconds,  # type: ignore[arg-type]
                connect_timeout=connect_timeout_seconds,  # type: ignore[arg-type]
            )
        )
        # With unlimited attempts nats-py's connect never gives up on its own; the open fails
        # at the first error instead, as open_redis does at the first failed PING.
        either: set[asyncio.Future[Any]] = {connecting, first_error}
        done, _ = await asyncio.wait(
            either,
            timeout=connect_timeout_seconds,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if connecting in done and connecting.exception() is None:
            first_error.cancel()
            self._set(attrs.evolve(self._status, state="connected"))
            return None
        connecting.cancel()
        await asyncio.wait({connecting})
        if first_error.done():
            return first_error.result()
        if connecting.done() and not connecting.cancelled():
            return connecting.exception()
        return TimeoutError(f"no connection within {connect_timeout_seconds:g} s")

    async def _close(self) -> None:
        self._closing = True
        with contextlib.suppress(nats.errors.Error):
            await self._client.close()


@contextlib.asynccontextmanager
async def open_nats(
    url: str,
    *,
    name: str,
    connect_timeout_seconds: float = 5.0,
    reconnect_time_wait_seconds: float = 0.5,
    close_timeout_seconds: float = 5.0,
) -> AsyncIterator[NatsConnection]:
    """Connect to NATS at *url* (``nats://[user:password@|token@]host:port``, or several
    separated by commas) as client *name*; the :class:`NatsConnection` is open for the block.

    The client reconnects without limit, every *reconnect_time_wait_seconds*; losses and
    reconnects are logged and visible in :attr:`NatsConnection.status`. Leaving the block
    closes the client (within *close_timeout_seconds*, even when cancelled; not a drain:
    messages still buffered may be lost, which the at-most-once bus allows) and then the
    bridge, which cancels and waits for whatever is left on its loop.

    Raises:
        BackendUnavailable: the first connection attempt failed (refused, timed out,
            authorization) — the message names the redacted URL, nats-py's error is the cause.
    """
    async with open_asyncio_bridge() as bridge:
        conn = NatsConnection._create(bridge, url, name)
        try:
            error = await bridge.run(
                conn._connect, connect_timeout_seconds, reconnect_time_wait_seconds
            )
            if error is not None:
                raise BackendUnavailable(
                    f"cannot reach NATS at {conn.url}: {redact_url(describe(error))}"
                ) from error
            log.info("NATS connection to %s open", conn.url)
            yield conn
        finally:
            with anyio.move_on_after(close_timeout_seconds, shield=True):
                await bridge.run(conn._close)


async def serve_nats_status(
    conn: NatsConnection, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """A child target that keeps the running child's annotations (``nats_state``,
    ``nats_reconnects``, ``nats_last_error``, ``nats_url``) equal to *conn*'s status.

    Reports started once the first annotations are set; runs until cancelled. Outside a
    supervised child it only waits.
    """
    child = current_child()
    status = conn.status
    if child is not None:
        child.annotate(**status.annotations(conn.url))
    task_status.started()
    while True:
        status = await conn.wait_status_change(status)
        if child is not None:
            child.annotate(**status.annotations(conn.url))
