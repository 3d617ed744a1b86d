"""The embedded job engine: :class:`EmbeddedDriver`, a :class:`JobDriver` in this process.

For development, tests and single-process services that can lose queued work: **nothing is
durable** — messages, in-flight deliveries and dead letters live in memory and are gone when
the process exits (a restart loses them; so does a crash). Within the process it keeps the
contract JetStream keeps: ack wait with progress, nak delays, ``max_deliver``, ``msg_id``
de-duplication within a window, a dead-letter queue.

It has no task of its own: timed events (a nak delay ending, an ack wait expiring) are
applied whenever a fetch looks at the queue, and a waiting fetch wakes up at the earliest of
them. Time is the event loop's clock (``anyio.current_time()``), so the autojump clock drives
it in tests; only the ``enqueued_at`` / ``failed_at`` stamps are wall-clock time.
"""

from __future__ import annotations

import collections
import heapq
import math
import time
from collections.abc import Sequence
from typing import final

import anyio
import anyio.lowlevel
import attrs

from ..._policy._checks import check_count, check_seconds
from ..._policy._jobs import REASON_WORKER_LOST
from ._driver import DeadLetter, Delivery, JobSettings, Settle
from ._envelope import build_dead_letter


@attrs.define(eq=False)
class _Message:
    sequence: int
    payload: bytes
    msg_id: str | None
    enqueued_at: float
    deliveries: int = 0
    lease: _Lease | None = None
    """The current delivery's lease while it is out with a consumer."""


@attrs.define(eq=False)
class _Lease:
    """One delivery of a message: the handle a consumer settles it with."""

    message: _Message
    delivery: int
    deadline: float


@final
class _Queue:
    __slots__ = ("changed", "delayed", "leases", "messages", "ready", "settings")

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.messages: dict[int, _Message] = {}
        self.ready: collections.deque[_Message] = collections.deque()
        # (due, sequence, message): nak'd messages waiting out their delay.
        self.delayed: list[tuple[float, int, _Message]] = []
        self.leases: dict[int, _Lease] = {}
        self.changed = anyio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


