"""A real Supervisor, driven step by step under a manual clock, against a pure OTP model.

The supervisor runs under trio in a blocking portal's thread, with a ``MockClock`` that only
moves when a rule jumps it. Children are puppets: each incarnation reports ready, registers in
the :class:`Controller`, then waits for a command (crash: raise; exit: return) or for its stop
request. After every rule the tree is left to settle (every task blocked), then the supervisor's
``snapshot()`` and the outcome of ``run()`` are compared with :class:`SupervisorModel`.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from hypothesis import Phase, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from megatrio import (
    NO_BACKOFF,
    ChildSpec,
    Restart,
    RestartIntensityExceeded,
    StartupFailed,
    Strategy,
    Supervisor,
    SupervisorNotRunning,
)
from tests.property.puppets import (
    Controller,
    PuppetStartFailure,
    PuppetTree,
    settle,
    start_failure_message,
)
from tests.property.strategies import ReferenceWindow

SUPERVISOR = "sup"

# -- the model ---------------------------------------------------------------------------------


@dataclass(eq=False)
class ChildModel:
    name: str
    restart: Restart
    shutdown_seconds: float
    order: int
    state: str = "running"
    restarts: int = 0
    started_at: float | None = None
    last_error: str | None = None
    fail_starts: int = 0


@dataclass(frozen=True)
class Config:
    strategy: Strategy
    children: tuple[tuple[Restart, float], ...]
    max_restarts: int
    period_seconds: float
    min_uptime_seconds: float | None


class SupervisorModel:
    """OTP supervisor semantics, as plain Python over plain lists. Restarts are immediate."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.now = 0.0
        self.orders = itertools.count()
        self.status = "idle"
        self.children: list[ChildModel] = []
        self.pending: list[ChildModel] = []
        self.total_restarts = 0
        self.window = self._new_window()
        self.journal: list[tuple[str, str]] = []

    def _new_window(self) -> ReferenceWindow:
        c = self.config
        return ReferenceWindow(c.max_restarts, c.period_seconds, c.min_uptime_seconds)

    def start_run(self, specs: list[tuple[str, Restart, float]]) -> None:
        """A (re)run: a fresh window, and the initial children started in order."""
        self.window = self._new_window()
        self.total_restarts = 0
        self.pending = []
        self.children = [
            ChildModel(name, restart, shutdown, next(self.orders), started_at=self.now)
            for name, restart, shutdown in specs
        ]
        self.journal.extend(("start", name) for name, _, _ in specs)
        self.status = "running"

    def child(self, name: str) -> ChildModel:
        (found,) = [c for c in self.children if c.name == name]
        return found

    def names(self, state: str | None = None) -> list[str]:
        return [c.name for c in self.children if state is None or c.state == state]

    def add(self, name: str, restart: Restart, shutdown: float) -> None:
        self.children.append(
            ChildModel(name, restart, shutdown, next(self.orders), started_at=self.now)
        )
        self.journal.append(("start", name))

    def remove(self, child: ChildModel) -> None:
        self.children.remove(child)
        if child in self.pending:
            self.pending.remove(child)

    def stop_child(self, name: str) -> None:
        child = self.child(name)
        self._stop(child)
        self.remove(child)  # stopped and deleted; never a crash

    def _stop(self, child: ChildModel) -> None:
        if child.state == "running":
            self.journal.append(("stop", child.name))
        child.state = "exited"
        child.started_at = None

    def stop(self) -> None:
        self.finish("stopped")

    def finish(self, status: str) -> None:
        """Every child stopped (none removed, nothing restarts any more)."""
        self.status = status
        self.pending = []
        event(f"run ended: {status}")
        for c in reversed(self.children):  # one at a time, in reverse start order
            self._stop(c)

    def exited(self, name: str, *, error: str | None) -> None:
        """Child *name* exited on its own: crashed with *error*, or returned (None)."""
        child = self.child(name)
        assert child.started_at is not None
        uptime = self.now - child.started_at
        child.state = "exited"
        child.started_at = None
        if error is not None:
            child.last_error = error
        if child.restart is Restart.TEMPORARY:
            self.remove(child)
            return
        if child.restart is Restart.TRANSIENT and error is None:
            event("transient child exited normally: left exited")
            return
        self._crashed(child, uptime)
        self._restart_pending()

    def _affected(self, child: ChildModel) -> list[ChildModel]:
        if self.config.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if self.config.strategy is Strategy.ONE_FOR_ALL:
            return list(self.children)
        return self.children[self.children.index(child) :]

    def _crashed(self, child: ChildModel, uptime: float) -> None:
        if not self.window.counts(uptime):
            event("crash not counted (min_uptime_seconds)")
        if not self.window.allow_restart(self.now, uptime):
            self.finish("failed")
            return
        affected = self._affected(child)
        siblings = [sibling for sibling in affected if sibling is not child]
        if any(s.restart is Restart.TRANSIENT and s.state == "exited" for s in siblings):
            event("group restart revives an exited transient sibling")
        for sibling in reversed(siblings):  # stopped in reverse start order
            self._stop(sibling)
        for sibling in siblings:
            if sibling.restart is Restart.TEMPORARY:
                event("group restart removed a temporary sibling")
                self.remove(sibling)
        for sibling in affected:
            if sibling in self.children:
                sibling.state = "restarting"
                if sibling not in self.pending:
                    self.pending.append(sibling)

    def _restart_pending(self) -> None:
        # Every pending restart is due at once (no backoff); they start in child order, and a
        # failed start is a crash with no uptime whose restart joins what is still pending.
        while self.pending and self.status == "running":
            batch = sorted(self.pending, key=lambda c: c.order)
            self.pending = []
            for index, c in enumerate(batch):
                c.restarts += 1
                self.total_restarts += 1
                if c.fail_starts:
                    c.fail_starts -= 1
                    c.state = "exited"
                    c.last_error = f"PuppetStartFailure: {start_failure_message(c.name)}"
                    for rest in batch[index + 1 :]:
                        if rest not in self.pending:
                            self.pending.append(rest)
                    self._crashed(c, 0.0)
                    break
                c.state = "running"
                c.started_at = self.now
                self.journal.append(("start", c.name))


