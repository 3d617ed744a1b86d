"""The alert dispatcher: :class:`AlertDispatcher` and its supervised child
:func:`serve_alerts`, which throttle (:class:`~megatrio._policy._throttle.TokenBucket`), send
through an :class:`~._alert.AlertSender`, honour ``Retry-After``, keep failed sends in a
:class:`~megatrio.services.stores._retry_queue.RetryQueue` and report every drop.

Each dispatch round that saw drops logs them at WARNING and sends a summary alert ("N
alert(s) dropped since the last report"), which bypasses the throttle. This module logs to
``megatrio.alerts``, which the handler ignores, at WARNING at most.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Final, final

import anyio
import anyio.abc
import attrs

from ..._policy._checks import check_seconds
from ..._policy._throttle import TokenBucket
from ..._samples import Sample, counter_sample, gauge_sample
from ...nursery._timer import run_every
from ..stores._retry_queue import DROP_REASONS, QueuedEntry, RetryQueue
from ._alert import AlertSender
from ._handler import AlertHandler

log = logging.getLogger("megatrio.alerts")

DROP_THROTTLED: Final = "throttled"
"""The throttle refused it."""
DROP_QUEUE_ERROR: Final = "queue_error"
"""Sending failed and it could not be written to the retry queue either."""

DEFAULT_ALERTS_PER_MINUTE: Final = 20
"""The default throttle: Telegram's own limit for messages to one group."""


@attrs.frozen(kw_only=True)
class DispatchReport:
    """What one :meth:`AlertDispatcher.dispatch` round did."""

    sent: int = 0
    """New alerts (and drop summaries) sent this round."""
    queued: int = 0
    """New alerts written to the retry queue (the send failed, or the destination was
    blocked by a ``Retry-After``, or an earlier send of this round had failed)."""
    retried: int = 0
    """Queued alerts delivered by this round's drain."""
    dropped: Mapping[str, int] = attrs.field(factory=dict)
    """Drops reported this round, by reason."""


