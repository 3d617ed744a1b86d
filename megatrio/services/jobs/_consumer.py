"""The job consumer: one supervised child per job, on any :class:`JobDriver`.

A consumer fetches at most as many deliveries as it has free handler slots (and fetches again
once half of them are free, or it is idle), runs each handler on one of at most *concurrency*
worker tasks, with an in-progress heartbeat that lasts exactly as long as
the handler runs (one heartbeat task serves every delivery in progress), and
settles every delivery exactly once according to the sans-IO decision
(:func:`megatrio._policy._jobs.decide`): ack after the handler returned, nak with the table's
delay after a retryable error, dead-letter then term for poison. Settles are sent in batches
by one settler task: everything that became due while the previous ``driver.settle`` call was
in flight goes in the next call.

A handler's failure is the message's business, never the consumer's: it is logged once
(redacted) and decided upon; it never ends the child. Only the engine failing (``fetch``,
``settle`` raising) ends it, for its supervisor to restart.

Workers are spawned on demand and kept: a task per delivery cost more than the rest of a
trivial job. Invariant: while a fetched delivery waits to start, a worker that is not running a
handler is awake and will take it, so a blocked handler never holds up the deliveries behind
it; a worker whose handlers never block handles a whole batch without a task switch.

Stopping (``current_child().stopping``): the fetch in progress is cancelled at once and no
other is made; deliveries fetched but not yet started are released at once (nak'd without
delay); in-flight handlers run on within the child's shutdown grace; whatever is still
unfinished when the grace ends is cancelled and nak'd without delay (another worker takes it
at once), in one shielded settle bounded by :data:`CLEANUP_SECONDS`.
"""

from __future__ import annotations

import collections
import functools
import heapq
import logging
import math
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel

from ..._policy._jobs import Decision, HandlerOutcome, HeartbeatSchedule, Slots, decide
from ...nursery._child import ChildContext, current_child
from ...nursery._errors import describe, unwrap_group
from ...supervisor import ChildSpec
from ..logs._redact import Redactor
from ._driver import Delivery, JobDriver, Settle
from ._envelope import build_dead_letter, format_failure
from ._stats import JobStats

if TYPE_CHECKING:
    # Only for annotations: _jobs imports this module to build the consumers' specs.
    from ._jobs import JobSpec

log = logging.getLogger("megatrio.jobs")

FETCH_TIMEOUT_SECONDS = 2.0
"""How long one fetch waits for a first delivery; a consumer that found nothing fetches again
at once, so this only bounds how stale an idle consumer's view can get."""
CLEANUP_SECONDS = 5.0
"""Bound on the shielded final settle (and on each in-flight settle call a cancellation
lands on): the engine gets this long to hear about the last acks and releases."""


def consumer_spec(
    spec: JobSpec,
    driver: JobDriver,
    *,
    redactor: Redactor | None = None,
    shutdown_seconds: float = 30.0,
    fetch_timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
    stats: JobStats | None = None,
) -> ChildSpec:
    """The :class:`ChildSpec` of job *spec*'s consumer on *driver*, named after the job; every
    run of it counts into *stats*."""
    target = functools.partial(
        run_consumer,
        spec,
        driver,
        redactor=redactor,
        fetch_timeout_seconds=fetch_timeout_seconds,
        stats=stats,
    )
    return ChildSpec(spec.name, target, shutdown_seconds=shutdown_seconds)


