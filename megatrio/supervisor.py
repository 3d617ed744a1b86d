"""OTP supervisors on structured concurrency.

A :class:`Supervisor` owns a task group. Each child is described by a :class:`ChildSpec` and
runs as one task in that group, inside its own cancel scope. The supervisor starts children in
order, each only after the previous one reported ready (``task_status.started()``), restarts
them according to their :class:`Restart` type and the supervisor's :class:`Strategy`, limits
restarts with a :class:`RestartWindow`, and stops children one at a time in reverse start
order, each with its own two-phase shutdown (see :class:`~megatrio.ChildContext`).

Every decision is made by a sans-IO state machine
(:class:`megatrio._policy._supervision.SupervisionCore`); this module is its driver: it
launches and cancels tasks, keeps time and logs.

Exit classes, as in OTP:

* **normal** — the target returned without being asked to stop;
* **shutdown** — its own supervisor asked it to stop (never a crash, whatever it raised: an
  error is logged as the child's shutdown error and goes no further);
* **abnormal** — it raised an ``Exception`` without being asked to stop.

Cancellation from outside the supervisor, ``KeyboardInterrupt`` and ``SystemExit`` are never
counted as crashes: they propagate and take the tree down.

It is one module, longer than the house's ~400 lines, because it is one driver: each action
of the core is performed here, next to the log line and the snapshot state it changes.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable
from typing import Any, final

import anyio
import anyio.abc
import anyio.lowlevel

from ._exceptions import RestartIntensityExceeded, StartupFailed, SupervisorNotRunning
from ._policy._backoff import DEFAULT_BACKOFF, NO_BACKOFF, Backoff
from ._policy._supervision import (
    CancelAt,
    Exited,
    ExitKind,
    ExitOutcome,
    Finished,
    GiveUp,
    Outcome,
    Ready,
    Restart,
    ScheduleRestart,
    SignalStop,
    Start,
    StartFailure,
    StartResolved,
    StopChildDone,
    Strategy,
    SupervisionCore,
)
from ._policy._window import RestartWindow
from .nursery._backend import (
    Event,
    Scope,
    Spawn,
    new_event,
    new_scope,
    now,
    open_spawner,
    running_on_trio,
)
from .nursery._child import Incarnation, current_incarnation, run_incarnation
from .nursery._errors import describe, log_exception
from .nursery._spec import ChildSpec as ChildSpec
from .nursery._spec import ready_immediately as ready_immediately

__all__ = (
    "NO_BACKOFF",
    "Backoff",
    "ChildSpec",
    "Restart",
    "RestartWindow",
    "Strategy",
    "Supervisor",
    "ready_immediately",
)

log = logging.getLogger("megatrio.supervisor")


_NOT_STARTED = "returned before calling task_status.started()"


@final
class _Waiter:
    """A caller of start_child or stop_child, waiting for the core's answer."""

    __slots__ = ("done", "error", "failure", "value")

    def __init__(self, done: Event) -> None:
        self.done = done
        self.value: object = None
        self.failure: StartFailure | None = None
        self.error: Exception | None = None


@final
class _Run:
    """The state of one run of a supervisor: its core, its tasks and its waiters."""

    __slots__ = (
        "abandoned",
        "core",
        "finished",
        "live",
        "on_trio",
        "outcome",
        "paths",
        "spawn",
        "specs",
        "start_waiters",
        "stop_waiters",
        "timer",
        "wake",
    )

    def __init__(self, core: SupervisionCore[Exception], on_trio: bool, spawn: Spawn) -> None:
        self.core = core
        self.on_trio = on_trio
        self.spawn = spawn
        self.specs: dict[str, ChildSpec] = {}
        self.paths: dict[str, tuple[str, ...]] = {}
        self.live: dict[str, Incarnation] = {}
        self.start_waiters: dict[str, _Waiter] = {}
        self.stop_waiters: dict[str, _Waiter] = {}
        self.wake = new_event(on_trio)
        """Set by Ready or Finished."""
        self.finished = new_event(on_trio)
        self.outcome: Finished[Exception] | None = None
        self.timer: Scope | None = None
        self.abandoned = False


