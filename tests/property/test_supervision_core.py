"""The sans-IO supervision core, driven directly by Hypothesis at full speed.

Two machines over :class:`~megatrio._policy._supervision.SupervisionCore` and the simulated
driver of :mod:`tests.property.sim`:

* :class:`CoreVsModel` — every start and stop is instantaneous, so the core must agree, step
  for step, with the sequential OTP reference model of :mod:`tests.property.otp_model`:
  crashes, normal exits, failed starts and restarts, errors raised while stopping, dynamic
  children, stop_child, non-zero jittered backoff, clock jumps, a nested supervisor whose
  children crash too, stop and run again. Compared after every step: each supervisor's state
  and outcome, every child's state, restart count, last error and uptime, the order of every
  start and stop, and which children are alive.
* :class:`CoreOverlaps` — starts and stops take time (children that report ready late or
  never, ignore their stop signal, or stop when the test says), start timeouts, and crashes,
  stops and stop_child calls arriving in the middle of other operations. No model: the
  invariants that must hold whatever the interleaving (one start in flight, one child told to
  stop at a time, no start during a stop, no restart before its backoff, an exit the
  supervisor asked for is always a shutdown, every start answered once, and the run always
  ends with nothing left alive).
"""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from megatrio import NO_BACKOFF, Backoff, Restart, Strategy
from megatrio._policy._supervision import ChildState, ExitOutcome, Outcome, StartFailure
from tests.property.otp_model import Arms, OtpModel, SupervisorConfig, by_parent
from tests.property.sim import Crash, SimSupervisor, World, describe_error
from tests.property.strategies import ReferenceWindow

restart_types = st.sampled_from(list(Restart))
strategies_ = st.sampled_from(list(Strategy))
backoffs = st.one_of(
    st.just(NO_BACKOFF),
    st.just(Backoff()),
    st.builds(
        Backoff,
        initial_seconds=st.sampled_from([0.0, 0.1, 1.0]),
        multiplier=st.sampled_from([1.0, 2.0, 3.0]),
        max_seconds=st.sampled_from([0.5, 5.0, math.inf]),
        jitter=st.sampled_from([0.0, 0.2, 1.0]),
        stable_seconds=st.sampled_from([0.0, 1.0, 5.0, math.inf]),
    ),
)
periods = st.one_of(st.sampled_from([0.5, 1.0, 5.0, math.inf]), st.floats(0.01, 20.0))
min_uptimes = st.one_of(st.none(), st.sampled_from([0.0, 0.5, 5.0]), st.floats(0.0, 20.0))
time_steps = st.one_of(
    st.sampled_from([0.0, 0.05, 0.1, 0.25, 1.0, 2.5, 5.0, 10.0]), st.floats(0.0, 30.0)
)
indices = st.integers(min_value=0, max_value=7)


@st.composite
def supervisor_configs(draw: st.DrawFn, *, nested: bool, prefix: str = "c") -> SupervisorConfig:
    count = draw(st.integers(min_value=1, max_value=4))
    children = [(f"{prefix}{i}", draw(restart_types)) for i in range(count)]
    inner = None
    if nested:
        inner = draw(supervisor_configs(nested=False, prefix="i"))
        position = draw(st.integers(min_value=0, max_value=count))
        children.insert(position, ("n", draw(restart_types)))
    return SupervisorConfig(
        strategy=draw(strategies_),
        max_restarts=draw(st.integers(min_value=0, max_value=4)),
        period_seconds=draw(periods),
        min_uptime_seconds=draw(min_uptimes),
        backoff=draw(backoffs),
        children=tuple(children),
        nested=inner,
    )


def pick(names: list[str], index: int) -> str:
    return names[index % len(names)]