async def run_consumer(
    spec: JobSpec,
    driver: JobDriver,
    *,
    redactor: Redactor | None = None,
    fetch_timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
    stats: JobStats | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Consume job *spec* from *driver* until stopped (or cancelled); see the module docs.

    Reports started once it is about to fetch. Returns after a graceful stop, once every
    in-flight handler finished and was settled. Outside a supervised child it runs until
    cancelled; cancelling it naks (delay 0) every delivery whose handler had not finished.

    Raises:
        Exception: what the driver's ``fetch`` or ``settle`` raised.
        megatrio._policy._jobs.SlotOverflow: the driver returned more than was asked.
    """
    consumer = _Consumer(
        spec, driver, redactor or Redactor(), fetch_timeout_seconds, stats or JobStats()
    )
    await consumer.run(task_status)


class _Consumer:
    def __init__(
        self,
        spec: JobSpec,
        driver: JobDriver,
        redactor: Redactor,
        fetch_timeout: float,
        stats: JobStats,
    ) -> None:
        self.spec = spec
        self.driver = driver
        self.redactor = redactor
        self.fetch_timeout = fetch_timeout
        settings = spec.settings
        self.slots = Slots(settings.concurrency)
        self.schedule = HeartbeatSchedule(
            ack_wait_seconds=settings.ack_wait_seconds,
            max_in_progress_seconds=settings.max_in_progress_seconds,
        )
        self.ctx: ChildContext | None = None
        # Invariant: a delivery is in `unsettled` from its fetch until its one final settle
        # (ack, nak or term) is queued in `pending`; the final cleanup naks exactly those.
        self.unsettled: dict[int, Delivery] = {}
        self.pending: list[Settle] = []
        self.tokens = 0
        self.stop_requested = False
        self.fetch_scope: anyio.CancelScope | None = None
        self.settle_wake = anyio.Event()
        self.slot_freed = anyio.Event()
        self.beating: dict[int, tuple[Delivery, float]] = {}
        """Deliveries whose handler runs, with when it started: token -> (delivery, start)."""
        self.beats: list[tuple[float, int, int]] = []
        """Heap of (due, token, beat number); entries of finished handlers are skipped."""
        self.beat_wake = anyio.Event()
        self.queued: collections.deque[tuple[int, Delivery]] = collections.deque()
        """Fetched deliveries waiting for a worker (their tokens are in `unsettled`)."""
        self.workers = 0
        self.free_awake = 0
        """Workers not in a handler and not parked: each takes from `queued` before parking."""
        self.parked: collections.deque[anyio.Event] = collections.deque()
        self.stats = stats
        # Shared with the job's stats: they outlive this run of the consumer.
        self.counts = stats.counts

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        self.ctx = current_child()
        self._annotate()
        try:
            async with anyio.create_task_group() as service:
                service.start_soon(self._settler)
                service.start_soon(self._heartbeats)
                if self.ctx is not None:
                    service.start_soon(self._watch_stop, self.ctx)
                async with anyio.create_task_group() as handlers:
                    task_status.started()
                    await self._fetch_loop(handlers)
                # Every handler has finished and queued its settle; the cleanup sends them.
                service.cancel_scope.cancel()
        finally:
            await self._cleanup()
            self.stats.in_flight = 0

    async def _fetch_loop(self, handlers: anyio.abc.TaskGroup) -> None:
        job = self.spec.name
        while not self.stop_requested:
            if not self.slots.should_fetch():
                await self.slot_freed.wait()
                self.slot_freed = anyio.Event()
                continue
            asked = self.slots.to_fetch()
            deliveries: list[Delivery] = []
            with anyio.CancelScope() as self.fetch_scope:
                if self.stop_requested:
                    break
                deliveries = await self.driver.fetch(job, asked, timeout_seconds=self.fetch_timeout)
            self.fetch_scope = None
            if not deliveries:
                # Cancelled by the stop, or nothing came within the timeout.
                continue
            self.slots.take(asked, len(deliveries))
            for delivery in deliveries:
                self.tokens += 1
                self.unsettled[self.tokens] = delivery
                self.queued.append((self.tokens, delivery))
            if self.stop_requested:
                # Came back as the stop arrived: released at once, unstarted.
                self._release_queued()
            else:
                self._wake_worker(handlers)
            self._annotate()
        self._release_queued()
        # Parked workers see the stop and return; busy ones return after their handler.
        while self.parked:
            self.free_awake += 1
            self.parked.popleft().set()

    async def _watch_stop(self, ctx: ChildContext) -> None:
        await ctx.wait_stopping()
        self.stop_requested = True
        if self.fetch_scope is not None:
            self.fetch_scope.cancel()
        self._release_queued()

    # -- workers --------------------------------------------------------------------------------

    def _wake_worker(self, handlers: anyio.abc.TaskGroup) -> None:
        """Keep the invariant (module docstring): a delivery is queued, so make sure a free
        worker is awake — one parked, or a new one while there are fewer than the slots.
        There is always room for one: every queued delivery holds a slot, so busy workers
        are fewer than the slots."""
        if not self.queued or self.free_awake:
            return
        self.free_awake += 1
        if self.parked:
            self.parked.popleft().set()
        else:
            self.workers += 1
            handlers.start_soon(self._worker, handlers)

    async def _worker(self, handlers: anyio.abc.TaskGroup) -> None:
        # Counted in free_awake by whoever woke or spawned it.
        while True:
            while self.queued:
                token, delivery = self.queued.popleft()
                self.free_awake -= 1
                self._wake_worker(handlers)  # more may wait behind this one
                await self._handle(token, delivery)
                self.free_awake += 1
            self.free_awake -= 1
            if self.stop_requested:
                return
            wake = anyio.Event()
            self.parked.append(wake)
            await wake.wait()  # the waker counted this worker in free_awake again

    def _release_queued(self) -> None:
        while self.queued:
            token, _ = self.queued.popleft()
            self._release(token)
            self.slots.release()
        self.slot_freed.set()

    # -- one delivery ---------------------------------------------------------------------------

    async def _handle(self, token: int, delivery: Delivery) -> None:
        try:
            outcome, error = await self._run_handler(token, delivery)
            decision = decide(self.spec.settings, delivery.delivery, outcome)
            if error is not None:
                self._log_failure(delivery, error, decision)
            if decision.kind == "dead_letter":
                await self._dead_letter(token, delivery, decision, error)
            else:
                self._settle(token, Settle(decision.kind, delivery, decision.delay_seconds))
        finally:
            # Also on cancellation: the delivery stays in `unsettled` and is nak'd by the
            # cleanup, but its slot is free either way.
            self.slots.release()
            self.slot_freed.set()
            self._annotate()

    async def _run_handler(
        self, token: int, delivery: Delivery
    ) -> tuple[HandlerOutcome, BaseException | None]:
        try:
            payload = self.spec.codec.decode(delivery.payload)
        except Exception as exc:
            return HandlerOutcome.UNDECODABLE, exc
        # The heartbeat of this delivery lasts exactly as long as its handler runs.
        self._beat_from(token, delivery, anyio.current_time())
        try:
            await self.spec.handler(payload)
        except Exception as exc:
            error = unwrap_group(exc)
            kind = (
                HandlerOutcome.NO_RETRY
                if isinstance(error, self.spec.no_retry)
                else HandlerOutcome.FAILED
            )
            return kind, error
        finally:
            self.beating.pop(token, None)
        return HandlerOutcome.RETURNED, None

    # -- heartbeats: one task for every delivery in progress --------------------------------
    # A task (and its cancellation) per delivery cost more than the rest of a trivial job.

    def _beat_from(self, token: int, delivery: Delivery, started_at: float) -> None:
        self.beating[token] = (delivery, started_at)
        self._schedule_beat(token, started_at, 1)

    def _schedule_beat(self, token: int, started_at: float, beat: int) -> None:
        due = self.schedule.beat_at(started_at, beat)
        if due is None:
            return
        earliest = self.beats[0][0] if self.beats else math.inf
        heapq.heappush(self.beats, (due, token, beat))
        if due < earliest:
            self.beat_wake.set()

    async def _heartbeats(self) -> None:
        while True:
            now = anyio.current_time()
            while self.beats and self.beats[0][0] <= now:
                _, token, beat = heapq.heappop(self.beats)
                entry = self.beating.get(token)
                if entry is None:
                    continue  # its handler has returned
                delivery, started_at = entry
                self.pending.append(Settle("progress", delivery))
                self.settle_wake.set()
                self._schedule_beat(token, started_at, beat + 1)
            # Drop the entries of handlers that have returned, so the heap stays bounded by
            # the deliveries in progress.
            while self.beats and self.beats[0][1] not in self.beating:
                heapq.heappop(self.beats)
            wake = self.beat_wake = anyio.Event()
            with anyio.move_on_at(self.beats[0][0] if self.beats else math.inf):
                await wake.wait()

    async def _dead_letter(
        self, token: int, delivery: Delivery, decision: Decision, error: BaseException | None
    ) -> None:
        assert decision.reason is not None
        letter = build_dead_letter(delivery, decision.reason, error, redactor=self.redactor)
        try:
            await self.driver.dead_letter(letter)
        except Exception as exc:
            # Not stored, so not termed: released for a later delivery to try again (the
            # engine's max_deliver still bounds it).
            log.error(
                "job %s: could not store dead letter of message %d: %s",
                delivery.job,
                delivery.sequence,
                self.redactor.scrub(describe(exc)),
            )
            self._settle(token, Settle("nak", delivery, 0.0))
            return
        self.counts["dead_lettered"] += 1
        self._settle(token, Settle("term", delivery))

    # -- settling -------------------------------------------------------------------------------

    def _settle(self, token: int, action: Settle) -> None:
        # The one final settle of this delivery (see the invariant in __init__).
        del self.unsettled[token]
        self.pending.append(action)
        self.settle_wake.set()
        if action.kind == "ack":
            self.counts["acked"] += 1
        elif action.kind == "term":
            self.counts["termed"] += 1
        else:
            self.counts["retried"] += 1

    def _release(self, token: int) -> None:
        delivery = self.unsettled.pop(token)
        self.pending.append(Settle("nak", delivery, 0.0))
        self.settle_wake.set()
        self.counts["released"] += 1

    async def _settler(self) -> None:
        while True:
            await self.settle_wake.wait()
            self.settle_wake = anyio.Event()
            # One round for the other handlers finishing now to join this batch.
            await anyio.lowlevel.checkpoint()
            batch, self.pending = self.pending, []
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[Settle]) -> None:
        # Shielded: a call cut off midway would leave unknown which settles the engine got,
        # and sending them again could ack a message twice.
        with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
            await self.driver.settle(batch)

    async def _cleanup(self) -> None:
        for token in list(self.unsettled):
            self._release(token)
        batch, self.pending = self.pending, []
        if batch:
            try:
                await self._send(batch)
            except Exception as exc:
                # The engine redelivers these after their ack wait: nothing is lost.
                log.warning(
                    "job %s: the last %d settles were not sent: %s",
                    self.spec.name,
                    len(batch),
                    self.redactor.scrub(describe(exc)),
                )
        self._annotate()

    # -- reporting ------------------------------------------------------------------------------

    def _annotate(self) -> None:
        self.stats.in_flight = self.slots.in_use
        if self.ctx is not None:
            self.ctx.annotate(in_flight=self.slots.in_use, **self.counts)

    def _log_failure(self, delivery: Delivery, error: BaseException, decision: Decision) -> None:
        level = logging.ERROR if decision.kind == "dead_letter" else logging.WARNING
        if not log.isEnabledFor(level):
            return
        if decision.kind == "dead_letter":
            then = f"dead-lettered ({decision.reason})"
        else:
            then = f"retrying in {decision.delay_seconds:g} s"
        # The traceback is formatted and redacted here, once, so it is masked whatever
        # handlers the logging has; megatrio's pipeline reuses record.exc_text.
        record = log.makeRecord(
            log.name,
            level,
            __file__,
            0,
            "job %s: message %d delivery %d failed: %s; %s",
            (
                delivery.job,
                delivery.sequence,
                delivery.delivery,
                self.redactor.scrub(describe(error)),
                then,
            ),
            (type(error), error, error.__traceback__),
            "_log_failure",
        )
        record.exc_text = format_failure(error, self.redactor)
        log.handle(record)
