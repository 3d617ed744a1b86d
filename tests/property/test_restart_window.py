"""Properties of RestartWindow, the OTP restart-intensity rule, against a no-eviction model."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, example, given, note
from hypothesis import strategies as st

from megatrio import RestartWindow
from tests.property.strategies import (
    ReferenceWindow,
    WindowEvent,
    WindowParams,
    max_restarts_values,
    min_uptime_values,
    period_values,
    window_params,
    window_scenarios,
)

Scenario = tuple[WindowParams, list[WindowEvent]]


def _crashes(events: list[WindowEvent]) -> list[WindowEvent]:
    return [event for event in events if event.kind == "crash"]


def _answers(params: WindowParams, events: list[WindowEvent]) -> list[bool]:
    window = RestartWindow(*params.as_args())
    return [window.allow_restart(event.now, event.uptime) for event in _crashes(events)]


@given(window_scenarios())
@example(
    # Boundary: the oldest crash leaves the window exactly `period` later.
    (
        WindowParams(1, 1.0, None),
        [WindowEvent("crash", 0.0, 0.0), WindowEvent("crash", 1.0, 0.0)],
    )
)
@example(
    # Giving up does not stop the window from answering: it still follows the model.
    (
        WindowParams(0, 5.0, None),
        [WindowEvent("crash", t, 0.0) for t in (0.0, 1.0, 5.0, 10.0, 10.0)],
    )
)
def test_agrees_with_reference_model_for_the_whole_sequence(scenario: Scenario) -> None:
    params, events = scenario
    window = RestartWindow(*params.as_args())
    model = ReferenceWindow(*params.as_args())
    for index, event in enumerate(events):
        if event.kind == "other_exit":
            continue  # another child's clean exit never reaches the window
        expected = model.allow_restart(event.now, event.uptime)
        actual = window.allow_restart(event.now, event.uptime)
        note(f"#{index} crash at {event.now!r} up {event.uptime!r}: {actual} (model {expected})")
        assert actual == expected
        # The window only keeps what the decision needs, but never less.
        assert len(window._crashes) <= params.max_restarts + 1
        assert window.in_window(event.now) == min(
            model.in_window(event.now), params.max_restarts + 1
        )


@given(window_scenarios())
def test_never_more_than_max_restarts_allowed_within_any_window(scenario: Scenario) -> None:
    params, events = scenario
    window = RestartWindow(*params.as_args())
    allowed_counted: list[float] = []
    for event in _crashes(events):
        allowed = window.allow_restart(event.now, event.uptime)
        if allowed and window.counts(event.uptime):
            allowed_counted.append(event.now)
    # The densest window ends at an allowed crash; count the allowed crashes it holds.
    for j, end in enumerate(allowed_counted):
        inside = [t for t in allowed_counted[: j + 1] if end - t < params.period_seconds]
        assert len(inside) <= params.max_restarts, (end, inside)


@given(window_scenarios())
def test_gives_up_at_exactly_the_right_crash(scenario: Scenario) -> None:
    params, events = scenario
    crashes = _crashes(events)
    answers = _answers(params, crashes)
    first_refused = answers.index(False) if False in answers else None

    # Computed from scratch: the first counted crash that is the (max_restarts + 1)-th counted
    # crash within one period, counting itself.
    counted = [
        (index, c.now)
        for index, c in enumerate(crashes)
        if params.min_uptime_seconds is None or c.uptime < params.min_uptime_seconds
    ]
    expected: int | None = None
    for position, (index, now) in enumerate(counted):
        inside = [t for _, t in counted[: position + 1] if now - t < params.period_seconds]
        if len(inside) > params.max_restarts:
            expected = index
            break
    assert first_refused == expected


@given(window_scenarios())
@example(
    (
        WindowParams(2, 10.0, 1.0),
        [
            WindowEvent("crash", 0.0, 0.5),
            WindowEvent("crash", 1.0, 0.5),
            WindowEvent("other_exit", 2.0, 0.0),
            WindowEvent("crash", 2.0, 1.0),  # uncounted: up for min_uptime_seconds
            WindowEvent("crash", 3.0, math.inf),  # uncounted
            WindowEvent("crash", 4.0, 0.0),  # the third counted crash in 10 s: give up
        ],
    )
)
def test_uncounted_crashes_and_other_exits_never_reset_it(scenario: Scenario) -> None:
    """Removing uncounted crashes and other children's exits changes no counted answer."""
    params, events = scenario
    window = RestartWindow(*params.as_args())
    counted: list[WindowEvent] = []
    counted_answers: list[bool] = []
    for event in _crashes(events):
        before = list(window._crashes)
        answer = window.allow_restart(event.now, event.uptime)
        if window.counts(event.uptime):
            counted.append(event)
            counted_answers.append(answer)
        else:
            assert answer is True, event
            assert list(window._crashes) == before, "an uncounted crash touched the window"
    assert counted_answers == _answers(params, counted)


