"""Strategies and reference models shared by the property tests.

The reference models here are deliberately naive — a plain list, a log-space formula — so that
they are obviously right, and the optimised implementations are checked against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from hypothesis import strategies as st

from megatrio import Backoff

# -- the restart window ---------------------------------------------------------------------


class ReferenceWindow:
    """The restart-intensity rule as the contract states it, with no eviction at all.

    Every counted crash is kept forever; a question is answered by counting the counted crash
    times ``t`` with ``now - t < period_seconds`` (the same float expression the contract uses,
    so boundary cases are compared exactly).
    """

    def __init__(
        self, max_restarts: int, period_seconds: float, min_uptime_seconds: float | None
    ) -> None:
        self.max_restarts = max_restarts
        self.period_seconds = period_seconds
        self.min_uptime_seconds = min_uptime_seconds
        self.counted: list[float] = []

    def counts(self, uptime_seconds: float) -> bool:
        return self.min_uptime_seconds is None or uptime_seconds < self.min_uptime_seconds

    def in_window(self, now: float) -> int:
        return sum(1 for t in self.counted if now - t < self.period_seconds)

    def allow_restart(self, now: float, uptime_seconds: float) -> bool:
        if not self.counts(uptime_seconds):
            return True
        self.counted.append(now)
        return self.in_window(now) <= self.max_restarts


@dataclass(frozen=True)
class WindowParams:
    max_restarts: int
    period_seconds: float
    min_uptime_seconds: float | None

    def as_args(self) -> tuple[int, float, float | None]:
        return (self.max_restarts, self.period_seconds, self.min_uptime_seconds)


@dataclass(frozen=True)
class WindowEvent:
    """One thing that happens to a supervisor, at monotonic time *now*.

    ``crash`` calls the window (counted or not, depending on *uptime*); ``other_exit`` is
    another child's clean, unrestarted exit, which by contract never calls the window.
    """

    kind: Literal["crash", "other_exit"]
    now: float
    uptime: float


max_restarts_values = st.integers(min_value=0, max_value=5)

period_values = st.one_of(
    st.sampled_from([0.5, 1.0, 5.0, 10.0]),
    st.floats(min_value=1e-3, max_value=100.0),
    st.just(math.inf),
)

min_uptime_values = st.one_of(
    st.none(),
    st.sampled_from([0.0, 0.1, 1.0, 5.0]),
    st.floats(min_value=0.0, max_value=50.0),
    st.just(math.inf),
)


@st.composite
def window_params(draw: st.DrawFn) -> WindowParams:
    return WindowParams(draw(max_restarts_values), draw(period_values), draw(min_uptime_values))


def _time_steps(period: float) -> st.SearchStrategy[float]:
    """Gaps between events, biased towards sums that land exactly on window boundaries."""
    span = period * 3 if math.isfinite(period) else 100.0
    boundary = [period, period / 2, period / 4] if math.isfinite(period) else []
    return st.one_of(
        st.just(0.0),
        st.sampled_from([0.1, 1.0, *boundary]),
        st.floats(min_value=0.0, max_value=span),
    )


def _uptimes(min_uptime: float | None) -> st.SearchStrategy[float]:
    edges = [0.0] if min_uptime is None else [0.0, min_uptime]
    top = 10.0 if min_uptime is None or not math.isfinite(min_uptime) else 2 * min_uptime + 1
    return st.one_of(
        st.sampled_from(edges),
        st.floats(min_value=0.0, max_value=top),
        st.just(math.inf),
    )


@st.composite
def window_scenarios(
    draw: st.DrawFn, *, max_events: int = 40
) -> tuple[WindowParams, list[WindowEvent]]:
    """Window parameters and a sequence of events at non-decreasing times."""
    params = draw(window_params())
    now = draw(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e6)))
    events: list[WindowEvent] = []
    steps = _time_steps(params.period_seconds)
    uptimes = _uptimes(params.min_uptime_seconds)
    kinds = st.sampled_from(["crash", "crash", "crash", "other_exit"])
    for _ in range(draw(st.integers(min_value=0, max_value=max_events))):
        now += draw(steps)
        events.append(WindowEvent(draw(kinds), now, draw(uptimes)))
    return params, events


# -- backoff --------------------------------------------------------------------------------

seconds_or_inf = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1e3),
    st.floats(min_value=0.0, max_value=1e300),
    st.just(math.inf),
)


@st.composite
def backoffs(
    draw: st.DrawFn,
    *,
    jitter: st.SearchStrategy[float] | None = None,
    multiplier: st.SearchStrategy[float] | None = None,
) -> Backoff:
    if jitter is None:
        jitter = st.one_of(st.sampled_from([0.0, 0.2, 1.0]), st.floats(0.0, 1.0))
    if multiplier is None:
        multiplier = st.one_of(
            st.sampled_from([1.0, 1.5, 2.0, 10.0]),
            st.floats(min_value=1.0, max_value=1e6),
        )
    return Backoff(
        initial_seconds=draw(seconds_or_inf),
        multiplier=draw(multiplier),
        max_seconds=draw(seconds_or_inf),
        jitter=draw(jitter),
        stable_seconds=draw(seconds_or_inf),
    )


rand_draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
"""What ``random.random()`` can return: uniform in ``[0, 1)``."""

attempts = st.one_of(
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=1, max_value=10_000),
    st.integers(min_value=1, max_value=2**64),
)
"""Restart attempt numbers >= 1, from the first backed-off restart to absurdly many."""

huge_attempts = st.one_of(
    st.integers(min_value=1_000, max_value=2**64),
    st.integers(min_value=2**64, max_value=10**400),
)


def reference_base_delay(backoff: Backoff, attempt: int) -> float:
    """``min(max_seconds, initial_seconds * multiplier ** (attempt - 1))``, computed without
    overflow (in log space) so that it is right for any attempt number."""
    initial, multiplier, cap = backoff.initial_seconds, backoff.multiplier, backoff.max_seconds
    if initial == 0 or cap == 0:
        return 0.0
    if multiplier == 1:
        return min(cap, initial)
    try:
        log_value = math.log(initial) + (attempt - 1) * math.log(multiplier)
    except OverflowError:  # the attempt number itself does not fit in a float
        return cap
    if log_value >= math.log(cap):
        return cap
    try:
        return min(cap, math.exp(log_value))
    except OverflowError:
        return cap