# -- the machine -------------------------------------------------------------------------------

restart_types = st.sampled_from(list(Restart))
shutdown_graces = st.sampled_from([0.0, 5.0])  # cancelled at once / returns on its stop signal


@st.composite
def configs(draw: st.DrawFn) -> Config:
    return Config(
        strategy=draw(st.sampled_from(list(Strategy))),
        children=tuple(
            draw(st.lists(st.tuples(restart_types, shutdown_graces), min_size=1, max_size=4))
        ),
        max_restarts=draw(st.integers(min_value=0, max_value=4)),
        period_seconds=draw(
            st.one_of(
                st.sampled_from([0.5, 1.0, 5.0, math.inf]),
                st.floats(min_value=0.01, max_value=20.0),
            )
        ),
        min_uptime_seconds=draw(
            st.one_of(
                st.none(),
                st.sampled_from([0.0, 0.5, 1.0, 5.0]),
                st.floats(min_value=0.0, max_value=20.0),
            )
        ),
    )


time_steps = st.one_of(
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
    st.floats(min_value=0.0, max_value=30.0),
)

indices = st.integers(min_value=0, max_value=7)


class SupervisorMachine(RuleBasedStateMachine):
    """Crashes, exits, stop_child, start_child, clock jumps, stop and re-run."""

    def __init__(self) -> None:
        super().__init__()
        self.tree: PuppetTree | None = None
        self.dynamic = itertools.count()
        self.gone: set[str] = {"never-existed"}
        self.run_future: Future[None] | None = None

    # -- plumbing --------------------------------------------------------------------------

    @property
    def controller(self) -> Controller:
        assert self.tree is not None
        return self.tree.controller

    def call(self, func: Any, *args: Any) -> Any:
        assert self.tree is not None
        return self.tree.call(func, *args)

    def settle(self) -> None:
        self.call(settle)

    def spec(self, name: str, restart: Restart, shutdown: float) -> ChildSpec:
        assert self.tree is not None
        return self.tree.spec(name, restart, shutdown)

    def start_run(self) -> None:
        assert self.tree is not None
        self.controller.fail_starts.clear()
        self.run_future = self.tree.start_run(self.sup)
        self.model.start_run(self.initial)

    @property
    def running(self) -> bool:
        return self.model.status == "running"

    @property
    def finished(self) -> bool:
        return self.model.status in ("stopped", "failed")

    # -- rules -----------------------------------------------------------------------------

    @initialize(config=configs())
    def start(self, config: Config) -> None:
        note(f"{config}")
        self.tree = PuppetTree()
        self.model = SupervisorModel(config)
        self.initial = [
            (f"c{index}", restart, shutdown)
            for index, (restart, shutdown) in enumerate(config.children)
        ]
        self.sup = Supervisor(
            [self.spec(*child) for child in self.initial],
            strategy=config.strategy,
            max_restarts=config.max_restarts,
            period_seconds=config.period_seconds,
            min_uptime_seconds=config.min_uptime_seconds,
            backoff=NO_BACKOFF,
            name=SUPERVISOR,
        )
        self.start_run()

    def _command(self, index: int, command: str) -> None:
        assert self.tree is not None
        name = self.pick(self.model.names("running"), index)
        serial = self.controller.live[name].serial
        note(f"{command} {name} (incarnation {serial}) at t={self.model.now}")
        incarnation = self.tree.command(name, command)
        error = f"PuppetCrash: {incarnation.crash_message}" if command == "crash" else None
        self.model.exited(name, error=error)

    @staticmethod
    def pick(names: list[str], index: int) -> str:
        return names[index % len(names)]

    @precondition(lambda self: self.running and self.model.names("running"))
    @rule(index=indices)
    def crash(self, index: int) -> None:
        self._command(index, "crash")

    @precondition(lambda self: self.running and self.model.names("running"))
    @rule(index=indices)
    def exit_normally(self, index: int) -> None:
        self._command(index, "exit")

    @rule(dt=time_steps)
    def advance_clock(self, dt: float) -> None:
        assert self.tree is not None
        self.tree.jump(dt)
        self.model.now += dt

    @precondition(lambda self: self.model.children)
    @rule(index=indices)
    def stop_child(self, index: int) -> None:
        name = self.pick(self.model.names(), index)
        note(f"stop_child {name}")
        if not self.running:
            with pytest.raises(SupervisorNotRunning):
                self.call(self.sup.stop_child, name)
            return
        self.call(self.sup.stop_child, name)
        self.settle()
        self.model.stop_child(name)
        self.gone.add(name)

    @rule(index=indices)
    def stop_unknown_child(self, index: int) -> None:
        name = self.pick(sorted(self.gone - set(self.model.names())), index)
        expected = LookupError if self.running else SupervisorNotRunning
        with pytest.raises(expected):
            self.call(self.sup.stop_child, name)

    @rule(restart=restart_types, shutdown=shutdown_graces)
    def start_child(self, restart: Restart, shutdown: float) -> None:
        name = f"d{next(self.dynamic)}"
        note(f"start_child {name} ({restart.value})")
        spec = self.spec(name, restart, shutdown)
        if not self.running:
            with pytest.raises(SupervisorNotRunning):
                self.call(self.sup.start_child, spec)
            return
        value = self.call(self.sup.start_child, spec)
        self.settle()
        assert value == self.controller.live[name].serial
        self.model.add(name, restart, shutdown)

    @rule()
    def stop(self) -> None:
        """Stop the supervisor; on a finished one, a no-op."""
        self.call(self.sup.stop)
        self.settle()
        if self.running:
            self.model.stop()

    @precondition(lambda self: self.finished)
    @rule()
    def run_again(self) -> None:
        self.start_run()

    # -- checks ----------------------------------------------------------------------------

    @invariant()
    def clock_agrees(self) -> None:
        assert self.call(trio.current_time) == self.model.now

    @invariant()
    def snapshot_matches_model(self) -> None:
        model = self.model
        snapshot = self.call(self.sup.snapshot)
        expected_state = {"running": "running", "stopped": "stopped", "failed": "failed"}
        assert snapshot["state"] == expected_state[model.status]
        assert snapshot["strategy"] == model.config.strategy.value
        assert snapshot["max_restarts"] == model.config.max_restarts
        assert snapshot["period_seconds"] == model.config.period_seconds
        assert snapshot["min_uptime_seconds"] == model.config.min_uptime_seconds
        actual = [
            (c["name"], c["restart"], c["state"], c["restarts"], c["last_error"])
            for c in snapshot["children"]
        ]
        expected = [
            (c.name, c.restart.value, c.state, c.restarts, c.last_error) for c in model.children
        ]
        assert actual == expected
        assert snapshot["restarts"] == model.total_restarts
        for entry, child in zip(snapshot["children"], model.children, strict=True):
            uptime = None if child.started_at is None else model.now - child.started_at
            assert entry["uptime_seconds"] == uptime, entry["name"]

    @invariant()
    def starts_and_stops_in_model_order(self) -> None:
        actual, self.controller.journal[:] = list(self.controller.journal), []
        expected, self.model.journal[:] = list(self.model.journal), []
        assert actual == expected

    @invariant()
    def puppets_match_model(self) -> None:
        assert set(self.controller.live) == set(self.model.names("running"))
        if not self.running:
            assert not self.controller.running, "an incarnation outlived its supervisor"

    @invariant()
    def run_outcome_matches_model(self) -> None:
        future = self.run_future
        assert future is not None
        if self.running:
            assert not future.done(), "run() ended while the model still runs"
            return
        assert future.done(), "run() did not return"
        if self.model.status == "stopped":
            assert future.exception() is None
        else:
            error = future.exception()
            assert isinstance(error, RestartIntensityExceeded), error
            assert error.max_restarts == self.model.config.max_restarts
            assert error.period_seconds == self.model.config.period_seconds

    def teardown(self) -> None:
        if self.tree is not None:
            self.tree.teardown(self.stop_and_check)

    def stop_and_check(self) -> None:
        if self.running:
            self.call(self.sup.stop)
            self.settle()
            self.model.stop()
            self.snapshot_matches_model()
            self.starts_and_stops_in_model_order()
            self.puppets_match_model()
            self.run_outcome_matches_model()


