"""The core-NATS bus: publish, subscribe (optionally in a queue group), request and reply.

Delivery is **at-most-once**. Core NATS keeps nothing: a message published while nobody is
subscribed, while the connection is down, or that arrives at a subscriber whose buffer is full
(``when_full="drop"``) is lost. Use JetStream jobs for at-least-once work.

Nothing is unbounded. A subscription's messages pass through three buffers of ``max_pending``
messages each: nats-py's own pending queue for the subscription (when it is full nats-py drops
and reports a slow consumer), the hand-off from the bridge's loop to the host, and the memory
channel the subscriber reads. With ``when_full="drop"`` a message finding the channel or the
hand-off full is dropped; with ``"block"`` the handler on the asyncio side waits for room, so
backpressure reaches nats-py's pending queue. Every drop is counted in
:attr:`Subscription.dropped`.

The hand-off moves messages in batches: the asyncio side appends under a lock and wakes the
host only when the host's pump is idle, so a busy subscription crosses the thread boundary
once per batch, not once per message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import threading
from collections.abc import AsyncIterator
from typing import Literal, final

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import nats.aio.msg
import nats.aio.subscription
import nats.errors
from anyio.streams.memory import MemoryObjectSendStream

from ..._util import NoPublicConstructor
from ._bridge import AsyncioBridge
from ._connection import NatsConnection

WhenFull = Literal["drop", "block"]

_UNSUBSCRIBE_SECONDS = 5.0


@attrs.frozen
class BusMessage:
    """One message received from the bus."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None
    reply: str | None = None
    """The subject to answer on (:meth:`Bus.reply`), or None when the sender expects nothing."""


def _message(msg: nats.aio.msg.Msg) -> BusMessage:
    return BusMessage(msg.subject, msg.data, msg.headers, msg.reply or None)


@final
class Subscription(metaclass=NoPublicConstructor):
    """The messages of one subscription (see :meth:`Bus.subscribe`): ``async for msg in sub``.

    Iterating is a checkpoint per message; it waits while none is buffered.
    """

    __slots__ = ("_inbox", "_receive", "queue", "subject")

    def __init__(
        self,
        subject: str,
        queue: str | None,
        inbox: _Inbox,
        receive: anyio.abc.ObjectReceiveStream[BusMessage],
    ) -> None:
        self.subject = subject
        self.queue = queue
        self._inbox = inbox
        self._receive = receive

    @property
    def dropped(self) -> int:
        """Messages lost because a buffer was full (see the module docstring)."""
        return self._inbox.dropped

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> BusMessage:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