@final
class AlertDispatcher:
    """Sends what an :class:`AlertHandler` buffers through an :class:`AlertSender`.

    Run :meth:`serve` as a supervised child. Every *interval_seconds* a round (:meth:`dispatch`)
    takes the buffered alerts, passes each through *throttle* (``None``, the default, means
    :data:`DEFAULT_ALERTS_PER_MINUTE` per minute), retries queued alerts when
    *retry_interval_seconds* have passed, sends the new ones, and reports drops. A failed send
    goes to *queue* (one queue directory per destination) and the rest of the round is not
    sent but queued too, so a dead destination costs one timeout per round, not one per alert.

    ``Retry-After`` (429/503) is honoured: nothing is sent to the destination until it has
    passed; meanwhile new alerts go to the queue, which is drained on the first round after.
    Times come from the event loop's clock.
    """

    def __init__(
        self,
        handler: AlertHandler,
        sender: AlertSender,
        *,
        queue: RetryQueue,
        throttle: TokenBucket | None = None,
        interval_seconds: float = 2.0,
        retry_interval_seconds: float = 30.0,
        name: str = "megatrio",
    ) -> None:
        self.handler = handler
        self.sender = sender
        self.queue = queue
        self.throttle = (
            TokenBucket.per_period(DEFAULT_ALERTS_PER_MINUTE, 60.0)
            if throttle is None
            else throttle
        )
        self.interval_seconds = check_seconds(
            "interval_seconds", interval_seconds, allow_zero=False, allow_inf=False
        )
        self.retry_interval_seconds = check_seconds(
            "retry_interval_seconds", retry_interval_seconds, allow_zero=False
        )
        self.name = name
        self._blocked_until = -math.inf
        self._next_retry_at = -math.inf
        self._round_failed = False
        # Drops not yet reported in a summary alert: kept until a summary is sent or queued.
        self._unreported: collections.Counter[str] = collections.Counter()
        self.drops: collections.Counter[str] = collections.Counter()
        """Every drop reported so far, by reason."""
        self.sent = 0
        """Alerts (and drop summaries) delivered so far, queued ones included."""
        self.queue_depth: int | None = None
        """Entries pending in the retry queue when this dispatcher last counted them: at its
        first round and after every round that drained or queued (``None`` before)."""

    def samples(self) -> Iterator[Sample]:
        """The dispatcher's metrics (a source for ``Runtime.metric_sources``): sent, dropped by
        reason (``throttled`` is the throttle's), and its retry queue's depth and drops."""
        yield counter_sample(
            "megatrio_alerts_sent", "alerts delivered to the destination", self.sent
        )
        for reason, count in sorted(self.drops.items()):
            yield counter_sample(
                "megatrio_alerts_dropped", "alerts dropped, by reason", count, reason=reason
            )
        queue = "alerts"
        if self.queue_depth is not None:
            yield gauge_sample(
                "megatrio_retry_queue_depth",
                "entries pending in the retry queue when last counted",
                self.queue_depth,
                queue=queue,
            )
        for reason, count in sorted(self.queue.drops.items()):
            yield counter_sample(
                "megatrio_retry_queue_drops",
                "retry-queue entries dropped, by reason",
                count,
                queue=queue,
                reason=reason,
            )

    @property
    def blocked_until(self) -> float:
        """Event-loop time before which nothing is sent (``-inf`` when not blocked)."""
        return self._blocked_until

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run a round every ``interval_seconds`` until cancelled or asked to stop.

        A supervised child: reports ready at once. When asked to stop it runs one last round,
        so alerts logged during shutdown are sent or queued; the child's shutdown deadline
        bounds it, and a round cut short queues what it had not sent (see :meth:`dispatch`).
        """
        await run_every(self.interval_seconds, None, self.dispatch, task_status=task_status)
        await self.dispatch()

    async def dispatch(self) -> DispatchReport:
        """One round: take, throttle, retry the queue, send, report drops.

        A checkpoint. Cancelled midway, the alerts of the round that were not yet sent are
        appended to the retry queue (shielded, bounded to a few seconds), and the drain in
        progress, if any, leaves its entries for the next one; an alert whose send was
        interrupted may reach the destination twice.
        """
        self._round_failed = False
        now = anyio.current_time()
        alerts, buffer_drops = self.handler.take()
        self._unreported.update(buffer_drops)
        outbox: list[str] = []
        for alert in alerts:
            if self.throttle.try_acquire(now):
                outbox.append(alert.text)
            else:
                self._unreported[DROP_THROTTLED] += 1
        retried = 0
        sent = queued = 0
        try:
            if now >= self._next_retry_at and not self._blocked(now):
                self._next_retry_at = now + self.retry_interval_seconds
                retried = await self._drain()
            reported = self._take_unreported()
            if reported:
                outbox.append(self._summary_text(reported))
            while outbox:
                text = outbox[0]
                if self._round_failed or self._blocked(anyio.current_time()):
                    break
                if await self._send(text):
                    sent += 1
                    self.sent += 1
                else:
                    self._round_failed = True
                    break
                outbox.pop(0)
            if outbox:
                queued = len(outbox)
                await self._enqueue(outbox)
                outbox = []
            if self.queue_depth is None or retried or queued or self.queue_depth:
                await self._count_queue()
        finally:
            if outbox:
                with anyio.move_on_after(5, shield=True):
                    await self._enqueue(outbox)
        return DispatchReport(sent=sent, queued=queued, retried=retried, dropped=reported)

    async def _count_queue(self) -> None:
        try:
            self.queue_depth = await self.queue.count_pending()
        except OSError as exc:
            log.warning(
                "alerts %s: retry queue count failed: %s: %s", self.name, type(exc).__name__, exc
            )

    async def _drain(self) -> int:
        try:
            summary = await self.queue.drain(self._deliver_queued)
        except OSError as exc:
            # The queue's entries stay on disk for a later round; new alerts still go out.
            log.warning(
                "alerts %s: retry queue drain failed: %s: %s", self.name, type(exc).__name__, exc
            )
            return 0
        self._unreported.update(summary.dropped)
        return summary.delivered

    def _blocked(self, now: float) -> bool:
        return now < self._blocked_until

    def _take_unreported(self) -> dict[str, int]:
        reported = {reason: n for reason, n in self._unreported.items() if n}
        self._unreported.clear()
        if reported:
            self.drops.update(reported)
            log.warning(
                "alerts %s: dropped %s since the last report",
                self.name,
                ", ".join(f"{n} {reason}" for reason, n in sorted(reported.items())),
            )
        return reported

    def _summary_text(self, reported: Mapping[str, int]) -> str:
        total = sum(reported.values())
        details = ", ".join(
            f"{'queue ' if reason in DROP_REASONS else ''}{reason}={n}"
            for reason, n in sorted(reported.items())
        )
        return f"{self.name}: {total} alert(s) dropped since the last report ({details})"

    async def _send(self, text: str) -> bool:
        result = await self.sender.send(text)
        if result.ok:
            return True
        if result.retry_after_seconds is not None:
            until = anyio.current_time() + result.retry_after_seconds
            self._blocked_until = max(self._blocked_until, until)
            # The queue is drained on the first round after the block lifts.
            self._next_retry_at = min(self._next_retry_at, self._blocked_until)
        log.warning("alerts %s: send failed: %s", self.name, result.error)
        return False

    async def _deliver_queued(self, entry: QueuedEntry) -> bool:
        if self._round_failed or self._blocked(anyio.current_time()):
            return False
        payload = entry.payload
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            log.warning("alerts %s: skipping a queued entry without text", self.name)
            return True  # nothing to send, ever: retrying would only cycle it until too_old
        if await self._send(text):
            self.sent += 1
            return True
        self._round_failed = True
        return False

    async def _enqueue(self, texts: list[str]) -> None:
        try:
            await self.queue.append_many([{"text": text} for text in texts])
        except (OSError, ValueError, TypeError) as exc:
            self._unreported[DROP_QUEUE_ERROR] += len(texts)
            log.warning(
                "alerts %s: could not queue %d alert(s): %s: %s",
                self.name,
                len(texts),
                type(exc).__name__,
                exc,
            )

    def __repr__(self) -> str:
        return f"<AlertDispatcher {self.name!r} to {self.sender.destination}>"


async def serve_alerts(
    handler: AlertHandler,
    sender: AlertSender,
    *,
    queue: RetryQueue,
    throttle: TokenBucket | None = None,
    interval_seconds: float = 2.0,
    retry_interval_seconds: float = 30.0,
    name: str = "megatrio",
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run an :class:`AlertDispatcher` as a supervised child; see :meth:`AlertDispatcher.serve`.

    The sender is closed when this returns or is cancelled.
    """
    dispatcher = AlertDispatcher(
        handler,
        sender,
        queue=queue,
        throttle=throttle,
        interval_seconds=interval_seconds,
        retry_interval_seconds=retry_interval_seconds,
        name=name,
    )
    await serve_dispatcher(dispatcher, task_status=task_status)


async def serve_dispatcher(
    dispatcher: AlertDispatcher,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run *dispatcher* as a supervised child (see :meth:`AlertDispatcher.serve`), closing its
    sender when this returns or is cancelled."""
    try:
        await dispatcher.serve(task_status=task_status)
    finally:
        await dispatcher.sender.aclose()