class CoreVsModel(RuleBasedStateMachine):
    """The core against the OTP reference model, all starts and stops instantaneous."""

    @initialize(config=supervisor_configs(nested=True), seed=st.integers(0, 2**16))
    def begin(self, config: SupervisorConfig, seed: int) -> None:
        note(repr(config))
        self.config = config
        self.world = World(config, seed=seed)
        self.model_arms = Arms()
        self.model_rngs: dict[tuple[str, ...], random.Random] = {}
        self.model_journal: list[tuple[str, str]] = []
        self.dynamic = itertools.count()
        self.run_again()

    def run_again(self) -> None:
        self.world.journal.clear()
        self.model_journal.clear()
        # The model's jitter sources are twins of the core's: same seeds, same draw order,
        # kept across runs as a Supervisor keeps its random source.
        for path in (("sup",), ("sup", "n")):
            if path not in self.model_rngs:
                self.model_rngs[path] = random.Random(f"{self.world.seed}/{'/'.join(path)}")
        self.sup = SimSupervisor(self.world, self.config, ("sup",))
        self.model = OtpModel(
            self.config,
            ("sup",),
            self.model_arms,
            self.model_rngs,
            lambda: self.world.now,
            self.model_journal,
        )
        self.sup.begin()
        self.world.settle()
        self.model.begin()

    # -- helpers ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.model.status == "running"

    def inner_model(self) -> OtpModel | None:
        if not self.running or "n" not in self.model.names("running"):
            return None
        return self.model.child("n").nested

    def inner_sim(self) -> SimSupervisor | None:
        kid = self.sup.kids.get("n")
        return None if kid is None else kid.nested

    def crashable(self) -> list[str]:
        return [n for n in self.model.names("running") if n != "n"] if self.running else []

    # -- rules -----------------------------------------------------------------------------

    @precondition(lambda self: self.crashable())
    @rule(index=indices, normal=st.booleans())
    def child_exits(self, index: int, normal: bool) -> None:
        name = pick(self.crashable(), index)
        kid = self.sup.kids[name]
        error = None if normal else Crash(f"{name}@{kid.launch}")
        note(f"t={self.world.now}: {name} {'returns' if normal else 'crashes'}")
        self.world.queue.append(lambda: self.sup.kid_exit(kid, error))
        self.world.settle()
        self.model.crash(name, describe_error(error))

    @precondition(lambda self: self.inner_model() is not None)
    @rule(index=indices, normal=st.booleans())
    def nested_child_exits(self, index: int, normal: bool) -> None:
        inner, sim = self.inner_model(), self.inner_sim()
        assert inner is not None
        assert sim is not None
        running = inner.names("running") if inner.status == "running" else []
        if not running:
            return
        name = pick(running, index)
        kid = sim.kids[name]
        error = None if normal else Crash(f"{name}@{kid.launch}")
        note(f"t={self.world.now}: n/{name} {'returns' if normal else 'crashes'}")
        self.world.queue.append(lambda: sim.kid_exit(kid, error))
        self.world.settle()
        self.model.inner_crash("n", name, describe_error(error))

    @rule(dt=time_steps)
    def advance_clock(self, dt: float) -> None:
        self.world.advance(self.sup, dt)
        self.model.advance()

    @precondition(lambda self: self.running and self.model.children)
    @rule(index=indices, count=st.integers(1, 3), inner=st.booleans())
    def arm_start_failures(self, index: int, count: int, inner: bool) -> None:
        target = self.inner_model() if inner else self.model
        if target is None or not target.children:
            return
        name = pick(target.names(), index)
        path = (*target.path, name)
        note(f"arm {count} start failure(s) for {'/'.join(path)}")
        for arms in (self.world.arms, self.model_arms):
            arms.fail_starts[path] = arms.fail_starts.get(path, 0) + count

    @precondition(lambda self: self.running)
    @rule(index=indices, inner=st.booleans())
    def arm_raise_on_stop(self, index: int, inner: bool) -> None:
        target = self.inner_model() if inner else self.model
        if target is None or target.status != "running" or not target.names("running"):
            return
        name = pick(target.names("running"), index)
        if name == "n":
            return
        path = (*target.path, name)
        note(f"{'/'.join(path)} will raise while stopping")
        self.world.arms.raise_on_stop.add(path)
        self.model_arms.raise_on_stop.add(path)

    @precondition(lambda self: self.running and self.model.children)
    @rule(index=indices)
    def stop_child(self, index: int) -> None:
        name = pick(self.model.names(), index)
        note(f"stop_child {name}")
        self.sup.stop_child(name)
        self.world.settle()
        assert self.sup.stop_done[name] >= 1
        self.model.stop_child(name)

    @precondition(lambda self: self.running)
    @rule(restart=restart_types, fails=st.booleans())
    def start_child(self, restart: Restart, fails: bool) -> None:
        name = f"d{next(self.dynamic)}"
        note(f"start_child {name} ({restart.value}){' failing' if fails else ''}")
        if fails:
            for arms in (self.world.arms, self.model_arms):
                arms.fail_starts[("sup", name)] = 1
        self.sup.add_child(name, restart)
        self.world.settle()
        expected = self.model.start_child(name, restart)
        [resolved] = self.sup.resolved[name]
        if expected is None:
            assert resolved.failure is None
        else:
            assert resolved.failure is StartFailure.FAILED
            assert describe_error(resolved.error) == expected

    @rule()
    def stop(self) -> None:
        note("stop")
        self.sup.stop()
        self.world.settle()
        self.model.stop()

    @precondition(lambda self: not self.running)
    @rule()
    def again(self) -> None:
        note("run again")
        self.run_again()

    # -- checks ----------------------------------------------------------------------------

    @invariant()
    def no_violation(self) -> None:
        assert self.world.violations == []

    @invariant()
    def outcome_matches(self) -> None:
        finished = self.sup.finished
        status = self.model.status
        if status == "running":
            assert finished is None
            assert self.sup.core.state == "running"
            return
        assert finished is not None, f"model {status}, core {self.sup.core.state}"
        expected = {
            "stopped": Outcome.STOPPED,
            "failed": Outcome.GAVE_UP,
            "startup_failed": Outcome.STARTUP_FAILED,
        }[status]
        assert finished.outcome is expected
        event(f"run ended: {status}")
        if status == "failed":
            assert finished.child == self.model.gave_up_by
        if status == "startup_failed":
            assert self.model.startup_failure is not None
            name, error = self.model.startup_failure
            assert (finished.child, describe_error(finished.error)) == (name, error)

    @invariant()
    def children_match(self) -> None:
        self._compare(self.sup, self.model)
        inner_sim, inner_model = self.inner_sim(), self.inner_model()
        if inner_model is not None:
            assert inner_sim is not None
            self._compare(inner_sim, inner_model)

    def _compare(self, sim: SimSupervisor, model: OtpModel) -> None:
        now = self.world.now
        actual = [
            (
                r.name,
                r.state.value,
                r.restarts,
                describe_error(r.last_error),
                r.uptime_seconds(now),
            )
            for r in sim.core.children()
        ]
        expected = [
            (
                c.name,
                c.state,
                c.restarts,
                c.last_error,
                None if c.started_at is None else now - c.started_at,
            )
            for c in model.children
        ]
        assert actual == expected, sim.path
        assert sim.core.total_restarts == model.total_restarts
        alive = sorted(k.name for k in sim.kids.values())
        assert alive == sorted(model.names("running")), sim.path

    @invariant()
    def journals_match(self) -> None:
        assert by_parent(self.world.journal) == by_parent(self.model_journal)