@final
class _Inbox:
    """The bounded hand-off from nats-py's handler (on the bridge's loop) to the host's pump."""

    def __init__(self, bridge: AsyncioBridge, capacity: int, when_full: WhenFull) -> None:
        self._bridge = bridge
        self._capacity = capacity
        self._block = when_full == "block"
        # Everything below is shared by the two threads and guarded by _lock.
        self._lock = threading.Lock()
        self._items: collections.deque[BusMessage] = collections.deque()
        self._dropped = 0
        self._closed = False
        self._pump_idle: anyio.Event | None = None
        """Set while the pump waits for items: the next put wakes it."""
        self._room: asyncio.Future[None] | None = None
        """Set while the handler waits for room ("block"): the next take resolves it."""

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    def count_drop(self) -> None:
        with self._lock:
            self._dropped += 1

    # -- the bridge's loop ----------------------------------------------------------------

    async def put(self, msg: nats.aio.msg.Msg) -> None:
        """nats-py's handler. It returns before the next message is handed to it."""
        item = _message(msg)
        while True:
            with self._lock:
                if self._closed:
                    return
                if len(self._items) < self._capacity:
                    self._items.append(item)
                    idle, self._pump_idle = self._pump_idle, None
                    break
                if not self._block:
                    self._dropped += 1
                    return
                room = self._room = asyncio.get_running_loop().create_future()
            await room
        if idle is not None:
            self._bridge.call_soon_in_host(idle.set)

    def close(self) -> None:
        """Stop taking messages; a handler waiting for room returns. Any thread."""
        with self._lock:
            self._closed = True
            room, self._room = self._room, None
        if room is not None:
            self._resolve_soon(room)

    def _resolve_soon(self, room: asyncio.Future[None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            if self._bridge.threaded:
                self._bridge.call_soon_in_loop(_resolve, room)
            else:
                _resolve(room)

    # -- the host ---------------------------------------------------------------------------

    async def pump(self, send: MemoryObjectSendStream[BusMessage]) -> None:
        """Move batches into the subscriber's channel until cancelled."""
        while True:
            with self._lock:
                batch, self._items = self._items, collections.deque()
                room, self._room = self._room, None
                idle = None
                if not batch:
                    idle = self._pump_idle = anyio.Event()
            if room is not None:
                self._resolve_soon(room)
            if idle is not None:
                await idle.wait()
                continue
            for item in batch:
                if self._block:
                    await send.send(item)
                    continue
                try:
                    send.send_nowait(item)
                except anyio.WouldBlock:
                    self.count_drop()
            await anyio.lowlevel.checkpoint()


def _resolve(room: asyncio.Future[None]) -> None:
    if not room.done():
        room.set_result(None)


OUTBOX_LIMIT = 10_000
"""Publishes queued for the connection's loop at most; a publisher waits for room past it."""


@final
class _Outbox:
    """Publishes on their way to nats-py: queued on the host's side, handed over on the
    connection's loop by one drainer at a time, in order.

    A crossing per publish would cap the bus at the bridge's crossing rate; here a publisher
    only appends (and wakes the drainer if it sleeps), and one crossing carries whatever has
    queued meanwhile. Bounded: past :data:`OUTBOX_LIMIT` a publisher waits for room.
    """

    def __init__(self, conn: NatsConnection, limit: int = OUTBOX_LIMIT) -> None:
        self._conn = conn
        self._limit = limit
        self._items: collections.deque[tuple[str, bytes, dict[str, str] | None]] = (
            collections.deque()
        )
        # Guards _draining, which both threads read and write.
        self._lock = threading.Lock()
        self._draining = False
        self._room: anyio.Event | None = None  # the host's side only
        self._drainer: asyncio.Future[None] | None = None  # the loop's side only
        self._idle: asyncio.Event | None = None  # the loop's side only: set when drained
        self.drains = 0
        """How many times the drainer was woken (for tests and benchmarks)."""
        self.failed = 0
        """Publishes nats-py refused (the connection closed): lost, at most once."""
        self.refused = 0
        """Publishes :meth:`put_nowait` refused because the outbox was full."""

    async def put(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        await anyio.lowlevel.checkpoint()
        while len(self._items) >= self._limit:
            room = self._room = anyio.Event()
            self._wake_drainer()
            await room.wait()
        self._items.append((subject, data, headers))
        self._wake_drainer()

    def put_nowait(self, subject: str, data: bytes, headers: dict[str, str] | None) -> bool:
        """:meth:`put` for a caller that must not wait: False (and counted in
        :attr:`refused`) when the outbox is full."""
        if len(self._items) >= self._limit:
            self.refused += 1
            return False
        self._items.append((subject, data, headers))
        self._wake_drainer()
        return True

    async def flush(self) -> None:
        await self._conn.run(self._flush_on_loop)

    def _wake_drainer(self) -> None:
        with self._lock:
            if self._draining:
                return
            self._draining = True
        self.drains += 1
        try:
            self._conn.bridge.call_soon_in_loop(self._start_drain)
        except RuntimeError as exc:  # the loop is closed: nothing will ever drain
            with self._lock:
                self._draining = False
            self._items.clear()
            raise anyio.ClosedResourceError("the NATS connection is closed") from exc

    # The methods below run on the connection's loop.

    def _start_drain(self) -> None:
        # Referenced until it ends: the loop itself keeps only a weak reference to a task.
        self._drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        client = self._conn.client
        items = self._items
        while True:
            while items:
                subject, data, headers = items.popleft()
                try:
                    await client.publish(subject, data, headers=headers)
                except Exception:
                    self.failed += 1
                if self._room is not None and len(items) < self._limit // 2:
                    self._conn.bridge.call_soon_in_host(self._make_room)
            with self._lock:
                if not items:
                    self._draining = False
                    break
        if self._room is not None:
            self._conn.bridge.call_soon_in_host(self._make_room)
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.set()

    async def _flush_on_loop(self) -> None:
        with self._lock:
            draining = self._draining
        if draining:
            idle = self._idle = self._idle or asyncio.Event()
            await idle.wait()
        await self._conn.client.flush()

    def _make_room(self) -> None:  # on the host's side
        room, self._room = self._room, None
        if room is not None:
            room.set()


class Bus:
    """The core-NATS bus on an open :class:`NatsConnection`. At-most-once (module docstring).

    :meth:`publish` queues for the connection's loop and returns (publishes cross in batches,
    in order; :meth:`flush` waits until all are with the server); :meth:`request` and
    :meth:`subscribe` cross once per call, and cancelling one cancels the nats-py call and
    waits for it.
    """

    def __init__(self, conn: NatsConnection) -> None:
        self._conn = conn
        self._outbox = _Outbox(conn)

    async def publish(
        self, subject: str, data: bytes, *, headers: dict[str, str] | None = None
    ) -> None:
        """Publish *data* on *subject*. Returns once it is queued for the connection (in
        order, handed to nats-py and flushed to the server shortly after); waits for room
        when :data:`OUTBOX_LIMIT` publishes are queued. Lost if the connection is down: the
        bus is at-most-once.
        """
        await self._outbox.put(subject, data, headers)

    def publish_nowait(
        self, subject: str, data: bytes, *, headers: dict[str, str] | None = None
    ) -> bool:
        """:meth:`publish` without waiting (not a checkpoint): False, and the message dropped,
        when :data:`OUTBOX_LIMIT` publishes are queued already. For callers that must never
        wait, such as a WebSocket broadcast.

        Raises:
            anyio.ClosedResourceError: the connection is closed.
        """
        return self._outbox.put_nowait(subject, data, headers)

    async def flush(self) -> None:
        """Wait until every publish made so far has been sent to the server."""
        await self._outbox.flush()

    async def reply(self, msg: BusMessage, data: bytes) -> None:
        """Answer a request *msg* with *data*.

        Raises:
            ValueError: *msg* has no reply subject (its sender expects no answer).
        """
        if msg.reply is None:
            raise ValueError(f"the message on {msg.subject!r} has no reply subject")
        await self.publish(msg.reply, data)

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout_seconds: float,
        headers: dict[str, str] | None = None,
    ) -> BusMessage:
        """Send a request on *subject* and return the first reply.

        Raises:
            TimeoutError: no reply within *timeout_seconds* (the message names the subject).
            LookupError: nobody is subscribed to *subject* (the server said no responders).
        """
        client = self._conn.client
        call = functools.partial(
            client.request, subject, data, timeout=timeout_seconds, headers=headers
        )
        try:
            msg = await self._conn.run(call)
        except nats.errors.NoRespondersError as exc:
            raise LookupError(f"no responders on {subject!r}") from exc
        except nats.errors.TimeoutError as exc:
            raise TimeoutError(f"no reply on {subject!r} within {timeout_seconds:g} s") from exc
        return _message(msg)

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        subject: str,
        *,
        queue: str | None = None,
        max_pending: int = 1000,
        when_full: WhenFull = "drop",
    ) -> AsyncIterator[Subscription]:
        """Subscribe to *subject* (wildcards allowed) for the block; yields the
        :class:`Subscription` to iterate.

        With *queue*, the subscription joins that queue group: each message goes to one
        member of the group. *max_pending* bounds each buffer on the way (module docstring);
        *when_full* says what a full one does: ``"drop"`` (and count) or ``"block"``.
        Leaving the block unsubscribes (within a few seconds, even when cancelled).

        Raises:
            ValueError: *max_pending* is below 1 or *when_full* is neither value.
        """
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending!r}")
        if when_full not in ("drop", "block"):
            raise ValueError(f"when_full must be 'drop' or 'block', got {when_full!r}")
        conn = self._conn
        inbox = _Inbox(conn.bridge, max_pending, when_full)
        send, receive = anyio.create_memory_object_stream[BusMessage](max_pending)
        nats_sub = await conn.run(self._subscribe, subject, queue or "", inbox, max_pending)
        try:
            async with send, receive, anyio.create_task_group() as tasks:
                tasks.start_soon(inbox.pump, send)
                try:
                    yield Subscription._create(subject, queue, inbox, receive)
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            inbox.close()
            with anyio.move_on_after(_UNSUBSCRIBE_SECONDS, shield=True):
                with contextlib.suppress(nats.errors.Error, anyio.ClosedResourceError):
                    await conn.run(self._unsubscribe, nats_sub)

    async def _subscribe(
        self, subject: str, queue: str, inbox: _Inbox, max_pending: int
    ) -> nats.aio.subscription.Subscription:
        # On the connection's loop.
        sub = await self._conn.client.subscribe(
            subject, queue=queue, cb=inbox.put, pending_msgs_limit=max_pending
        )
        self._conn._slow_consumers[id(sub)] = inbox.count_drop
        return sub

    async def _unsubscribe(self, sub: nats.aio.subscription.Subscription) -> None:
        # On the connection's loop.
        self._conn._slow_consumers.pop(id(sub), None)
        await sub.unsubscribe()
