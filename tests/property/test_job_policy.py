"""The job consumer's sans-IO decisions (``megatrio/_policy/_jobs.py``) against naive models.

- retry: a message's whole life, delivery after delivery, for any sequence of outcomes — the
  delays follow the table, it is never delivered more than ``max_deliver`` times, and it ends
  in exactly one terminal state (acked or dead-lettered) with the reason the contract names;
- slots: a state machine of fetches and releases — free slots never negative, a fetch never
  beyond them, the concurrency never exceeded, an over-full fetch refused;
- heartbeats: beats every ack_wait / 3, never extending a delivery past the cap.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from megatrio._policy._jobs import (
    HandlerOutcome,
    HeartbeatSchedule,
    SlotOverflow,
    Slots,
    decide,
    retry_delay,
)
from megatrio.services.jobs._driver import JobSettings

delays = st.lists(
    st.floats(min_value=0, max_value=3600, allow_nan=False), min_size=0, max_size=5
).map(tuple)
settings_st = st.builds(
    JobSettings, name=st.just("job"), max_deliver=st.integers(1, 12), retry_delays=delays
)
outcomes = st.lists(st.sampled_from(HandlerOutcome), min_size=1, max_size=20)


def reference_delay(table: tuple[float, ...], delivery: int) -> float:
    # The table read literally: entry n-1 before delivery n+1, the last one repeating.
    if not table:
        return 0.0
    return table[delivery - 1] if delivery - 1 < len(table) else table[-1]


@given(settings_st, outcomes)
def test_a_message_life_follows_the_table_and_ends_in_exactly_one_terminal_state(
    settings: JobSettings, script: list[HandlerOutcome]
) -> None:
    # The engine redelivers after every nak; the script says how each delivery ends (cycled,
    # so any script is long enough).
    delivery = 0
    acked = dead = False
    waited: list[float] = []
    reason = None
    while not (acked or dead):
        delivery += 1
        assert delivery <= settings.max_deliver
        outcome = script[(delivery - 1) % len(script)]
        decision = decide(settings, delivery, outcome)
        if decision.kind == "ack":
            assert outcome is HandlerOutcome.RETURNED
            acked = True
        elif decision.kind == "dead_letter":
            dead, reason = True, decision.reason
        else:
            assert decision.kind == "nak"
            assert outcome is HandlerOutcome.FAILED
            assert delivery < settings.max_deliver
            waited.append(decision.delay_seconds)
    assert acked != dead
    assert waited == [reference_delay(settings.retry_delays, n) for n in range(1, delivery)]
    last = script[(delivery - 1) % len(script)]
    if dead:
        expected = {
            HandlerOutcome.UNDECODABLE: "undecodable payload",
            HandlerOutcome.NO_RETRY: "no retry",
            HandlerOutcome.FAILED: "max deliveries",
        }[last]
        assert reason == expected
        if last is HandlerOutcome.FAILED:
            assert delivery == settings.max_deliver


@given(settings_st, st.integers(1, 50))
def test_success_is_acked_on_any_delivery(settings: JobSettings, delivery: int) -> None:
    assert decide(settings, delivery, HandlerOutcome.RETURNED).kind == "ack"


@given(delays, st.integers(1, 50))
def test_retry_delay_is_the_table_entry_with_the_last_repeating(
    table: tuple[float, ...], delivery: int
) -> None:
    assert retry_delay(table, delivery) == reference_delay(table, delivery)


def test_decide_rejects_a_delivery_number_below_one() -> None:
    with pytest.raises(ValueError, match="delivery must be >= 1"):
        decide(JobSettings("job"), 0, HandlerOutcome.FAILED)


class SlotMachine(RuleBasedStateMachine):
    """Slots driven by fetches that return up to what they asked (or, sometimes, more)."""

    def __init__(self) -> None:
        super().__init__()
        self.slots: Slots | None = None
        self.held = 0  # the model: deliveries being handled

    @precondition(lambda self: self.slots is None)
    @rule(concurrency=st.integers(1, 16))
    def create(self, concurrency: int) -> None:
        self.slots = Slots(concurrency)

    @precondition(lambda self: self.slots is not None)
    @rule(data=st.data())
    def fetch(self, data: st.DataObject) -> None:
        assert self.slots is not None
        asked = self.slots.to_fetch()
        assert asked == self.slots.concurrency - self.held
        got = data.draw(st.integers(0, asked), label="got")
        self.slots.take(asked, got)
        self.held += got

    @precondition(lambda self: self.slots is not None)
    @rule(extra=st.integers(1, 5))
    def overfull_fetch_is_refused(self, extra: int) -> None:
        assert self.slots is not None
        asked = self.slots.to_fetch()
        with pytest.raises(SlotOverflow):
            self.slots.take(asked, asked + extra)
        # Asking for more than is free is refused as well, even when the engine complied.
        if asked + extra <= self.slots.concurrency:
            with pytest.raises(SlotOverflow):
                self.slots.take(asked + extra, asked + extra)

    @precondition(lambda self: self.slots is not None and self.held > 0)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        assert self.slots is not None
        count = data.draw(st.integers(1, self.held), label="released")
        self.slots.release(count)
        self.held -= count

    @precondition(lambda self: self.slots is not None)
    @rule()
    def over_release_is_refused(self) -> None:
        assert self.slots is not None
        with pytest.raises(ValueError, match="cannot release"):
            self.slots.release(self.held + 1)

    @invariant()
    def within_bounds(self) -> None:
        if self.slots is None:
            return
        assert self.slots.in_use == self.held
        assert 0 <= self.slots.to_fetch() <= self.slots.concurrency
        assert self.slots.in_use <= self.slots.concurrency
        # Fetch when idle or when at least half the slots are free; never when full.
        free = self.slots.concurrency - self.held
        half = max(1, self.slots.concurrency // 2)
        assert self.slots.should_fetch() == (free > 0 and (self.held == 0 or free >= half))


TestSlots = SlotMachine.TestCase


@given(
    st.floats(min_value=0.5, max_value=600, allow_nan=False),
    st.floats(min_value=0, max_value=3600, allow_nan=False),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_heartbeats_come_every_third_of_the_ack_wait_up_to_the_cap(
    ack_wait: float, cap: float, started_at: float
) -> None:
    schedule = HeartbeatSchedule(ack_wait_seconds=ack_wait, max_in_progress_seconds=cap)
    beats: list[float] = []
    beat = 1
    while (due := schedule.beat_at(started_at, beat)) is not None:
        beats.append(due)
        beat += 1
        assert beat < 10**5, "an unbounded schedule for a finite cap"
    # Exactly the beats whose extension stays within the cap.
    expected = math.floor(cap / (ack_wait / 3))
    assert abs(len(beats) - expected) <= 1  # float rounding at the boundary only
    for n, due in enumerate(beats, start=1):
        assert n * (ack_wait / 3) <= cap  # the extension this beat grants
        assert due == started_at + n * (ack_wait / 3)
    # Between beats the delivery never goes a whole ack wait without a signal.
    points = [started_at, *beats]
    assert all(b - a < ack_wait for a, b in itertools.pairwise(points))
    # Once the cap refuses a beat, it refuses every later one.
    assert schedule.beat_at(started_at, beat + 1) is None
