"""A simulated driver for :class:`~megatrio._policy._supervision.SupervisionCore`.

No event loop: a :class:`World` holds a clock, a FIFO of pending events and the supervisors.
Actions a core returns are performed at once, in order, as the real driver does; what a child
does in response (reporting ready, exiting) is an *event*, queued and fed back to the core
after the current batch of actions — as a real child does it from its own task, later. Nested
supervisors are children whose incarnation runs a core of its own.

How a simulated child behaves is set per child name, before it is launched:

* start: ``instant`` (ready at once), ``manual`` (ready when the test says), ``hang`` (never);
* stop: ``instant`` (exits as soon as it is told), ``ignore`` (exits only when its cancel
  deadline passes), ``manual`` (exits when the test says, or at the deadline).
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from megatrio._policy._supervision import (
    Action,
    CancelAt,
    Exited,
    ExitKind,
    Finished,
    Outcome,
    Ready,
    ScheduleRestart,
    SignalStop,
    Start,
    StartResolved,
    StopChildDone,
    SupervisionCore,
)
from megatrio._policy._window import RestartWindow
from megatrio.nursery._errors import describe
from tests.property.otp_model import Arms, SupervisorConfig


class Crash(Exception):
    pass


class StartFailure(Exception):
    pass


class StopFailure(Exception):
    pass


class GaveUp(Exception):
    pass


class InnerStartupFailed(Exception):
    pass


@dataclass(eq=False)
class Kid:
    """One launched incarnation of a simulated child."""

    sup: SimSupervisor
    name: str
    incarnation: int
    launch: int
    start_mode: str = "instant"
    stop_mode: str = "instant"
    started: bool = False
    signalled: bool = False
    """Told to stop by an operation of its supervisor."""
    timed_out: bool = False
    """Told to stop because its start took too long."""
    cancel_at: float = math.inf
    alive: bool = True
    nested: SimSupervisor | None = None

    @property
    def path(self) -> str:
        return "/".join((*self.sup.path, self.name))


@dataclass
class World:
    config: SupervisorConfig
    seed: int = 0
    now: float = 0.0
    arms: Arms = field(default_factory=Arms)
    journal: list[tuple[str, str]] = field(default_factory=list)
    queue: collections.deque[Callable[[], None]] = field(default_factory=collections.deque)
    rngs: dict[tuple[str, ...], random.Random] = field(default_factory=dict)
    start_modes: dict[str, str] = field(default_factory=dict)
    stop_modes: dict[str, str] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    """Invariants broken inside an action (checked by the machines after every step)."""

    def rng(self, path: tuple[str, ...]) -> random.Random:
        if path not in self.rngs:
            self.rngs[path] = random.Random(f"{self.seed}/{'/'.join(path)}")
        return self.rngs[path]

    def settle(self) -> None:
        """Feed every pending event to its core, until nothing is pending."""
        steps = 0
        while self.queue:
            steps += 1
            assert steps < 100_000, "the simulation does not settle"
            self.queue.popleft()()

    def supervisors(self, root: SimSupervisor) -> list[SimSupervisor]:
        """*root* and every supervisor nested below it, innermost first."""
        found: list[SimSupervisor] = []

        def walk(sup: SimSupervisor) -> None:
            for kid in sup.kids.values():
                if kid.nested is not None:
                    walk(kid.nested)
            found.append(sup)

        walk(root)
        return found

    def advance(self, root: SimSupervisor, dt: float) -> None:
        """Move the clock; fire due timers (innermost supervisors first) and deadlines."""
        self.now += dt
        for _ in range(1000):
            fired = False
            for sup in self.supervisors(root):
                for kid in list(sup.kids.values()):
                    if kid.alive and kid.cancel_at <= self.now:
                        fired = True
                        self.queue.append(lambda kid=kid: kid.sup.kid_exit(kid, None))
                if not sup.core.finished and sup.core.next_deadline() <= self.now:
                    fired = True
                    self.queue.append(lambda sup=sup: sup.timer())
            if not fired:
                return
            self.settle()
        raise AssertionError("timers keep firing at the same time")


class SimSupervisor:
    """One run of a supervisor: a fresh core, its live kids, what it reported."""

    def __init__(
        self,
        world: World,
        config: SupervisorConfig,
        path: tuple[str, ...],
        parent: Kid | None = None,
    ) -> None:
        self.world = world
        self.config = config
        self.path = path
        self.parent = parent
        window = RestartWindow(
            config.max_restarts, config.period_seconds, config.min_uptime_seconds
        )
        self.core: SupervisionCore[Exception] = SupervisionCore(
            config.strategy, window, config.backoff, world.rng(path)
        )
        self.kids: dict[str, Kid] = {}
        self.launches: collections.Counter[str] = collections.Counter()
        self.finished: Finished[Exception] | None = None
        self.ready = False
        self.resolved: dict[str, list[StartResolved[Exception]]] = collections.defaultdict(list)
        self.stop_done: collections.Counter[str] = collections.Counter()
        self.exits: list[Exited[Exception]] = []
        self.last_due: dict[str, float] = {}
        self.shutdown_seconds: dict[str, float] = {}
        self.told: set[int] = set()
        """Incarnations an operation told to stop: their exits must be shutdowns."""
        self._in_timer = False

    # -- feeding the core ------------------------------------------------------------------

    def perform(self, actions: list[Action[Exception]]) -> None:
        world = self.world
        for action in actions:
            if self.finished is not None:
                world.violations.append(f"{self.path}: action after Finished: {action}")
            kind = type(action)
            if kind is Start:
                self._launch(action)
            elif kind is SignalStop:
                self._signal(action)
            elif kind is CancelAt:
                kid = self._kid(action.name, action.incarnation)
                if kid is not None:
                    kid.cancel_at = min(kid.cancel_at, action.deadline)
                    if kid.cancel_at <= world.now:
                        world.queue.append(lambda kid=kid: self.kid_exit(kid, None))
            elif kind is Exited:
                self._check_exit(action)
                self.exits.append(action)
            elif kind is StartResolved:
                self.resolved[action.name].append(action)
            elif kind is StopChildDone:
                self.stop_done[action.name] += 1
            elif kind is ScheduleRestart:
                for name in action.names:
                    self.last_due[name] = action.due
            elif kind is Ready:
                if self.ready:
                    world.violations.append(f"{self.path}: Ready twice")
                self.ready = True
                if self.parent is not None:
                    world.queue.append(lambda kid=self.parent: kid.sup.kid_ready(kid))
            elif kind is Finished:
                self.finished = action
                if self.parent is not None:
                    world.queue.append(
                        lambda kid=self.parent, done=action: kid.sup.nested_finished(kid, done)
                    )

    def begin(self) -> None:
        self.perform(
            self.core.begin(
                [
                    (name, restart, self._shutdown(name), None)
                    for name, restart in self.config.children
                ],
                self.world.now,
            )
        )

    def _shutdown(self, name: str) -> float:
        if name == "n" and self.config.nested is not None:
            return math.inf
        return self.shutdown_seconds.get(name, 5.0)

    def add_child(
        self, name: str, restart: Any, shutdown: float = 5.0, timeout: float | None = None
    ) -> None:
        self.shutdown_seconds[name] = shutdown
        self.perform(self.core.add_child(name, restart, shutdown, timeout, self.world.now))

    def stop_child(self, name: str) -> None:
        self.perform(self.core.stop_child(name, self.world.now))

    def stop(self) -> None:
        self.perform(self.core.stop_requested(self.world.now))

    def timer(self) -> None:
        # Only a start timeout tells a child to stop from the timer.
        if not self.core.finished:
            self._in_timer = True
            try:
                actions = self.core.timer_fired(self.world.now)
            finally:
                self._in_timer = False
            self.perform_timer(actions)

    def perform_timer(self, actions: list[Action[Exception]]) -> None:
        self._in_timer = True
        try:
            self.perform(actions)
        finally:
            self._in_timer = False

    # -- children --------------------------------------------------------------------------

    def _kid(self, name: str, incarnation: int) -> Kid | None:
        kid = self.kids.get(name)
        return kid if kid is not None and kid.incarnation == incarnation else None

    def _launch(self, action: Start) -> None:
        world = self.world
        name = action.name
        if name in self.kids:
            world.violations.append(f"{self.path}: {name} launched while alive")
        starting = [k for k in self.kids.values() if not k.started]
        if starting:
            world.violations.append(f"{self.path}: {name} launched while {starting} starts")
        told = [k for k in self.kids.values() if k.signalled]
        if told:
            world.violations.append(f"{self.path}: {name} launched during a stop of {told}")
        due = self.last_due.pop(name, None)
        if due is not None and world.now < due:
            world.violations.append(f"{self.path}: {name} restarted at {world.now} < {due}")
        self.launches[name] += 1
        launch = self.launches[name]
        kid = Kid(
            self,
            name,
            action.incarnation,
            launch,
            start_mode=world.start_modes.get(name, "instant"),
            stop_mode=world.stop_modes.get(name, "instant"),
        )
        self.kids[name] = kid
        key = (*self.path, name)
        if world.arms.fail_starts.get(key, 0) > 0:
            world.arms.fail_starts[key] -= 1
            error = StartFailure(f"{name}@{launch}")
            world.queue.append(lambda: self.kid_exit(kid, error))
            return
        if name == "n" and self.config.nested is not None:
            inner = SimSupervisor(world, self.config.nested, key, parent=kid)
            kid.nested = inner
            world.queue.append(inner.begin)
            return
        if kid.start_mode == "instant":
            world.queue.append(lambda: self.kid_ready(kid))

    def kid_ready(self, kid: Kid) -> None:
        if not kid.alive or kid.started:
            return
        kid.started = True
        self.world.journal.append(("start", kid.path))
        self.perform(self.core.child_started(kid.name, kid.incarnation, self.world.now))

    def _signal(self, action: SignalStop) -> None:
        kid = self._kid(action.name, action.incarnation)
        if kid is None:
            self.world.violations.append(f"{self.path}: stop of a dead incarnation {action}")
            return
        if self._in_timer:
            if kid.started:
                self.world.violations.append(f"{kid.path}: timed out after it started")
            kid.timed_out = True
        else:
            kid.signalled = True
            self.told.add(kid.incarnation)
        if kid.nested is not None:
            inner = kid.nested
            self.world.queue.append(inner.stop)
            return
        # A child that never reports ready is stuck: only its cancellation ends it.
        if kid.stop_mode == "instant" and not kid.timed_out and kid.start_mode != "hang":
            key = (*self.path, kid.name)
            error: Exception | None = None
            if kid.started and key in self.world.arms.raise_on_stop:
                self.world.arms.raise_on_stop.discard(key)
                error = StopFailure(f"{kid.name}@{kid.launch}")
            self.world.queue.append(lambda: self.kid_exit(kid, error))

    def kid_exit(self, kid: Kid, error: Exception | None) -> None:
        """*kid* ends: on its own (a crash or a return), or because it was told to."""
        if not kid.alive:
            return
        kid.alive = False
        if self.kids.get(kid.name) is kid:
            del self.kids[kid.name]
        if kid.signalled and kid.started:
            self.world.journal.append(("stop", kid.path))
        if kid.nested is not None and kid.nested.finished is None:
            self.world.violations.append(f"{kid.path} exited before its own supervisor finished")
        if kid.started:
            actions = self.core.child_exited(kid.name, kid.incarnation, self.world.now, error)
        else:
            actions = self.core.start_failed(kid.name, kid.incarnation, self.world.now, error)
        self.perform(actions)

    def nested_finished(self, kid: Kid, finished: Finished[Exception]) -> None:
        if finished.outcome is Outcome.STARTUP_FAILED:
            error: Exception | None = InnerStartupFailed(f"{kid.name}@{kid.launch}")
        elif finished.outcome is Outcome.GAVE_UP:
            error = GaveUp(f"{kid.name}@{kid.launch}")
        else:
            error = None
        self.kid_exit(kid, error)

    def _check_exit(self, action: Exited[Exception]) -> None:
        if action.incarnation in self.told and action.kind is not ExitKind.SHUTDOWN:
            self.world.violations.append(
                f"{self.path}: {action.name} was told to stop, yet its exit is {action.kind}"
            )
        if action.incarnation not in self.told and action.kind is ExitKind.SHUTDOWN:
            self.world.violations.append(
                f"{self.path}: {action.name} exited on its own, yet its exit is a shutdown"
            )


def describe_error(error: BaseException | None) -> str | None:
    return None if error is None else describe(error)