class SupervisorStartFailureMachine(SupervisorMachine):
    """The same, plus restarts that fail before the child reports ready."""

    @precondition(lambda self: self.running and self.model.children)
    @rule(index=indices, count=st.integers(min_value=1, max_value=2))
    def fail_next_starts(self, index: int, count: int) -> None:
        name = self.pick(self.model.names(), index)
        note(f"arm {count} start failure(s) for {name}")
        self.controller.fail_starts[name] = self.controller.fail_starts.get(name, 0) + count
        self.model.child(name).fail_starts += count

    @precondition(lambda self: self.running)
    @rule(restart=restart_types)
    def start_child_that_fails(self, restart: Restart) -> None:
        name = f"d{next(self.dynamic)}"
        note(f"start_child {name} ({restart.value}), failing")
        self.controller.fail_starts[name] = 1
        with pytest.raises(StartupFailed, match=name) as info:
            self.call(self.sup.start_child, self.spec(name, restart, 0.0))
        assert isinstance(info.value.__cause__, PuppetStartFailure)
        self.settle()
        self.gone.add(name)  # never added


MACHINE_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=40,
    # Explaining a failure replays the machine hundreds of times: too slow for this suite.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)

TestSupervisorMachine = SupervisorMachine.TestCase
TestSupervisorMachine.settings = MACHINE_SETTINGS

TestSupervisorStartFailureMachine = SupervisorStartFailureMachine.TestCase
TestSupervisorStartFailureMachine.settings = settings(
    MACHINE_SETTINGS, max_examples=75, stateful_step_count=30
)
