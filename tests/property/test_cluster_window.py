"""The cluster primary gives up exactly when the rapid-crash window says so.

N puppet workers run under exactly the supervisor the primary builds,
:func:`megatrio.cli._primary.worker_supervisor`, with the default (jittered) backoff seeded through
its *random_source*, under a clock that only moves when a rule jumps it (see
:mod:`tests.property.puppets`). Workers crash rapidly, crash after ``worker_min_uptime_seconds``
of uptime, return cleanly (a permanent child: restarted, and counted when it was up for less
than the minimum), are stopped on purpose with ``stop_child`` (never counted, removed), or wait
in backoff while the clock moves.

:class:`ClusterModel` keeps the counted crash times in a plain list
(:class:`~tests.property.strategies.ReferenceWindow`) and computes each uptime from the
*observed* start of the incarnation that exited. After every step ``run()`` must have raised
:class:`~megatrio.RestartIntensityExceeded` if and only if some counted crash was the
``worker_max_restarts + 1``-th within ``worker_period_seconds``; once it has, it stays failed and
every worker is stopped. The window is shared by all workers: no other worker's exit resets it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

import pytest
from hypothesis import Phase, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from megatrio import Backoff, Config, RestartIntensityExceeded, Supervisor, SupervisorNotRunning
from megatrio.cli._primary import worker_supervisor
from tests.property.puppets import Incarnation, PuppetCrash, PuppetTree
from tests.property.strategies import ReferenceWindow

WORKER_BACKOFF = Backoff()
"""What worker_supervisor() leaves in place: the default backoff (checked on every run)."""

T = TypeVar("T")

ISSUE_DEFAULTS = (4, 10.0, 1.0)
"""worker_max_restarts, worker_period_seconds, worker_min_uptime_seconds by default."""


def worker_names(count: int) -> list[str]:
    return [f"worker-{index}" for index in range(1, count + 1)]


@dataclass(frozen=True)
class Limits:
    workers: int
    max_restarts: int
    period_seconds: float
    min_uptime_seconds: float

    def config(self) -> Config:
        return Config(
            workers=self.workers,
            worker_max_restarts=self.max_restarts,
            worker_period_seconds=self.period_seconds,
            worker_min_uptime_seconds=self.min_uptime_seconds,
        )


@st.composite
def cluster_limits(draw: st.DrawFn) -> Limits:
    rapid_crash_rule = draw(
        st.one_of(
            st.just(ISSUE_DEFAULTS),
            st.tuples(
                st.integers(min_value=0, max_value=5),
                st.sampled_from([1.0, 2.5, 10.0]),
                st.sampled_from([0.5, 1.0, 2.0]),
            ),
        )
    )
    return Limits(draw(st.integers(min_value=1, max_value=4)), *rapid_crash_rule)


def backoff_band(attempt: int) -> tuple[float, float]:
    """The shortest and the longest jittered delay of restart number *attempt*."""
    return WORKER_BACKOFF.delay_seconds(attempt, 0.0), WORKER_BACKOFF.delay_seconds(attempt, 1.0)


class Primary:
    """A worker_supervisor() over puppet workers, running in *tree*."""

    def __init__(self, tree: PuppetTree, config: Config, seed: int) -> None:
        self.tree = tree
        self.config = config
        self.sup: Supervisor = worker_supervisor(
            [tree.spec(name) for name in worker_names(config.workers)],
            config,
            random_source=random.Random(seed),
        )
        assert self.sup.backoff == WORKER_BACKOFF
        self.run: Future[None] = tree.start_run(self.sup)

    def exit(self, name: str, command: str) -> Incarnation:
        """The live incarnation of *name*, told to ``"crash"`` or ``"exit"`` (then settled)."""
        return self.tree.command(name, command)

    def stop_child(self, name: str) -> None:
        self.tree.call(self.sup.stop_child, name)
        self.tree.settle()

    def uptime(self, name: str) -> float:
        return self.tree.now() - self.tree.controller.live[name].started_at

    def wait_for_restart(self, name: str, attempt: int) -> None:
        """Jump through *name*'s backoff (restart number *attempt* since a stable run): not
        restarted halfway to the jitter band, restarted once the band has passed."""
        shortest, longest = backoff_band(attempt)
        if shortest > 0:
            self.tree.jump(shortest / 2)
            assert name not in self.tree.controller.live, f"{name} restarted early"
        self.tree.jump(longest)
        assert self.uptime(name) == 0.0, f"{name} not restarted at the end of its backoff"

    def assert_gave_up(self, crash: str | None) -> None:
        """run() raised RestartIntensityExceeded, caused by the crash with message *crash* (a
        clean exit when None), and every worker is stopped."""
        assert self.run.done(), "the primary did not give up"
        error = self.run.exception()
        assert isinstance(error, RestartIntensityExceeded), error
        assert error.max_restarts == self.config.worker_max_restarts
        assert error.period_seconds == self.config.worker_period_seconds
        if crash is None:
            assert error.__cause__ is None
        else:
            assert isinstance(error.__cause__, PuppetCrash)
            assert str(error.__cause__) == crash
        assert not self.tree.controller.live, "a worker outlived the give-up"
        assert not self.tree.controller.running, "a worker outlived the give-up"


# -- the model ---------------------------------------------------------------------------------


@dataclass(eq=False)
class WorkerModel:
    name: str
    serial: int
    """The incarnation last seen running."""
    started_at: float | None
    """Its observed start while it runs; None while it waits in backoff (or after the end)."""
    restart_due: float | None = None
    attempt: int = 0
    restarts: int = 0


@dataclass(frozen=True)
class Exit:
    at: float
    name: str
    counted: bool


class ClusterModel:
    """The primary's contract over plain facts.

    Crashes count when the observed uptime is under the minimum; the counted crash times are a
    plain list with no eviction, and the crash that leaves more than ``max_restarts`` of them
    within the period is the one the primary gives up at. Restart times come from the default
    backoff with jitter drawn from a twin of the supervisor's seeded random source (one draw
    per restart, in crash order), so the model also knows when each restart is due.
    """

    def __init__(self, limits: Limits, seed: int) -> None:
        self.limits = limits
        self.window = ReferenceWindow(
            limits.max_restarts, limits.period_seconds, limits.min_uptime_seconds
        )
        self.jitter = random.Random(seed)
        self.now = 0.0
        self.status = "running"
        self.workers: dict[str, WorkerModel] = {}
        self.exits: list[Exit] = []
        self.stopped_children: list[float] = []
        self.total_restarts = 0
        self.cause: str | None = None
        """The crash message of the exit the primary gave up at (None: a clean exit)."""

    def running_workers(self) -> list[str]:
        if self.status != "running":
            return []
        return [w.name for w in self.workers.values() if w.started_at is not None]

    def bystanders(self) -> list[str]:
        """When one more counted crash would make the primary give up: the running workers
        other than the one that crashed (counted) last, longest up first."""
        if not self.on_the_brink():
            return []
        last = [e.name for e in self.exits if e.counted][-1]
        others = [w for w in self.workers.values() if w.started_at is not None and w.name != last]
        return [w.name for w in sorted(others, key=lambda w: w.started_at or 0.0)]

    def on_the_brink(self) -> bool:
        """Whether one more counted crash now would make the primary give up."""
        counted = self.window.in_window(self.now)
        return self.status == "running" and counted > 0 and counted >= self.limits.max_restarts

    def window_edge(self) -> float | None:
        """On the brink: when the oldest counted crash in the window was counted. It leaves
        the window once ``now - edge >= period``; a counted crash then does not give up, one
        an instant earlier does."""
        if not self.on_the_brink():
            return None
        return min(t for t in self.window.counted if self.now - t < self.limits.period_seconds)

    def restarts_due(self) -> list[float]:
        return [w.restart_due for w in self.workers.values() if w.restart_due is not None]

    def backoff_workers(self) -> list[WorkerModel]:
        if self.status != "running":
            return []
        return [w for w in self.workers.values() if w.restart_due is not None]

    def started(self, name: str, incarnation: Incarnation, *, restart: bool) -> None:
        worker = self.workers.get(name)
        if worker is None:
            worker = self.workers[name] = WorkerModel(name, incarnation.serial, None)
        worker.serial = incarnation.serial
        worker.started_at = incarnation.started_at
        worker.restart_due = None
        if restart:
            worker.restarts += 1
            self.total_restarts += 1

    def exited(self, name: str, crash: str | None) -> None:
        """*name* crashed with message *crash*, or returned (None), at :attr:`now`."""
        worker = self.workers[name]
        assert worker.started_at is not None
        uptime = self.now - worker.started_at
        counted = self.window.counts(uptime)
        how = "crash" if crash is not None else "clean exit"
        note(
            f"t={self.now!r}: {name} {how} after {uptime!r} s ({'' if counted else 'not '}counted)"
        )
        self.exits.append(Exit(self.now, name, counted))
        worker.started_at = None
        if not self.window.allow_restart(self.now, uptime):
            self.cause = crash
            self._label_give_up(name)
            self.finish("failed")
            return
        attempt = WORKER_BACKOFF.attempt_after(worker.attempt, uptime)
        worker.attempt = attempt + 1
        worker.restart_due = self.now + WORKER_BACKOFF.delay_seconds(attempt, self.jitter.random())

    def stop_child(self, name: str) -> None:
        del self.workers[name]
        self.stopped_children.append(self.now)

    def finish(self, status: str) -> None:
        self.status = status
        event(f"run ended: {status}")
        for worker in self.workers.values():
            worker.started_at = None
            worker.restart_due = None

    def _label_give_up(self, name: str) -> None:
        period = self.limits.period_seconds
        since = min(t for t in self.window.counted if self.now - t < period)
        inside = [e for e in self.exits[:-1] if e.at >= since]
        if any(not e.counted for e in inside):
            event("gave up after an uncounted exit inside the window")
        if any(not e.counted and e.name != name for e in inside):
            event("gave up after another worker's uncounted exit inside the window")
        if any(e.counted and e.name != name for e in inside):
            event("gave up on counted crashes of several workers")
        if any(t >= since for t in self.stopped_children):
            event("gave up after a stop_child inside the window")
        if self.cause is None:
            event("gave up at a counted clean exit")
        if len(self.window.counted) > self.limits.max_restarts + 1:
            event("gave up after counted crashes left the window")


# -- the machine -------------------------------------------------------------------------------

indices = st.integers(min_value=0, max_value=3)
time_steps = st.one_of(
    st.sampled_from([0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
    st.floats(min_value=0.0, max_value=3.0),
    st.sampled_from([5.0, 10.0, 12.0]),
)
STOP_AFTER_STEPS = 25
"""stop() only late in a run: most runs should last long enough to give up (or not)."""
extra_uptime = st.sampled_from([0.0, 0.25, 5.0])
"""Beyond the minimum uptime: exactly at it, a little more, or stable (the backoff resets)."""


def _jumps_around(
    now: float, arrived: Callable[[float], bool], guess: float
) -> tuple[float, float]:
    """The largest jump whose landing time (``now + dt``, as the clock adds it) has not
    *arrived* yet and the smallest that has, for a monotonic *arrived* that is false at *now*;
    found by bisection from *guess*, so float rounding is taken into account."""
    short, reach = 0.0, max(guess, math.ulp(now))
    while not arrived(now + reach):
        reach *= 2
    while True:
        middle = short + (reach - short) / 2
        if not short < middle < reach:
            return short, reach
        if arrived(now + middle):
            reach = middle
        else:
            short = middle


def _reach(now: float, due: float) -> float:
    """The smallest jump landing on or after *due*."""
    return 0.0 if now >= due else _jumps_around(now, lambda t: t >= due, due - now)[1]


def _fall_short(now: float, due: float) -> float:
    """The largest jump landing before *due* (``due > now``)."""
    return _jumps_around(now, lambda t: t >= due, due - now)[0]


def _reach_uptime(now: float, started_at: float, uptime: float) -> float:
    """The smallest jump after which the uptime, computed as the supervisor does (``end -
    start``), is at least *uptime*."""
    if now - started_at >= uptime:
        return 0.0
    return _jumps_around(now, lambda t: t - started_at >= uptime, started_at + uptime - now)[1]


class ClusterWindowMachine(RuleBasedStateMachine):
    """Rapid and slow crashes, clean exits, stop_child, clock jumps, and stop."""

    def __init__(self) -> None:
        super().__init__()
        self.tree: PuppetTree | None = None
        self.steps = 0

    # -- plumbing --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.model.status == "running"

    @staticmethod
    def pick(items: list[T], index: int) -> T:
        return items[index % len(items)]

    def observe(self) -> None:
        """Take in the restarts of this step: exactly those that fell due, each starting at
        the current time (the clock jumped onto or past its due time in this step)."""
        assert self.tree is not None
        self.steps += 1
        live = self.tree.controller.live
        for worker in self.model.backoff_workers():
            incarnation = live.get(worker.name)
            assert worker.restart_due is not None
            if worker.restart_due > self.model.now:
                assert incarnation is None, f"{worker.name} restarted before its backoff elapsed"
                continue
            assert incarnation is not None, (
                f"{worker.name} not restarted at t={self.model.now!r} (due {worker.restart_due!r})"
            )
            assert incarnation.serial != worker.serial
            assert incarnation.started_at == self.model.now
            self.model.started(worker.name, incarnation, restart=True)

    def jump(self, dt: float) -> None:
        assert self.tree is not None
        self.tree.jump(dt)
        self.model.now += dt
        self.observe()

    def worker_exits(self, name: str, command: str) -> None:
        incarnation = self.primary.exit(name, command)
        crash = incarnation.crash_message if command == "crash" else None
        self.model.exited(name, crash)
        self.observe()

    def wait_min_uptime(self, name: str, extra: float) -> None:
        """Jump until *name* has been up for at least the minimum uptime, plus *extra*."""
        started_at = self.model.workers[name].started_at
        assert started_at is not None
        minimum = self.model.limits.min_uptime_seconds
        self.jump(_reach_uptime(self.model.now, started_at, minimum) + extra)

    # -- rules -----------------------------------------------------------------------------

    @initialize(limits=cluster_limits(), seed=st.integers(min_value=0, max_value=2**32 - 1))
    def start(self, limits: Limits, seed: int) -> None:
        note(f"{limits}, seed {seed}")
        self.tree = PuppetTree()
        self.model = ClusterModel(limits, seed)
        self.primary = Primary(self.tree, limits.config(), seed)
        for name in worker_names(limits.workers):
            incarnation = self.tree.controller.live[name]
            assert incarnation.started_at == 0.0
            self.model.started(name, incarnation, restart=False)

    @precondition(lambda self: self.model.running_workers())
    @rule(index=indices)
    def rapid_crash(self, index: int) -> None:
        """Crash now, whatever the uptime (counted when it is under the minimum)."""
        self.worker_exits(self.pick(self.model.running_workers(), index), "crash")

    @precondition(lambda self: self.model.running_workers())
    @rule(index=indices, extra=extra_uptime)
    def slow_crash(self, index: int, extra: float) -> None:
        name = self.pick(self.model.running_workers(), index)
        self.wait_min_uptime(name, extra)
        self.worker_exits(name, "crash")

    @precondition(lambda self: self.model.running_workers())
    @rule(index=indices, extra=st.none() | extra_uptime)
    def clean_exit(self, index: int, extra: float | None) -> None:
        """Return normally: now (None), or after the minimum uptime plus *extra*."""
        name = self.pick(self.model.running_workers(), index)
        if extra is not None:
            self.wait_min_uptime(name, extra)
        self.worker_exits(name, "exit")

    def edge_jump(self, early: bool) -> float:
        """The jump onto the instant the oldest counted crash leaves the window, or onto the
        instant before."""
        edge, period = self.model.window_edge(), self.model.limits.period_seconds
        assert edge is not None
        now = self.model.now
        return _jumps_around(now, lambda t: t - edge >= period, edge + period - now)[not early]

    def rapid_at_edge(self, early: bool) -> list[str]:
        """The workers that will be under the minimum uptime at that instant: running ones
        started recently enough, and those whose restart falls due by then (they restart at
        the instant the clock lands on)."""
        if self.model.window_edge() is None:
            return []
        landing = self.model.now + self.edge_jump(early)
        minimum = self.model.limits.min_uptime_seconds
        return [
            w.name
            for w in self.model.workers.values()
            if (w.started_at is not None and landing - w.started_at < minimum)
            or (w.restart_due is not None and w.restart_due <= landing)
        ]

    @precondition(lambda self: self.rapid_at_edge(False) or self.rapid_at_edge(True))
    @rule(index=indices, early=st.booleans())
    def rapid_crash_at_window_edge(self, index: int, early: bool) -> None:
        """On the brink, a rapid crash exactly when the oldest counted crash leaves the
        window (no give-up), or at the last instant it is still in it (give-up)."""
        if not self.rapid_at_edge(early):
            early = not early
        name = self.pick(self.rapid_at_edge(early), index)
        event(f"rapid crash at the window edge{' (the instant before)' if early else ''}")
        self.jump(self.edge_jump(early))
        self.worker_exits(name, "crash")

    @precondition(lambda self: self.model.bystanders())
    @rule(index=indices, crash=st.booleans())
    def bystander_exits_after_min_uptime(self, index: int, crash: bool) -> None:
        """On the brink of giving up, another worker crashes or returns once it has been up
        for the minimum: not counted, and it must not make the window forget either."""
        bystanders = self.model.bystanders()
        name = bystanders[0] if index < 2 else self.pick(bystanders, index)  # mostly no wait
        self.wait_min_uptime(name, 0.0)
        self.worker_exits(name, "crash" if crash else "exit")

    def _stop_child(self, name: str) -> None:
        assert self.tree is not None
        note(f"t={self.model.now!r}: stop_child {name}")
        self.primary.stop_child(name)
        self.model.stop_child(name)
        self.observe()

    @precondition(lambda self: self.model.running_workers() and len(self.model.workers) > 1)
    @rule(index=indices)
    def stop_worker(self, index: int) -> None:
        self._stop_child(self.pick(self.model.running_workers(), index))

    @precondition(lambda self: self.model.backoff_workers() and len(self.model.workers) > 1)
    @rule(index=indices)
    def stop_worker_in_backoff(self, index: int) -> None:
        self._stop_child(self.pick(self.model.backoff_workers(), index).name)

    @rule(dt=time_steps)
    def advance_clock(self, dt: float) -> None:
        self.jump(dt)

    @precondition(lambda self: self.model.backoff_workers())
    @rule(early=st.booleans())
    def advance_to_next_restart(self, early: bool) -> None:
        """Jump exactly onto the next restart's due time, or to the instant before it."""
        due = min(self.model.restarts_due())
        self.jump((_fall_short if early else _reach)(self.model.now, due))

    @precondition(lambda self: self.model.backoff_workers())
    @rule(index=indices)
    def crash_loop(self, index: int) -> None:
        """A worker in backoff is restarted (the clock jumps onto its due time) and crashes at
        once: the crash loop the rule is for."""
        worker = self.pick(self.model.backoff_workers(), index)
        assert worker.restart_due is not None
        self.jump(_reach(self.model.now, worker.restart_due))
        self.worker_exits(worker.name, "crash")

    @precondition(lambda self: not self.running)
    @rule(index=indices)
    def stop_child_after_the_end(self, index: int) -> None:
        """Once given up (or stopped), it stays so: no worker can be stopped or restarted."""
        assert self.tree is not None
        with pytest.raises(SupervisorNotRunning):
            self.tree.call(self.primary.sup.stop_child, self.pick(list(self.model.workers), index))
        self.tree.settle()

    @precondition(lambda self: self.steps >= STOP_AFTER_STEPS or not self.running)
    @rule()
    def stop(self) -> None:
        """Stop the primary's workers (late in a run); on a finished supervisor, a no-op."""
        assert self.tree is not None
        self.tree.call(self.primary.sup.stop)
        self.tree.settle()
        if self.running:
            self.model.finish("stopped")

    # -- checks ----------------------------------------------------------------------------

    @invariant()
    def clock_agrees(self) -> None:
        assert self.tree is not None
        assert self.tree.now() == self.model.now

    @invariant()
    def gives_up_exactly_when_the_window_says(self) -> None:
        run = self.primary.run
        if self.running:
            assert not run.done(), f"run() ended early: {run.exception()!r}"
        elif self.model.status == "stopped":
            assert run.done(), "run() did not return after stop()"
            assert run.exception() is None
        else:
            self.primary.assert_gave_up(self.model.cause)

    @invariant()
    def workers_match_model(self) -> None:
        assert self.tree is not None
        live = {name: inc.serial for name, inc in self.tree.controller.live.items()}
        expected = {name: self.model.workers[name].serial for name in self.model.running_workers()}
        assert live == expected
        if not self.running:
            assert not self.tree.controller.running, "a worker outlived its supervisor"

    @invariant()
    def snapshot_matches_model(self) -> None:
        assert self.tree is not None
        snapshot = self.tree.call(self.primary.sup.snapshot)
        assert snapshot["state"] == self.model.status
        running = set(self.model.running_workers())
        waiting = {w.name for w in self.model.backoff_workers()}
        expected = [
            (
                w.name,
                "running" if w.name in running else "restarting" if w.name in waiting else "exited",
                w.restarts,
            )
            for w in self.model.workers.values()
        ]
        actual = [(c["name"], c["state"], c["restarts"]) for c in snapshot["children"]]
        assert actual == expected
        assert snapshot["restarts"] == self.model.total_restarts

    def teardown(self) -> None:
        if self.tree is not None:
            self.tree.teardown(self.stop_and_check)

    def stop_and_check(self) -> None:
        if not hasattr(self, "primary"):
            return  # it never started
        was_running = self.running
        self.stop()  # whatever the model says, so that a failed check leaves nothing running
        if was_running:
            self.gives_up_exactly_when_the_window_says()
            self.workers_match_model()