class CoreOverlaps(RuleBasedStateMachine):
    """Slow starts and stops, timeouts and operations overlapping: the invariants hold."""

    @initialize(
        strategy=strategies_,
        children=st.lists(restart_types, min_size=1, max_size=4),
        max_restarts=st.integers(0, 5),
        backoff=backoffs,
        seed=st.integers(0, 2**16),
        stop_modes=st.lists(st.sampled_from(["instant", "ignore", "manual"]), max_size=4),
    )
    def begin(
        self,
        strategy: Strategy,
        children: list[Restart],
        max_restarts: int,
        backoff: Backoff,
        seed: int,
        stop_modes: list[str],
    ) -> None:
        config = SupervisorConfig(
            strategy=strategy,
            max_restarts=max_restarts,
            period_seconds=5.0,
            min_uptime_seconds=None,
            backoff=backoff,
            children=tuple((f"c{i}", r) for i, r in enumerate(children)),
        )
        note(repr(config))
        self.world = World(config, seed=seed)
        for index, mode in enumerate(stop_modes):
            self.world.stop_modes[f"c{index}"] = mode
        self.sup = SimSupervisor(self.world, config, ("sup",))
        self.dynamic = itertools.count()
        self.added: list[str] = []
        self.window = ReferenceWindow(max_restarts, 5.0, None)
        self.checked_exits = 0
        self.gave_up = False
        self.sup.begin()
        self.world.settle()

    # -- behaviours ------------------------------------------------------------------------

    @rule(
        index=indices,
        start=st.sampled_from(["instant", "manual", "hang"]),
        stop=st.sampled_from(["instant", "ignore", "manual"]),
    )
    def set_behaviour(self, index: int, start: str, stop: str) -> None:
        names = [r.name for r in self.sup.core.children()] or ["c0"]
        name = pick(names, index)
        note(f"{name}: start {start} (from its next launch), stop {stop}")
        self.world.start_modes[name] = start
        self.world.stop_modes[name] = stop
        kid = self.sup.kids.get(name)
        if kid is not None:
            kid.stop_mode = stop

    @precondition(lambda self: any(not k.started for k in self.sup.kids.values()))
    @rule()
    def report_ready(self) -> None:
        for kid in list(self.sup.kids.values()):
            if not kid.started and kid.start_mode != "hang" and kid.nested is None:
                note(f"{kid.name} reports ready")
                self.world.queue.append(lambda kid=kid: self.sup.kid_ready(kid))
        self.world.settle()

    @precondition(lambda self: self.sup.kids)
    @rule(index=indices, normal=st.booleans())
    def kid_exits_on_its_own(self, index: int, normal: bool) -> None:
        kid = self.sup.kids[pick(sorted(self.sup.kids), index)]
        error = None if normal else Crash(f"{kid.name}@{kid.launch}")
        note(f"{kid.name} (signalled={kid.signalled}, started={kid.started}) exits: {error}")
        if self.sup.core.state == "stopping" and not kid.signalled:
            event("a child exits on its own while the supervisor stops")
        elif any(k.signalled for k in self.sup.kids.values()) and not kid.signalled:
            event("a child exits on its own while another one is being stopped")
        self.world.queue.append(lambda: self.sup.kid_exit(kid, error))
        self.world.settle()

    @precondition(lambda self: any(k.signalled for k in self.sup.kids.values()))
    @rule(raises=st.booleans())
    def signalled_kid_stops(self, raises: bool) -> None:
        for kid in list(self.sup.kids.values()):
            if kid.signalled:
                error = Crash(f"{kid.name} while stopping") if raises else None
                note(f"{kid.name} stops ({error})")
                self.world.queue.append(lambda kid=kid, e=error: self.sup.kid_exit(kid, e))
        self.world.settle()

    @rule(dt=time_steps)
    def advance_clock(self, dt: float) -> None:
        self.world.advance(self.sup, dt)

    @precondition(lambda self: self.sup.core.accepting)
    @rule(
        restart=restart_types,
        timeout=st.one_of(st.none(), st.sampled_from([0.1, 1.0])),
        shutdown=st.sampled_from([0.0, 1.0, 5.0]),
    )
    def start_child(self, restart: Restart, timeout: float | None, shutdown: float) -> None:
        name = f"d{next(self.dynamic)}"
        note(f"start_child {name} ({restart.value}, timeout {timeout}, shutdown {shutdown})")
        self.added.append(name)
        self.sup.add_child(name, restart, shutdown, timeout)
        self.world.settle()

    @precondition(lambda self: self.sup.core.accepting and self.sup.core.children())
    @rule(index=indices)
    def stop_child(self, index: int) -> None:
        name = pick([r.name for r in self.sup.core.children()], index)
        note(f"stop_child {name}")
        self.sup.stop_child(name)
        self.world.settle()

    @rule()
    def stop(self) -> None:
        note("stop")
        self.sup.stop()
        self.world.settle()

    # -- checks ----------------------------------------------------------------------------

    @invariant()
    def no_violation(self) -> None:
        assert self.world.violations == []

    @invariant()
    def records_agree_with_the_kids(self) -> None:
        core = self.sup.core
        for record in core.children():
            kid = self.sup.kids.get(record.name)
            if record.live:
                assert kid is not None, record
                assert kid.incarnation == record.incarnation, record
            else:
                assert kid is None, record
            if record.state is ChildState.RUNNING:
                assert kid is not None, record
                assert kid.started, record
                assert not kid.signalled, record
            elif record.state is ChildState.STOPPING:
                assert kid is not None, record
                assert kid.signalled, record
            elif record.state in (ChildState.RESTARTING, ChildState.EXITED):
                assert kid is None, record
        names = {r.name for r in core.children()}
        assert set(self.sup.kids) <= names

    @invariant()
    def only_crashes_outside_every_stop_count_and_the_window_decides(self) -> None:
        exits = self.sup.exits[self.checked_exits :]
        self.checked_exits = len(self.sup.exits)
        for exit in exits:
            if exit.counted:
                event("counted crash")
                assert not self.gave_up, "a crash counted after the supervisor gave up"
                allowed = self.window.allow_restart(self.world.now, exit.uptime_seconds)
                assert (exit.outcome is ExitOutcome.GIVE_UP) == (not allowed), exit
                self.gave_up = not allowed
            else:
                assert exit.outcome is not ExitOutcome.GIVE_UP, exit

    @invariant()
    def timed_out_starts_are_gone_at_once(self) -> None:
        assert not [k for k in self.sup.kids.values() if k.timed_out]

    @invariant()
    def one_start_and_one_stop_at_a_time(self) -> None:
        kids = list(self.sup.kids.values())
        assert sum(1 for k in kids if not k.started) <= 1
        assert sum(1 for k in kids if k.signalled) <= 1

    @invariant()
    def finished_means_nothing_alive(self) -> None:
        if self.sup.finished is not None:
            assert self.sup.kids == {}
            assert self.sup.core.finished

    @invariant()
    def starts_are_answered_once(self) -> None:
        for name in self.added:
            answers = self.sup.resolved.get(name, [])
            assert len(answers) <= 1, name
            record = self.sup.core.child(name)
            if answers and answers[0].failure is not None:
                assert record is None, f"{name} failed its start but is still a child"

    def teardown(self) -> None:
        # Whatever happened, a stop ends the run, with every start answered and no kid left.
        self.sup.stop()
        self.world.settle()
        for _ in range(200):
            if self.sup.finished is not None:
                break
            for kid in list(self.sup.kids.values()):
                if kid.stop_mode == "manual" and kid.signalled:
                    self.world.queue.append(lambda kid=kid: self.sup.kid_exit(kid, None))
            self.world.settle()
            self.world.advance(self.sup, 10.0)
        assert self.sup.finished is not None, "the stop never finished"
        assert self.sup.kids == {}
        assert self.world.violations == []
        for name in self.added:
            assert len(self.sup.resolved.get(name, [])) == 1, f"{name} never answered"


TestCoreVsModel = CoreVsModel.TestCase
TestCoreVsModel.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestCoreOverlaps = CoreOverlaps.TestCase
TestCoreOverlaps.settings = settings(max_examples=600, stateful_step_count=60, deadline=None)