@given(window_params(), st.integers(min_value=0, max_value=200), st.floats(0.0, 1e6))
def test_storage_stays_bounded_by_max_restarts(
    params: WindowParams, crashes: int, now: float
) -> None:
    window = RestartWindow(params.max_restarts, params.period_seconds, None)
    for _ in range(crashes):
        window.allow_restart(now, 0.0)
        assert len(window._crashes) <= params.max_restarts + 1
    assert window.in_window(now) == min(crashes, params.max_restarts + 1)


@given(
    window_params(), st.floats(0.0, 1e6), st.floats(min_value=0.0, max_value=1e6, exclude_min=True)
)
def test_time_going_backwards_for_a_counted_crash_is_an_error(
    params: WindowParams, now: float, back: float
) -> None:
    window = RestartWindow(params.max_restarts, params.period_seconds, None)
    window.allow_restart(now, 0.0)
    earlier = now - back
    assume(earlier < now)
    with pytest.raises(ValueError, match="now"):
        window.allow_restart(earlier, 0.0)


negative = st.floats(max_value=0.0, exclude_max=True, allow_nan=False)
nan = st.just(math.nan)


@given(period_values, min_uptime_values, st.integers(max_value=-1))
def test_negative_max_restarts_is_rejected_by_name(
    period: float, min_uptime: float | None, bad: int
) -> None:
    with pytest.raises(ValueError, match="max_restarts") as info:
        RestartWindow(bad, period, min_uptime)
    assert "max_restarts" in str(info.value)


@given(st.one_of(st.just(math.nan), st.floats(allow_nan=False), st.booleans()))
def test_non_integer_max_restarts_is_rejected_by_name(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        RestartWindow(bad, 5.0)  # type: ignore[arg-type]
    assert "max_restarts" in str(info.value)


@given(
    max_restarts_values,
    st.one_of(negative, nan, st.sampled_from([0.0, -0.0, 0])),
    min_uptime_values,
)
def test_bad_period_is_rejected_by_name(
    max_restarts: int, bad: float, min_uptime: float | None
) -> None:
    with pytest.raises(ValueError, match="period_seconds") as info:
        RestartWindow(max_restarts, bad, min_uptime)
    assert "period_seconds" in str(info.value)


@given(max_restarts_values, period_values, st.one_of(negative, nan))
def test_bad_min_uptime_is_rejected_by_name(max_restarts: int, period: float, bad: float) -> None:
    with pytest.raises(ValueError, match="min_uptime_seconds") as info:
        RestartWindow(max_restarts, period, bad)
    assert "min_uptime_seconds" in str(info.value)


@given(window_params(), st.one_of(negative, nan))
def test_bad_uptime_is_rejected_by_name(params: WindowParams, bad: float) -> None:
    window = RestartWindow(*params.as_args())
    with pytest.raises(ValueError, match="uptime_seconds") as info:
        window.allow_restart(0.0, bad)
    assert "uptime_seconds" in str(info.value)


@given(window_params(), st.floats(min_value=0.0, max_value=10.0))
def test_nan_now_is_rejected_by_name(params: WindowParams, uptime: float) -> None:
    window = RestartWindow(*params.as_args())
    with pytest.raises(ValueError, match="now") as info:
        window.allow_restart(math.nan, uptime)
    assert "now" in str(info.value)