@final
class Supervisor:
    """An OTP supervisor: runs *children* under *strategy* with restart intensity.

    At most *max_restarts* restarts within *period_seconds* (a sliding window); with
    *min_uptime_seconds* set, only crashes of children that were up for less than that count.
    The crash that needs one restart too many makes the supervisor give up: it stops every
    child in reverse order and :meth:`run` raises :class:`RestartIntensityExceeded` with the
    last child error as ``__cause__``. A group restart counts as one restart.

    Restarts wait according to *backoff* (first restart immediate; pass :data:`NO_BACKOFF` for
    OTP's "always immediate"). *random_source* seeds the jitter for reproducible tests.

    The same object may be :meth:`run` again after it has returned (a parent restarting it):
    each run starts from the initial *children*, as an OTP supervisor does.

    Raises:
        ValueError: two children share a name, or an intensity argument is invalid.
    """

    def __init__(
        self,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        period_seconds: float = 5.0,
        min_uptime_seconds: float | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        name: str = "supervisor",
        random_source: random.Random | None = None,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a megatrio.Strategy, got {strategy!r}")
        if not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a megatrio.Backoff, got {backoff!r}")
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"supervisor name must be a non-empty string without '/': {name!r}")
        specs = tuple(children)
        seen: set[str] = set()
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise TypeError(f"children must be ChildSpec instances, got {spec!r}")
            if spec.name in seen:
                raise ValueError(f"duplicate child name {spec.name!r} in supervisor {name!r}")
            seen.add(spec.name)
        self.name = name
        self.strategy = strategy
        self.backoff = backoff
        # Validates the intensity arguments now; each run gets a fresh window like it.
        self._window = RestartWindow(max_restarts, period_seconds, min_uptime_seconds)
        self._initial = specs
        # Kept across runs: a parent that restarts this supervisor runs this same object.
        self._give_ups = 0
        self._rng = random_source if random_source is not None else random.Random()
        self._path: tuple[str, ...] = (name,)
        self._run: _Run | None = None
        self._core: SupervisionCore[Exception] | None = None
        """The last run's core (kept after the run, for snapshots)."""
        self._state = "idle"

    @property
    def max_restarts(self) -> int:
        return self._window.max_restarts

    @property
    def period_seconds(self) -> float:
        return self._window.period_seconds

    @property
    def min_uptime_seconds(self) -> float | None:
        return self._window.min_uptime_seconds

    def child_spec(
        self,
        name: str | None = None,
        *,
        restart: Restart = Restart.PERMANENT,
        shutdown_seconds: float = math.inf,
    ) -> ChildSpec:
        """A :class:`ChildSpec` that runs this supervisor as a child of another one.

        The default *shutdown_seconds* is infinite, as OTP's for supervisors: the parent waits
        while this supervisor stops its own children, each within its own grace.
        """
        return ChildSpec(
            name or self.name, self.run, restart=restart, shutdown_seconds=shutdown_seconds
        )

    # -- running ----------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order, then supervise them until stopped.

        Reports started once every initial child has started. Returns after :meth:`stop` (or,
        as a child, its parent's stop request) once every child has stopped. Cancelling it
        cancels every child at once (an error a child raises while being cancelled is logged
        as its shutdown error, not raised).

        Raises:
            StartupFailed: an initial child failed to start; the ones already started were
                stopped in reverse order first.
            RestartIntensityExceeded: too many restarts; every child was stopped first.
            RuntimeError: it is already running.
        """
        if self._run is not None:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        parent = current_incarnation()
        self._path = (self.name,) if parent is None else parent.path
        if parent is not None:
            parent.snapshot = self.snapshot
        on_trio = running_on_trio()
        window = RestartWindow(self.max_restarts, self.period_seconds, self.min_uptime_seconds)
        core: SupervisionCore[Exception] = SupervisionCore(
            self.strategy, window, self.backoff, self._rng
        )
        self._core = core
        self._state = "starting"
        outcome: Finished[Exception] | None = None
        try:
            async with open_spawner(on_trio) as spawn:
                run = _Run(core, on_trio, spawn)
                self._run = run
                helpers: list[Scope] = []
                try:
                    self._spawn_helper(run, helpers, self._run_timer, run)
                    if parent is not None:
                        self._spawn_helper(run, helpers, self._follow_parent, parent)
                    for spec in self._initial:
                        run.specs[spec.name] = spec
                    self._perform(
                        run,
                        core.begin(
                            [
                                (s.name, s.restart, s.shutdown_seconds, s.start_timeout_seconds)
                                for s in self._initial
                            ],
                            now(on_trio),
                        ),
                    )
                    await run.wake.wait()
                    if run.outcome is None:
                        self._state = "running"
                        task_status.started()
                        await run.finished.wait()
                    outcome = run.outcome
                except BaseException:
                    run.abandoned = True
                    core.abandon()
                    self._release_waiters(run)
                    raise
                finally:
                    for scope in helpers:
                        scope.cancel()
        finally:
            self._run = None
            if outcome is None or outcome.outcome is Outcome.STOPPED:
                self._state = "stopped"
            else:
                self._state = "failed"
        if outcome is not None:
            self._raise_outcome(outcome)

    def stop(self) -> None:
        """Ask the supervisor to stop: no more restarts, children stop in reverse order.

        Idempotent and not a checkpoint; :meth:`run` returns once every child has stopped. A
        child being started at that moment gets its stop request too.
        """
        run = self._run
        if run is None or run.abandoned:
            return
        self._perform(run, run.core.stop_requested(now(run.on_trio)))

    async def start_child(self, spec: ChildSpec) -> object:
        """Add *spec* as the last child and start it; return the value it passed to started().

        The start belongs to the supervisor, not to the caller: cancelling this call only
        stops the wait — the child still starts and, once ready, is supervised like any other
        (a failed start is then logged, not raised).

        Raises:
            StartupFailed: the child failed, or timed out, before it was started (it is not
                added), or it was removed by :meth:`stop_child` first.
            SupervisorNotRunning: the supervisor is not running, or stopped before the child
                was ready.
            ValueError: a child with that name already exists.
        """
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child takes a ChildSpec, got {spec!r}")
        run = self._running("start a child")
        try:
            actions = run.core.add_child(
                spec.name,
                spec.restart,
                spec.shutdown_seconds,
                spec.start_timeout_seconds,
                now(run.on_trio),
            )
        except ValueError:
            raise ValueError(
                f"duplicate child name {spec.name!r} in supervisor {self.name!r}"
            ) from None
        waiter = _Waiter(new_event(run.on_trio))
        run.specs[spec.name] = spec
        run.start_waiters[spec.name] = waiter
        self._perform(run, actions)
        await waiter.done.wait()
        if waiter.failure is None:
            value, waiter.value = waiter.value, None
            return value
        if waiter.failure is StartFailure.STOPPING:
            raise SupervisorNotRunning(
                f"cannot start child {spec.name!r}: supervisor {self.name!r} is stopping"
            )
        raise StartupFailed(
            spec.name, _failure_reason(waiter.failure, waiter.error, spec)
        ) from waiter.error

    async def stop_child(self, name: str) -> None:
        """Stop the child *name* (two-phase, within its grace) and remove it.

        A child stopped this way is never counted as a crash and is not restarted. The stop
        belongs to the supervisor: cancelling this call only stops the wait.

        Raises:
            LookupError: there is no child called *name*.
            SupervisorNotRunning: the supervisor is not running or is stopping.
        """
        run = self._running("stop a child")
        try:
            actions = run.core.stop_child(name, now(run.on_trio))
        except LookupError:
            raise LookupError(f"supervisor {self.name!r} has no child {name!r}") from None
        waiter = run.stop_waiters.get(name)
        if waiter is None:
            waiter = run.stop_waiters[name] = _Waiter(new_event(run.on_trio))
        self._perform(run, actions)
        await waiter.done.wait()

    def snapshot(self) -> dict[str, Any]:
        """The supervision tree below this supervisor as plain data (JSON-serialisable).

        Not a checkpoint. ``restarts`` counts every restart of this run; ``restarts_in_window``
        the crashes the restart window still holds (the supervisor gives up at one more than
        ``max_restarts``); ``give_ups`` how often this supervisor gave up, over all its runs.
        Each child has ``name``, ``state``, ``restart``, ``restarts``, ``uptime_seconds``
        (``None`` when not running), ``last_error`` (one line or ``None``), ``info`` when the
        child annotated itself (:meth:`ChildContext.annotate`) and, for a nested supervisor,
        ``supervisor`` (its own snapshot).
        """
        core = self._core
        run = self._run
        children: list[dict[str, Any]] = []
        total = in_window = 0
        if core is not None:
            total = core.total_restarts
            current = now(run.on_trio) if run is not None else 0.0
            if run is not None:
                in_window = core.window.in_window(current)
            for record in core.children():
                incarnation = None if run is None else run.live.get(record.name)
                entry: dict[str, Any] = {
                    "name": record.name,
                    "state": record.state.value,
                    "restart": record.restart.value,
                    "restarts": record.restarts,
                    "uptime_seconds": record.uptime_seconds(current),
                    "last_error": None
                    if record.last_error is None
                    else describe(record.last_error),
                }
                if incarnation is not None:
                    if incarnation.info:
                        entry["info"] = dict(incarnation.info)
                    if incarnation.snapshot is not None:
                        entry["supervisor"] = incarnation.snapshot()
                children.append(entry)
        return {
            "name": self.name,
            "path": "/".join(self._path),
            "state": self._state_word(),
            "strategy": self.strategy.value,
            "max_restarts": self.max_restarts,
            "period_seconds": self.period_seconds,
            "min_uptime_seconds": self.min_uptime_seconds,
            "restarts": total,
            "restarts_in_window": in_window,
            "give_ups": self._give_ups,
            "children": children,
        }

    # -- internals --------------------------------------------------------------------------

    def _state_word(self) -> str:
        run = self._run
        if run is not None and run.core.state == "stopping":
            return "stopping"
        return self._state

    def _running(self, what: str) -> _Run:
        run = self._run
        if run is None or run.abandoned or not run.core.accepting:
            state = "not running" if run is None else self._state_word()
            raise SupervisorNotRunning(f"cannot {what}: supervisor {self.name!r} is {state}")
        return run

    @staticmethod
    def _spawn_helper(
        run: _Run, scopes: list[Scope], fn: Callable[..., Any], *args: object
    ) -> None:
        """Run ``fn(*args)`` in the run's task group until the run ends."""
        scope = new_scope(run.on_trio)
        scopes.append(scope)

        async def helper() -> None:
            with scope:
                await fn(*args)

        run.spawn(helper)

    async def _run_timer(self, run: _Run) -> None:
        """Call the core's timer whenever its next deadline passes."""
        core = run.core
        while True:
            scope = new_scope(run.on_trio)
            scope.deadline = core.next_deadline()
            run.timer = scope
            with scope:
                await anyio.sleep_forever()
            run.timer = None
            self._perform(run, core.timer_fired(now(run.on_trio)))

    async def _follow_parent(self, parent: Incarnation) -> None:
        await parent.wait_stopping()
        self.stop()

    def _perform(self, run: _Run, actions: list[Any]) -> None:
        """Carry out the core's actions, in order. Not a checkpoint; never raises."""
        rearm = False
        for action in actions:
            kind = type(action)
            if kind is Start:
                rearm = True  # a start may have a start timeout
                self._launch(run, action)
            elif kind is SignalStop:
                incarnation = run.live.get(action.name)
                if incarnation is not None and incarnation.number == action.incarnation:
                    incarnation.signal_stop()
            elif kind is CancelAt:
                incarnation = run.live.get(action.name)
                if incarnation is not None and incarnation.number == action.incarnation:
                    incarnation.cancel_at(action.deadline)
                    if not incarnation.listened and -math.inf < action.deadline < math.inf:
                        run.spawn(_cancel_if_deaf, incarnation)
            elif kind is Exited:
                self._log_exit(run, action)
            elif kind is StartResolved:
                self._resolve_start(run, action)
            elif kind is StopChildDone:
                stop_waiter = run.stop_waiters.pop(action.name, None)
                if stop_waiter is not None:
                    stop_waiter.done.set()
            elif kind is Ready:
                run.wake.set()
            elif kind is GiveUp:
                log.error(
                    "supervisor %s giving up after child %s: more than %d restart(s) within %g s",
                    "/".join(self._path),
                    action.name,
                    self.max_restarts,
                    self.period_seconds,
                )
            elif kind is Finished:
                run.outcome = action
                self._release_waiters(run)
                run.wake.set()
                run.finished.set()
            elif kind is ScheduleRestart:
                rearm = True
        # Only a start or a scheduled restart can bring the core's next deadline forward; a
        # deadline that moved back only makes the timer fire for nothing.
        timer = run.timer
        if rearm and timer is not None:
            deadline = run.core.next_deadline()
            if deadline != timer.deadline:
                timer.deadline = deadline

    def _launch(self, run: _Run, action: Start) -> None:
        name = action.name
        spec = run.specs[name]
        path = run.paths.get(name)
        if path is None:
            path = run.paths[name] = (*self._path, name)
        incarnation = Incarnation(name, path, action.incarnation, run.on_trio, self)
        run.live[name] = incarnation
        run.spawn(run_incarnation, incarnation, spec.target, spec.args, name="/".join(path))

    def _resolve_start(self, run: _Run, action: StartResolved[Exception]) -> None:
        waiter = run.start_waiters.pop(action.name, None)
        if waiter is None:
            return
        waiter.failure = action.failure
        waiter.error = action.error
        if action.failure is None:
            incarnation = run.live.get(action.name)
            if incarnation is not None:
                waiter.value, incarnation.started_value = incarnation.started_value, None
        waiter.done.set()

    @staticmethod
    def _release_waiters(run: _Run) -> None:
        for waiter in run.start_waiters.values():
            waiter.failure = StartFailure.STOPPING
            waiter.done.set()
        run.start_waiters.clear()
        for waiter in run.stop_waiters.values():
            waiter.done.set()
        run.stop_waiters.clear()

    def _log_exit(self, run: _Run, action: Exited[Exception]) -> None:
        error, kind, outcome = action.error, action.kind, action.outcome
        if kind is ExitKind.SHUTDOWN and error is None:
            return  # the common case of every stop: nothing to say
        path = "/".join(run.paths.get(action.name) or (*self._path, action.name))
        if kind is ExitKind.FAILED_START:
            spec = run.specs.get(action.name)
            reason = _failure_reason(action.failure or StartFailure.FAILED, error, spec)
            if error is not None:
                log_exception(
                    log, logging.ERROR, error, "child %s failed to start: %s", path, reason
                )
            else:
                log.error("child %s failed to start: %s", path, reason)
        elif kind is ExitKind.SHUTDOWN:
            if error is not None:
                log_exception(
                    log,
                    logging.ERROR,
                    error,
                    "child %s raised while stopping: %s",
                    path,
                    describe(error),
                )
        elif error is not None:
            log_exception(
                log,
                logging.ERROR,
                error,
                "child %s crashed after %.3f s: %s",
                path,
                action.uptime_seconds,
                describe(error),
            )
        elif outcome is ExitOutcome.RESTART:
            log.warning(
                "child %s exited normally after %.3f s; restarting", path, action.uptime_seconds
            )
        if kind is not ExitKind.SHUTDOWN and outcome in (
            ExitOutcome.REMOVED,
            ExitOutcome.LEFT_EXITED,
        ):
            spec = run.specs.get(action.name)
            restart = "" if spec is None else f" ({spec.restart.value})"
            log.info("child %s exited (%s); not restarted%s", path, kind.value, restart)

    # -- reports from the children's tasks (synchronous, from Incarnation) ------------------

    def _child_started(self, incarnation: Incarnation, up: bool) -> None:
        run = self._run
        if run is None or run.abandoned or run.live.get(incarnation.name) is not incarnation:
            return
        self._perform(
            run,
            run.core.child_started(incarnation.name, incarnation.number, now(run.on_trio), up=up),
        )

    def _child_up(self, incarnation: Incarnation) -> None:
        run = self._run
        if run is None or run.abandoned or run.live.get(incarnation.name) is not incarnation:
            return
        run.core.child_up(incarnation.name, incarnation.number, now(run.on_trio))

    def _child_ended(self, incarnation: Incarnation, error: Exception | None, lost: bool) -> None:
        run = self._run
        if run is None or run.live.get(incarnation.name) is not incarnation:
            return
        del run.live[incarnation.name]
        if run.abandoned:
            return
        if lost:
            # The tree is being torn down around this child; nothing is decided any more.
            return
        current = now(run.on_trio)
        if incarnation.started_at is None:
            actions = run.core.start_failed(incarnation.name, incarnation.number, current, error)
        else:
            actions = run.core.child_exited(incarnation.name, incarnation.number, current, error)
        self._perform(run, actions)

    def _raise_outcome(self, outcome: Finished[Exception]) -> None:
        if outcome.outcome is Outcome.GAVE_UP:
            self._give_ups += 1
            give_up = RestartIntensityExceeded(self.name, self.max_restarts, self.period_seconds)
            raise give_up from outcome.error
        if outcome.outcome is Outcome.STARTUP_FAILED:
            assert outcome.child is not None
            spec = next((s for s in self._initial if s.name == outcome.child), None)
            reason = _failure_reason(outcome.failure or StartFailure.FAILED, outcome.error, spec)
            raise StartupFailed(outcome.child, reason) from outcome.error

    def __repr__(self) -> str:
        run = self._run
        count = 0 if self._core is None else len(self._core.children())
        state = "not running" if run is None else self._state_word()
        return f"<Supervisor {self.name!r} {state} children={count}>"


async def _cancel_if_deaf(incarnation: Incarnation) -> None:
    """A child that has not looked at its stop signal cannot hear it: waiting out its grace
    would only delay every child stopped after it, so it is cancelled at once. It first gets
    two scheduling rounds, for a task it spawned just before the stop to start watching."""
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()
    if not incarnation.listened and incarnation.ended_at is None:
        incarnation.cancel_at(-math.inf)


def _failure_reason(
    failure: StartFailure, error: BaseException | None, spec: ChildSpec | None
) -> str:
    if failure is StartFailure.TIMED_OUT:
        timeout = None if spec is None else spec.start_timeout_seconds
        limit = "its start timeout" if timeout is None else f"{timeout:g} s"
        return f"did not report ready within {limit}"
    if failure is StartFailure.REMOVED:
        return "stopped by stop_child() before it was ready"
    if failure is StartFailure.GROUP_RESTART:
        return "a restart of its group stopped it before it was ready (temporary: not restarted)"
    if failure is StartFailure.STOPPING:
        return "the supervisor stopped before it was ready"
    return _NOT_STARTED if error is None else describe(error)