TestClusterWindowMachine = ClusterWindowMachine.TestCase
TestClusterWindowMachine.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    # Explaining a failure replays the machine hundreds of times: too slow for this suite.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


# -- the issue's scenario, step by step ---------------------------------------------------------


def test_defaults_give_up_at_exactly_the_fifth_rapid_crash() -> None:
    config = Config(workers=2)
    rapid_crash_rule = (
        config.worker_max_restarts,
        config.worker_period_seconds,
        config.worker_min_uptime_seconds,
    )
    assert rapid_crash_rule == ISSUE_DEFAULTS
    with PuppetTree() as tree:
        primary = Primary(tree, config, seed=0)
        for attempt in range(4):
            primary.exit("worker-1", "crash")  # up for 0 s: rapid
            assert not primary.run.done(), f"gave up at rapid crash {attempt + 1} of 5"
            primary.wait_for_restart("worker-1", attempt)
        assert "worker-2" in tree.controller.live
        assert tree.now() < config.worker_period_seconds
        last = primary.exit("worker-1", "crash")
        primary.assert_gave_up(last.crash_message)


def test_another_workers_slow_crash_and_clean_exit_do_not_reset_the_window() -> None:
    config = Config(workers=2)
    with PuppetTree() as tree:
        primary = Primary(tree, config, seed=0)

        def rapid_crash_of_worker_1(number: int) -> Incarnation:
            assert primary.uptime("worker-1") < config.worker_min_uptime_seconds
            incarnation = primary.exit("worker-1", "crash")
            if number < 5:
                assert not primary.run.done(), f"gave up at rapid crash {number} of 5"
            return incarnation

        rapid_crash_of_worker_1(1)
        primary.wait_for_restart("worker-1", 0)
        tree.jump(0.5)
        rapid_crash_of_worker_1(2)
        primary.wait_for_restart("worker-1", 1)

        tree.jump(0.5)  # worker-2 has been up since t=0: past the minimum uptime
        assert primary.uptime("worker-2") >= config.worker_min_uptime_seconds
        primary.exit("worker-2", "crash")
        assert not primary.run.done(), "a slow crash was counted"
        assert primary.uptime("worker-2") == 0.0, "worker-2 not restarted at once"

        rapid_crash_of_worker_1(3)
        tree.jump(5.0)  # worker-1's backoff ends within this jump: it restarts at its end
        assert primary.uptime("worker-1") == 0.0
        assert primary.uptime("worker-2") == pytest.approx(5.0)
        primary.exit("worker-2", "exit")  # a permanent child: restarted, not counted
        assert not primary.run.done(), "a clean exit after a long uptime was counted"
        assert primary.uptime("worker-2") == 0.0, "worker-2 not restarted at once"

        rapid_crash_of_worker_1(4)
        primary.wait_for_restart("worker-1", 3)
        assert tree.now() < config.worker_period_seconds  # all five crashes in one window
        last = rapid_crash_of_worker_1(5)
        primary.assert_gave_up(last.crash_message)


def test_workers_stopped_on_purpose_are_never_counted() -> None:
    config = Config(workers=3, worker_max_restarts=1)
    with PuppetTree() as tree:
        primary = Primary(tree, config, seed=0)
        primary.stop_child("worker-3")
        primary.stop_child("worker-2")
        assert not primary.run.done(), "a worker stopped on purpose was counted"
        assert list(tree.controller.live) == ["worker-1"]
        primary.exit("worker-1", "crash")
        assert not primary.run.done(), "gave up at the first rapid crash"
        primary.wait_for_restart("worker-1", 0)
        last = primary.exit("worker-1", "crash")
        primary.assert_gave_up(last.crash_message)