@final
class EmbeddedDriver:
    """An in-process, in-memory :class:`JobDriver` — **not durable across restarts**.

    *dedup_window_seconds* is how long a ``msg_id`` is remembered (JetStream's default: two
    minutes), *dedup_max_entries* caps how many are (the oldest are forgotten first).
    *max_dead_letters* caps the dead-letter queue: past it the oldest letter is dropped and
    counted in :attr:`dead_letters_dropped`.

    Raises:
        ValueError / TypeError: a bad argument.
    """

    def __init__(
        self,
        *,
        dedup_window_seconds: float = 120.0,
        dedup_max_entries: int = 100_000,
        max_dead_letters: int = 10_000,
    ) -> None:
        self.dedup_window_seconds = check_seconds("dedup_window_seconds", dedup_window_seconds)
        self.dedup_max_entries = check_count("dedup_max_entries", dedup_max_entries, minimum=1)
        self.max_dead_letters = check_count("max_dead_letters", max_dead_letters, minimum=1)
        self._queues: dict[str, _Queue] = {}
        self._sequence = 0
        # (job, msg_id) -> (sequence, remembered at), oldest first.
        self._dedup: collections.OrderedDict[tuple[str, str], tuple[int, float]] = (
            collections.OrderedDict()
        )
        self._dead: collections.OrderedDict[int, DeadLetter] = collections.OrderedDict()
        self._dead_keys: dict[tuple[str, int], int] = {}
        self._dead_ids = 0
        self.dead_letters_dropped = 0
        """Dead letters dropped because the queue was full (oldest first)."""
        self._closed = False

    # -- JobDriver ------------------------------------------------------------------------------

    async def declare(self, jobs: Sequence[JobSettings]) -> None:
        """Create a queue per job; a declared job's settings are updated. Idempotent."""
        await anyio.lowlevel.checkpoint()
        for settings in jobs:
            queue = self._queues.get(settings.name)
            if queue is None:
                self._queues[settings.name] = _Queue(settings)
            else:
                queue.settings = settings

    async def enqueue(self, job: str, payload: bytes, *, msg_id: str | None = None) -> int:
        """See :meth:`JobDriver.enqueue`. Raises LookupError for an undeclared job and
        RuntimeError once closed."""
        await anyio.lowlevel.checkpoint()
        queue = self._queue(job)
        now = anyio.current_time()
        if msg_id is not None:
            self._forget_old_ids(now)
            known = self._dedup.get((job, msg_id))
            if known is not None:
                return known[0]
        self._sequence += 1
        message = _Message(self._sequence, bytes(payload), msg_id, time.time())
        queue.messages[message.sequence] = message
        queue.ready.append(message)
        if msg_id is not None:
            self._dedup[(job, msg_id)] = (message.sequence, now)
            if len(self._dedup) > self.dedup_max_entries:
                self._dedup.popitem(last=False)
        queue.wake()
        return message.sequence

    async def fetch(self, job: str, batch: int, *, timeout_seconds: float) -> list[Delivery]:
        """See :meth:`JobDriver.fetch`. Returns ``[]`` at once for *batch* 0 or once closed."""
        check_count("batch", batch)
        queue = self._queue(job)
        deadline = anyio.current_time() + timeout_seconds
        while True:
            now = anyio.current_time()
            self._advance(queue, now)
            if queue.ready or batch == 0 or self._closed or now >= deadline:
                break
            with anyio.move_on_at(min(deadline, self._next_event(queue))):
                await queue.changed.wait()
        await anyio.lowlevel.checkpoint()
        deliveries: list[Delivery] = []
        ack_deadline = anyio.current_time() + queue.settings.ack_wait_seconds
        while queue.ready and len(deliveries) < batch and not self._closed:
            message = queue.ready.popleft()
            message.deliveries += 1
            lease = _Lease(message, message.deliveries, ack_deadline)
            message.lease = lease
            queue.leases[message.sequence] = lease
            deliveries.append(
                Delivery(
                    job,
                    message.payload,
                    message.deliveries,
                    message.sequence,
                    message.msg_id,
                    message.enqueued_at,
                    lease,
                )
            )
        return deliveries

    async def settle(self, actions: Sequence[Settle]) -> None:
        """See :meth:`JobDriver.settle`.

        An ``ack`` or ``term`` of an earlier delivery whose ack wait expired still settles
        the message if it is still queued (the work was done, or judged poison); a ``nak``
        or ``progress`` of it is ignored, as it would disturb the current delivery.
        """
        await anyio.lowlevel.checkpoint()
        now = anyio.current_time()
        for action in actions:
            lease = action.delivery.handle
            assert isinstance(lease, _Lease), "a delivery from another engine"
            queue = self._queues.get(action.delivery.job)
            message = lease.message
            if queue is None or queue.messages.get(message.sequence) is not message:
                continue  # settled already
            current = message.lease is lease
            if action.kind in ("ack", "term"):
                self._remove(queue, message)
            elif not current:
                continue
            elif action.kind == "progress":
                lease.deadline = now + queue.settings.ack_wait_seconds
            elif message.deliveries >= queue.settings.max_deliver:
                # A release of the final delivery (its worker stopped before finishing):
                # it will not be delivered again, so it must not vanish either.
                self._lose(queue, message, now)
            else:
                self._unlease(queue, message)
                due = now + action.delay_seconds
                if action.delay_seconds <= 0:
                    queue.ready.append(message)
                else:
                    heapq.heappush(queue.delayed, (due, message.sequence, message))
                queue.wake()

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Store *letter*; a second letter for the same job stream sequence replaces nothing."""
        await anyio.lowlevel.checkpoint()
        self._store_dead_letter(letter)

    async def dead_letters(self, *, limit: int = 100) -> list[tuple[int, DeadLetter]]:
        await anyio.lowlevel.checkpoint()
        check_count("limit", limit)
        return [item for _, item in zip(range(limit), self._dead.items(), strict=False)]

    async def purge_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        await anyio.lowlevel.checkpoint()
        targets = list(self._dead) if ids is None else [i for i in ids if i in self._dead]
        for letter_id in targets:
            letter = self._dead.pop(letter_id)
            self._dead_keys.pop((letter.job, letter.sequence), None)
        return len(targets)

    async def aclose(self) -> None:
        """End pending fetches (they return ``[]``); later enqueues raise. Idempotent."""
        self._closed = True
        for queue in self._queues.values():
            queue.wake()
        await anyio.lowlevel.checkpoint()

    # -- inspection, for tests and the console -----------------------------------------------

    def pending(self, job: str) -> int:
        """Messages of *job* not yet settled: queued, delayed or out with a consumer."""
        return len(self._queue(job).messages)

    def __repr__(self) -> str:
        return f"<EmbeddedDriver jobs={sorted(self._queues)}>"

    # -- internals -------------------------------------------------------------------------------

    def _queue(self, job: str) -> _Queue:
        if self._closed:
            raise RuntimeError("the embedded job driver is closed")
        queue = self._queues.get(job)
        if queue is None:
            known = ", ".join(sorted(self._queues)) or "none"
            raise LookupError(f"job {job!r} is not declared (declared: {known})")
        return queue

    def _advance(self, queue: _Queue, now: float) -> None:
        """Apply what is due at *now*: nak delays that ended, ack waits that expired."""
        while queue.delayed and queue.delayed[0][0] <= now:
            _, _, message = heapq.heappop(queue.delayed)
            if queue.messages.get(message.sequence) is message:
                queue.ready.append(message)
        expired = [lease for lease in queue.leases.values() if lease.deadline <= now]
        for lease in expired:
            message = lease.message
            if message.deliveries >= queue.settings.max_deliver:
                self._lose(queue, message, now)
            else:
                self._unlease(queue, message)
                queue.ready.append(message)

    def _next_event(self, queue: _Queue) -> float:
        times = [lease.deadline for lease in queue.leases.values()]
        if queue.delayed:
            times.append(queue.delayed[0][0])
        return min(times, default=math.inf)

    def _unlease(self, queue: _Queue, message: _Message) -> None:
        message.lease = None
        queue.leases.pop(message.sequence, None)

    def _remove(self, queue: _Queue, message: _Message) -> None:
        self._unlease(queue, message)
        del queue.messages[message.sequence]

    def _lose(self, queue: _Queue, message: _Message, now: float) -> None:
        lease = message.lease
        assert lease is not None
        delivery = Delivery(
            queue.settings.name,
            message.payload,
            message.deliveries,
            message.sequence,
            message.msg_id,
            message.enqueued_at,
            lease,
        )
        self._store_dead_letter(build_dead_letter(delivery, REASON_WORKER_LOST))
        self._remove(queue, message)

    def _store_dead_letter(self, letter: DeadLetter) -> None:
        key = (letter.job, letter.sequence)
        if key in self._dead_keys:
            return
        self._dead_ids += 1
        self._dead[self._dead_ids] = letter
        self._dead_keys[key] = self._dead_ids
        while len(self._dead) > self.max_dead_letters:
            _, dropped = self._dead.popitem(last=False)
            self._dead_keys.pop((dropped.job, dropped.sequence), None)
            self.dead_letters_dropped += 1

    def _forget_old_ids(self, now: float) -> None:
        while self._dedup:
            _, (_, seen_at) = next(iter(self._dedup.items()))
            if now - seen_at < self.dedup_window_seconds:
                break
            self._dedup.popitem(last=False)
