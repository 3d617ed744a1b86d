"""Sans-IO decisions of a job consumer: what to do with a delivery once its handler is done,
how many deliveries a consumer may fetch, and when to tell the engine a handler is still busy.

Nothing here waits or reads a clock: time is an argument, so Hypothesis drives these directly
(``tests/property/test_job_policy.py``).
"""

from __future__ import annotations

import enum
from typing import Literal, Protocol, final

import attrs

from ._checks import check_count, check_seconds


class RetrySettings(Protocol):
    """What the retry decision reads of a job's settings (``megatrio.JobSettings`` has it)."""

    @property
    def max_deliver(self) -> int: ...

    @property
    def retry_delays(self) -> tuple[float, ...]: ...


class HandlerOutcome(enum.Enum):
    """How one delivery's handling ended."""

    RETURNED = "returned"
    """The handler returned."""
    FAILED = "failed"
    """The handler raised an exception worth retrying."""
    NO_RETRY = "no retry"
    """The handler raised one of the job's ``no_retry`` exception types."""
    UNDECODABLE = "undecodable"
    """The payload could not be decoded: no handler ran."""


REASON_MAX_DELIVERIES = "max deliveries"
REASON_NO_RETRY = "no retry"
REASON_UNDECODABLE = "undecodable payload"
REASON_WORKER_LOST = "worker lost"


@attrs.frozen
class Decision:
    """What to do with a delivery: ``ack``; ``nak`` after *delay_seconds*; or ``dead_letter``
    (store the envelope with *reason* in the dead-letter queue, then ``term`` it)."""

    kind: Literal["ack", "nak", "dead_letter"]
    delay_seconds: float = 0.0
    reason: str | None = None


ACK = Decision("ack")


def retry_delay(retry_delays: tuple[float, ...], delivery: int) -> float:
    """The delay before the delivery after *delivery* (1 for the first): the table's entry
    ``delivery - 1``, its last entry once past its end, 0 for an empty table."""
    if not retry_delays:
        return 0.0
    return float(retry_delays[min(delivery - 1, len(retry_delays) - 1)])


def decide(settings: RetrySettings, delivery: int, outcome: HandlerOutcome) -> Decision:
    """The settle decision for delivery number *delivery* (1 for the first) ending in *outcome*.

    A returned handler is acked, whatever the delivery number. A decode failure and a
    ``no_retry`` error are dead-lettered at once: another delivery cannot change them. A
    retryable error is dead-lettered once *delivery* reached ``max_deliver`` (the engine would
    not deliver it again), else nak'd after :func:`retry_delay`.

    Raises:
        ValueError: *delivery* is not a positive integer.
    """
    check_count("delivery", delivery, minimum=1)
    if outcome is HandlerOutcome.RETURNED:
        return ACK
    if outcome is HandlerOutcome.UNDECODABLE:
        return Decision("dead_letter", reason=REASON_UNDECODABLE)
    if outcome is HandlerOutcome.NO_RETRY:
        return Decision("dead_letter", reason=REASON_NO_RETRY)
    if delivery >= settings.max_deliver:
        return Decision("dead_letter", reason=REASON_MAX_DELIVERIES)
    return Decision("nak", delay_seconds=retry_delay(settings.retry_delays, delivery))


class SlotOverflow(RuntimeError):
    """A fetch returned more deliveries than it asked for, or than there are free slots: the
    engine broke the contract that keeps a consumer within its concurrency."""


@final
class Slots:
    """The handler slots of one consumer: at most *concurrency* deliveries held at once.

    Invariant: ``0 <= in_use <= concurrency``; every method that would break it raises and
    changes nothing.
    """

    __slots__ = ("_in_use", "concurrency")

    def __init__(self, concurrency: int) -> None:
        self.concurrency = check_count("concurrency", concurrency, minimum=1)
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    def to_fetch(self) -> int:
        """How many deliveries the next fetch may ask for: the free slots (0 when full)."""
        return self.concurrency - self._in_use

    @property
    def refill_at(self) -> int:
        """Free slots worth a fetch while handlers still run: half the slots (at least one).
        Fetching again for every single slot freed would cost one engine round trip per
        message; waiting for half keeps batches large and the consumer at least half busy."""
        return max(1, self.concurrency // 2)

    def should_fetch(self) -> bool:
        """Whether to fetch now: no handler runs, or :attr:`refill_at` slots are free."""
        free = self.to_fetch()
        return free > 0 and (self._in_use == 0 or free >= self.refill_at)

    def take(self, asked: int, got: int) -> None:
        """Account *got* deliveries returned by a fetch that asked for *asked*.

        Raises:
            SlotOverflow: *got* exceeds *asked* or the free slots.
            ValueError: a negative count.
        """
        if asked < 0 or got < 0:
            raise ValueError(f"counts must be >= 0, got asked={asked}, got={got}")
        if got > asked or got > self.to_fetch():
            raise SlotOverflow(
                f"fetch returned {got} deliveries for {asked} asked and "
                f"{self.to_fetch()} free slots of {self.concurrency}"
            )
        self._in_use += got

    def release(self, count: int = 1) -> None:
        """Free *count* slots (their deliveries are done with).

        Raises:
            ValueError: more than are in use, or a negative count.
        """
        if count < 0 or count > self._in_use:
            raise ValueError(f"cannot release {count} slots with {self._in_use} in use")
        self._in_use -= count


HEARTBEATS_PER_ACK_WAIT = 3
"""Progress is signalled three times per ack wait: one late or lost signal still leaves a
third of the ack wait for the next one, and the engine sees little chatter."""


@attrs.frozen
class HeartbeatSchedule:
    """When to signal progress for a delivery whose handler started at *started_at*.

    Beat ``k`` (k >= 1) is due at ``started_at + k * interval_seconds``, with an interval of
    ``ack_wait_seconds / 3``. A beat at time ``t`` moves the engine's redelivery deadline from
    ``started_at + ack_wait`` to ``t + ack_wait``, an extension of ``t - started_at``; beats stop
    once that would exceed ``max_in_progress_seconds``, so a handler stuck forever holds its
    delivery at most that long (plus one ack wait) before it is delivered again.
    """

    ack_wait_seconds: float = attrs.field()
    max_in_progress_seconds: float = attrs.field()

    @ack_wait_seconds.validator
    def _check_ack_wait(self, attribute: object, value: float) -> None:
        check_seconds("ack_wait_seconds", value, allow_zero=False, allow_inf=False)

    @max_in_progress_seconds.validator
    def _check_cap(self, attribute: object, value: float) -> None:
        check_seconds("max_in_progress_seconds", value)

    @property
    def interval_seconds(self) -> float:
        return self.ack_wait_seconds / HEARTBEATS_PER_ACK_WAIT

    def beat_at(self, started_at: float, beat: int) -> float | None:
        """When beat number *beat* (1 for the first) is due, or None: the cap allows no more
        (nor any later beat).

        Raises:
            ValueError: *beat* is not a positive integer.
        """
        check_count("beat", beat, minimum=1)
        extension = beat * self.interval_seconds
        if extension > self.max_in_progress_seconds:
            return None
        return started_at + extension
