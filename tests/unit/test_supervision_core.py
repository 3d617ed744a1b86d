"""The sans-IO supervision core, event by event, where a path needs pinning beyond the
property suite (tests/property/test_supervision_core.py)."""

from __future__ import annotations

import math
import random

import pytest

from megatrio import Backoff, Restart, RestartWindow, Strategy
from megatrio._policy._supervision import Action, Start, SupervisionCore


class Boom(Exception):
    pass


def started(actions: list[Action[Exception]], name: str) -> int:
    [start] = [a for a in actions if isinstance(a, Start) and a.name == name]
    return start.incarnation


def test_a_due_restart_queued_behind_a_start_in_flight_leaves_no_past_deadline() -> None:
    # The driver sleeps until next_deadline(); a deadline in the past would make its timer
    # fire again at once, for as long as the other start takes.
    core: SupervisionCore[Exception] = SupervisionCore(
        Strategy.ONE_FOR_ONE,
        RestartWindow(max_restarts=5, period_seconds=5.0),
        Backoff(initial_seconds=0.1, jitter=0.0),
        random.Random(0),
    )
    a1 = started(core.begin([("a", Restart.PERMANENT, 0.0, None)], 0.0), "a")
    core.child_started("a", a1, 0.0)
    a2 = started(core.child_exited("a", a1, 0.0, Boom()), "a")  # first restart: immediate
    assert core.add_child("b", Restart.PERMANENT, 0.0, None, 0.0) == []  # queued behind a#2
    b1 = started(core.start_failed("a", a2, 0.0, Boom()), "b")  # a again after 0.1 s
    assert core.next_deadline() == pytest.approx(0.1)
    # a is due, but b's start is in flight: nothing launches, and nothing is due any more.
    assert core.timer_fired(0.2) == []
    assert core.next_deadline() == math.inf
    # Once b has started, a is launched without waiting for another timer.
    a3 = started(core.child_started("b", b1, 0.3), "a")
    assert a3 > a2
