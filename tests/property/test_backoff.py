"""Properties of Backoff, and of the default backoff together with the default window."""

from __future__ import annotations

import math

from hypothesis import example, given, note
from hypothesis import strategies as st

from megatrio import Backoff, RestartWindow
from tests.property.strategies import (
    attempts,
    backoffs,
    huge_attempts,
    rand_draws,
    reference_base_delay,
    seconds_or_inf,
)

REL = 1e-9  # float slack between the implementation's pow and the reference's log/exp


@given(backoffs(), rand_draws)
def test_attempt_zero_is_immediate(backoff: Backoff, rand: float) -> None:
    assert backoff.delay_seconds(0, rand) == 0.0


@given(backoffs(), attempts, rand_draws)
@example(Backoff(initial_seconds=0.0, multiplier=2.0, max_seconds=5.0, jitter=0.0), 1, 0.0)
def test_delay_is_within_the_jitter_band_and_the_cap(
    backoff: Backoff, attempt: int, rand: float
) -> None:
    delay = backoff.delay_seconds(attempt, rand)
    base = reference_base_delay(backoff, attempt)
    jitter = backoff.jitter
    note(f"delay={delay!r} reference base={base!r}")
    assert 0.0 <= delay <= backoff.max_seconds
    if math.isinf(base):
        # An infinite base scaled by a factor of 0 (jitter 1, rand 0) has no sensible value;
        # any other factor keeps it infinite.
        assert delay == math.inf or jitter == 1.0
        return
    low = base * (1.0 - jitter)
    high = min(backoff.max_seconds, base * (1.0 + jitter))
    assert low * (1 - REL) <= delay <= high * (1 + REL)


@given(
    backoffs(jitter=st.just(0.0)),
    st.lists(attempts, min_size=2, max_size=6),
    rand_draws,
)
def test_without_jitter_delays_never_decrease(
    backoff: Backoff, attempt_numbers: list[int], rand: float
) -> None:
    ordered = sorted({0, *attempt_numbers})
    delays = [backoff.delay_seconds(attempt, rand) for attempt in ordered]
    note(f"{list(zip(ordered, delays, strict=True))}")
    assert delays == sorted(delays)


@given(backoffs(), huge_attempts, rand_draws)
def test_huge_attempts_never_overflow(backoff: Backoff, attempt: int, rand: float) -> None:
    delay = backoff.delay_seconds(attempt, rand)  # must not raise OverflowError
    assert 0.0 <= delay <= backoff.max_seconds


@given(
    backoffs(multiplier=st.integers(min_value=1, max_value=10)),
    st.integers(min_value=1, max_value=20_000),
    rand_draws,
)
def test_integer_multipliers_behave_like_floats(
    backoff: Backoff, attempt: int, rand: float
) -> None:
    as_float = Backoff(
        initial_seconds=backoff.initial_seconds,
        multiplier=float(backoff.multiplier),
        max_seconds=backoff.max_seconds,
        jitter=backoff.jitter,
        stable_seconds=backoff.stable_seconds,
    )
    delay = backoff.delay_seconds(attempt, rand)
    assert 0.0 <= delay <= backoff.max_seconds
    assert math.isclose(delay, as_float.delay_seconds(attempt, rand), rel_tol=REL)


@given(backoffs(), st.integers(min_value=0, max_value=10**6), seconds_or_inf)
@example(Backoff(stable_seconds=5.0), 7, 5.0)
def test_a_stable_run_resets_the_attempt_and_only_a_stable_run(
    backoff: Backoff, attempt: int, uptime: float
) -> None:
    expected = 0 if uptime >= backoff.stable_seconds else attempt
    assert backoff.attempt_after(attempt, uptime) == expected


def _simulate_crash_loop(
    backoff: Backoff, window: RestartWindow, crash_after: float, rands: list[float]
) -> tuple[int | None, list[float]]:
    """Replay the supervisor's bookkeeping for a child that crashes *crash_after* s after each
    start; return the 1-based crash number at which it gives up (None if it never does within
    ``len(rands)`` crashes) and the crash times."""
    start = 0.0
    attempt = 0
    crash_times: list[float] = []
    for number, rand in enumerate(rands, start=1):
        crashed_at = start + crash_after
        crash_times.append(crashed_at)
        if not window.allow_restart(crashed_at, crash_after):
            return number, crash_times
        attempt = backoff.attempt_after(attempt, crash_after)
        delay = backoff.delay_seconds(attempt, rand)
        attempt += 1
        start = crashed_at + delay
    return None, crash_times


@given(st.lists(rand_draws, min_size=10, max_size=10))
@example([0.0] * 10)
@example([math.nextafter(1.0, 0.0)] * 10)
def test_defaults_give_up_on_a_child_crashing_0_1_s_after_every_start(rands: list[float]) -> None:
    """The issue's requirement: the default backoff must not outlast the default window."""
    window = RestartWindow(3, 5.0)
    gave_up_at, crash_times = _simulate_crash_loop(Backoff(), window, 0.1, rands)
    note(f"crash times: {crash_times}")
    # Restarted after 0, ~0.1 and ~0.2 s: the 4th crash is the 4th within 5 s.
    assert gave_up_at == window.max_restarts + 1
    assert crash_times[-1] - crash_times[0] < window.period_seconds


@given(
    st.floats(min_value=1e-3, max_value=1.0),
    st.lists(rand_draws, min_size=10, max_size=10),
)
def test_defaults_give_up_on_any_rapid_crash_loop(crash_after: float, rands: list[float]) -> None:
    """Up to 1 s of uptime a crash loop still exhausts the default window at the 4th crash
    (worst case 4 * 1.0 + 1.2 * (0.1 + 0.2) = 4.36 s < 5 s)."""
    window = RestartWindow(3, 5.0)
    gave_up_at, crash_times = _simulate_crash_loop(Backoff(), window, crash_after, rands)
    note(f"crash times: {crash_times}")
    assert gave_up_at == window.max_restarts + 1
