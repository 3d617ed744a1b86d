"""The OTP supervisor's decisions as a sans-IO state machine.

:class:`SupervisionCore` owns every decision a supervisor makes — which children to start,
stop and restart for each strategy and restart type, the restart intensity, the backoff, when
to give up, the stop order — and nothing else. Like h11's or hypercorn's protocol classes it
does no I/O and never waits: its driver (:class:`megatrio.Supervisor`) feeds it *events*
(``add_child``, ``child_started``, ``child_exited``, ``start_failed``, ``stop_requested``,
``stop_child``, ``timer_fired``), each with ``now`` from the driver's clock, and performs the
*actions* each call returns (:class:`Start`, :class:`SignalStop`, :class:`CancelAt`, ...), in
order. Hypothesis drives this class directly, at full speed, against an independent model.

The rules, in OTP's vocabulary:

* Children start one at a time, in child order: a child is launched only when no other start
  is in flight and no stop operation is under way (so a group restart stops first, then starts).
  A start that does not report ready within its ``start_timeout_seconds`` is a failed start.
* Stops are *operations* run one at a time, each stopping one child at a time in reverse
  child order: a group restart (the siblings its strategy covers), ``stop_child`` (one child),
  and the final stop of everything (after :meth:`~SupervisionCore.stop_requested`, a give-up or
  a failed initial start). Stopping a child is two-phase: :class:`SignalStop`, then
  :class:`CancelAt` at ``now + shutdown_seconds``; the next child is signalled only after the
  previous one has exited.
* An exit the supervisor asked for is a *shutdown*, whatever the child raised (an error is a
  shutdown error: reported, never a crash). An exit of a child that an operation under way is
  going to stop anyway is absorbed by that operation (reported, not counted), as OTP's
  ``shutdown`` consumes an ``'EXIT'`` already in the mailbox.
* Any other exit is classified by restart type: ``TEMPORARY`` children are removed,
  ``TRANSIENT`` children that returned normally are left exited, everything else needs a
  restart. The restart window decides whether it may happen; if not, the supervisor gives up.
  A group restart counts once. A failed restart is a crash with no uptime; the failed first
  start of a child added with ``add_child`` removes it (its caller gets the error); a failed
  initial start fails the whole supervisor.
* Restarts wait for the backoff (first immediate), then join the start queue.

It is one module, longer than the house's ~400 lines, on purpose: the rules above are
invariants across every event handler (the one-start-in-flight rule, the operation queue, the
window count), and splitting the handlers apart would hide which handler keeps which one.
"""

from __future__ import annotations

import abc
import collections
import enum
import heapq
import itertools
import math
import random
from collections.abc import Iterable
from typing import Generic, NamedTuple, TypeVar, final

from ._backoff import Backoff
from ._window import RestartWindow

E = TypeVar("E")
"""The driver's error type: the core stores errors and hands them back, never inspects them."""


class Restart(enum.Enum):
    """When a child that exited is restarted."""

    PERMANENT = "permanent"
    """Always, whatever the exit (a normal return too)."""
    TRANSIENT = "transient"
    """Only after an abnormal exit; a normal return leaves it exited."""
    TEMPORARY = "temporary"
    """Never; when it exits (or a group restart stops it) it is removed."""


class Strategy(enum.Enum):
    """Which children a restart covers."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that exited."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped in reverse order, then all start in order."""
    REST_FOR_ONE = "rest_for_one"
    """The child that exited and every child started after it."""


class ChildState(enum.Enum):
    """A child's state as snapshots show it."""

    STARTING = "starting"
    """Waiting for its first start, or launched and not yet ready."""
    RUNNING = "running"
    STOPPING = "stopping"
    """Asked to stop; still running."""
    RESTARTING = "restarting"
    """Waiting to be started again (backoff, or the stop of its group)."""
    EXITED = "exited"


class ExitKind(enum.Enum):
    """How an incarnation ended, as the core classified it."""

    NORMAL = "normal"
    """Returned without being asked to stop."""
    ABNORMAL = "abnormal"
    """Raised without being asked to stop: a crash."""
    SHUTDOWN = "shutdown"
    """Its supervisor asked it to stop (an error it raised is a shutdown error)."""
    FAILED_START = "failed_start"
    """Raised, returned or timed out before it reported ready."""


class Outcome(enum.Enum):
    """How a supervisor's run ended (see :class:`Finished`)."""

    STOPPED = "stopped"
    GAVE_UP = "gave_up"
    STARTUP_FAILED = "startup_failed"


class StartFailure(enum.Enum):
    """Why a start did not succeed (see :class:`StartResolved`)."""

    FAILED = "failed"
    """The child raised or returned before it reported ready."""
    TIMED_OUT = "timed_out"
    """It did not report ready within its ``start_timeout_seconds``."""
    STOPPING = "stopping"
    """The supervisor stopped before the child was ready."""
    REMOVED = "removed"
    """``stop_child`` removed it before it was ready."""
    GROUP_RESTART = "group_restart"
    """A temporary child: a restart of its group stopped it before it was ready."""


class ExitOutcome(enum.Enum):
    """What the core does about an exit (see :class:`Exited`)."""

    RESTART = "restart"
    """It will be restarted (after its group's stop and its backoff)."""
    REMOVED = "removed"
    """It is removed (temporary, a failed first start, stop_child)."""
    LEFT_EXITED = "left_exited"
    """It stays exited (a transient child's normal return, or the supervisor is stopping)."""
    GIVE_UP = "give_up"
    """It needed one restart too many: the supervisor gives up."""
    STARTUP_FAILED = "startup_failed"
    """An initial child failed to start: the supervisor fails."""


# -- actions ---------------------------------------------------------------------------------


class Start(NamedTuple):
    """Launch incarnation *incarnation* of child *name*."""

    name: str
    incarnation: int


class SignalStop(NamedTuple):
    """Phase one of a stop: tell incarnation *incarnation* of *name* to stop."""

    name: str
    incarnation: int


class CancelAt(NamedTuple):
    """Phase two: cancel what is left of the incarnation at *deadline* (``-inf``: at once,
    ``inf``: never)."""

    name: str
    incarnation: int
    deadline: float


class Exited(NamedTuple, Generic[E]):
    """A report for the log: how an incarnation ended and what happens next."""

    name: str
    incarnation: int
    kind: ExitKind
    error: E | None
    uptime_seconds: float
    outcome: ExitOutcome
    failure: StartFailure | None = None
    counted: bool = False
    """The exit was a crash the restart window counted (not a shutdown, not absorbed)."""


class ScheduleRestart(NamedTuple):
    """*names* restart (in child order) once *due* has passed; wake the core then."""

    names: tuple[str, ...]
    due: float


class StartResolved(NamedTuple, Generic[E]):
    """The first start of a child added with ``add_child`` is decided: ready (``failure`` is
    None) or not, and why."""

    name: str
    failure: StartFailure | None
    error: E | None


class StopChildDone(NamedTuple):
    """``stop_child(name)`` is complete: the child has exited and is removed."""

    name: str


class Ready(NamedTuple):
    """Every initial child has started: the supervisor itself is ready."""


class GiveUp(NamedTuple, Generic[E]):
    """The crash of *name* needed more restarts than the intensity allows; the supervisor
    stops everything and then fails with *error* as the cause."""

    name: str
    error: E | None


class Finished(NamedTuple, Generic[E]):
    """Every child has exited: the run is over. For ``GAVE_UP``, *error* is the last child
    error; for ``STARTUP_FAILED``, *child* failed to start with *error* (*failure* says how)."""

    outcome: Outcome
    child: str | None = None
    error: E | None = None
    failure: StartFailure | None = None


Action = (
    Start
    | SignalStop
    | CancelAt
    | Exited[E]
    | ScheduleRestart
    | StartResolved[E]
    | StopChildDone
    | Ready
    | GiveUp[E]
    | Finished[E]
)


class _Mode(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"


@final
class ChildRecord(Generic[E]):
    """The core's record of one child across its incarnations. Read it; never write it."""

    __slots__ = (
        "attempt",
        "awaiting_start",
        "ever_started",
        "incarnation",
        "initial",
        "last_error",
        "launched",
        "name",
        "order",
        "removing",
        "restart",
        "restart_due",
        "restart_token",
        "restarts",
        "shutdown_seconds",
        "start_deadline",
        "start_timeout_seconds",
        "started",
        "state",
        "timed_out",
        "up_since",
    )

    def __init__(
        self,
        name: str,
        order: int,
        restart: Restart,
        shutdown_seconds: float,
        start_timeout_seconds: float | None,
        initial: bool,
    ) -> None:
        self.name = name
        self.order = order
        self.restart = restart
        self.shutdown_seconds = shutdown_seconds
        self.start_timeout_seconds = start_timeout_seconds
        self.initial = initial
        self.state = ChildState.STARTING
        self.incarnation: int | None = None
        """The live incarnation (launched, not yet exited), if any."""
        self.started = False
        """The live incarnation has reported ready."""
        self.up_since: float | None = None
        self.timed_out = False
        """The live incarnation did not report ready in time and was cancelled."""
        self.start_deadline: float | None = None
        self.launched = False
        """An incarnation was launched before: launching another is a restart."""
        self.ever_started = False
        self.awaiting_start = not initial
        """An ``add_child`` caller waits for this child's first start."""
        self.removing = False
        """A ``stop_child`` of this child is queued or under way."""
        self.restarts = 0
        self.attempt = 0
        self.restart_due: float | None = None
        """When it may be launched (``-inf``: now) while it waits; None otherwise."""
        # Identifies the one valid entry of this child in the start heaps; every change of
        # restart_due bumps it, which makes older entries stale.
        self.restart_token = 0
        self.last_error: E | None = None

    @property
    def live(self) -> bool:
        """Whether an incarnation is launched and has not exited."""
        return self.incarnation is not None

    def uptime_seconds(self, now: float) -> float | None:
        """Uptime of the live, started incarnation (0.0 while not yet up), else None."""
        if self.incarnation is None or not self.started:
            return None
        return 0.0 if self.up_since is None else now - self.up_since

    def __repr__(self) -> str:
        return f"<ChildRecord {self.name!r} {self.state.value} inc={self.incarnation}>"


class _Op(abc.ABC, Generic[E]):
    """A stop operation: stops its children one at a time (reverse order), then completes."""

    __slots__ = ("current", "queue")

    def __init__(self) -> None:
        self.current: ChildRecord[E] | None = None
        """The child told to stop, whose exit the operation waits for."""
        self.queue: list[ChildRecord[E]] = []
        """Children still to stop, the next one last."""

    @abc.abstractmethod
    def covers(self, child: ChildRecord[E]) -> bool:
        """Whether this operation is going to stop *child* (so absorbs its exit)."""


class _GroupRestart(_Op[E]):
    """Restart *trigger* and the siblings its strategy covers (decided when it begins)."""

    __slots__ = ("affected", "begun", "pending", "trigger", "uptime")

    def __init__(self, trigger: ChildRecord[E], uptime: float) -> None:
        super().__init__()
        self.trigger = trigger
        self.uptime = uptime
        self.begun = False
        self.affected: list[ChildRecord[E]] = []
        self.pending: set[int] = set()
        """Orders of the siblings this restart covers."""

    def covers(self, child: ChildRecord[E]) -> bool:
        return child.order in self.pending


class _StopChild(_Op[E]):
    __slots__ = ("child",)

    def __init__(self, child: ChildRecord[E]) -> None:
        super().__init__()
        self.child = child

    def covers(self, child: ChildRecord[E]) -> bool:
        return child is self.child


class _StopAll(_Op[E]):
    __slots__ = ("child", "error", "failure", "outcome")

    def __init__(
        self,
        outcome: Outcome,
        child: str | None,
        error: E | None,
        failure: StartFailure | None,
    ) -> None:
        super().__init__()
        self.outcome = outcome
        self.child = child
        self.error = error
        self.failure = failure

    def covers(self, child: ChildRecord[E]) -> bool:
        return True


@final
class SupervisionCore(Generic[E]):
    """Every decision of one supervisor run, as a state machine without I/O.

    Create one per run with a fresh :class:`RestartWindow`, the *backoff* and *rng* (the
    jitter source). Each event method takes ``now`` — a monotonic clock that never goes back —
    and returns the actions to perform, in order. The driver reports every incarnation it
    launched exactly once as ended: :meth:`child_exited` after :meth:`child_started`, or
    :meth:`start_failed` before it; and it calls :meth:`timer_fired` once
    :meth:`next_deadline` has passed.

    Event methods raise ValueError for a duplicate name, LookupError for an unknown one and
    RuntimeError for an event the run's state does not allow; the state is unchanged then.
    """

    __slots__ = (
        "_by_name",
        "_children",
        "_incarnations",
        "_initial_pending",
        "_mode",
        "_ops",
        "_order",
        "_out",
        "_ready",
        "_starting",
        "_timers",
        "backoff",
        "rng",
        "strategy",
        "total_restarts",
        "window",
    )

    def __init__(
        self,
        strategy: Strategy,
        window: RestartWindow,
        backoff: Backoff,
        rng: random.Random,
    ) -> None:
        self.strategy = strategy
        self.window = window
        self.backoff = backoff
        self.rng = rng
        self.total_restarts = 0
        """Launches that were restarts, over the whole run."""
        self._mode = _Mode.STARTING
        self._children: list[ChildRecord[E]] = []
        self._by_name: dict[str, ChildRecord[E]] = {}
        self._order = itertools.count()
        self._incarnations = itertools.count(1)
        self._ops: collections.deque[_Op[E]] = collections.deque()
        self._starting: ChildRecord[E] | None = None
        self._initial_pending = 0
        # Children waiting to be launched: in _timers (due, order, token, child) until their
        # backoff has passed, then in _ready (order, token, child), launched lowest order
        # first. An entry is valid while its token is the child's restart_token.
        self._timers: list[tuple[float, int, int, ChildRecord[E]]] = []
        self._ready: list[tuple[int, int, ChildRecord[E]]] = []
        self._out: list[Action[E]] = []

    # -- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``starting``, ``running``, ``stopping`` or ``finished``."""
        return self._mode.value

    @property
    def accepting(self) -> bool:
        """Whether :meth:`add_child` and :meth:`stop_child` are allowed now."""
        return self._mode is _Mode.STARTING or self._mode is _Mode.RUNNING

    @property
    def finished(self) -> bool:
        return self._mode is _Mode.FINISHED

    def children(self) -> list[ChildRecord[E]]:
        """The child records, in child order (a copy of the list)."""
        return list(self._children)

    def child(self, name: str) -> ChildRecord[E] | None:
        return self._by_name.get(name)

    def next_deadline(self) -> float:
        """When :meth:`timer_fired` is due next (``inf``: no timer)."""
        due = math.inf
        timers = self._timers
        while timers:
            when, _, token, child = timers[0]
            if child.restart_token == token:
                due = when
                break
            heapq.heappop(timers)
        starting = self._starting
        if starting is not None and starting.start_deadline is not None:
            due = min(due, starting.start_deadline)
        return due

    # -- events ----------------------------------------------------------------------------

    def begin(
        self, children: Iterable[tuple[str, Restart, float, float | None]], now: float
    ) -> list[Action[E]]:
        """The run begins with these initial children ``(name, restart, shutdown_seconds,
        start_timeout_seconds)``, started in order. With none, it is :class:`Ready` at once."""
        for name, restart, shutdown, timeout in children:
            self._new_record(name, restart, shutdown, timeout, initial=True)
        self._check_ready()
        self._serve_starts(now)
        return self._flush()

    def add_child(
        self,
        name: str,
        restart: Restart,
        shutdown_seconds: float,
        start_timeout_seconds: float | None,
        now: float,
    ) -> list[Action[E]]:
        """Add a child as the last one; its start joins the queue, and a
        :class:`StartResolved` for it follows (from this call or a later one).

        Raises:
            ValueError: a child with that name exists.
            RuntimeError: the run is stopping or finished.
        """
        if not self.accepting:
            raise RuntimeError(f"cannot add a child while {self._mode.value}")
        self._new_record(name, restart, shutdown_seconds, start_timeout_seconds, initial=False)
        self._serve_starts(now)
        return self._flush()

    def child_started(
        self, name: str, incarnation: int, now: float, *, up: bool = True
    ) -> list[Action[E]]:
        """The incarnation reported ready; with ``up=False`` its uptime counts only from
        :meth:`child_up`. A report after a start timeout is ignored (the start failed)."""
        child = self._live(name, incarnation)
        if child is None or child.started or child.timed_out:
            return []
        child.started = True
        child.up_since = now if up else None
        child.start_deadline = None
        if child.state is ChildState.STARTING:
            child.state = ChildState.RUNNING
        if self._starting is child:
            self._starting = None
        if not child.ever_started:
            child.ever_started = True
            if child.initial:
                self._initial_pending -= 1
            if child.awaiting_start:
                child.awaiting_start = False
                self._out.append(StartResolved(name, None, None))
        self._check_ready()
        self._serve_starts(now)
        return self._flush()

    def child_up(self, name: str, incarnation: int, now: float) -> list[Action[E]]:
        """A started incarnation (``up=False``) is up now. Later calls do nothing."""
        child = self._live(name, incarnation)
        if child is not None and child.started and child.up_since is None:
            child.up_since = now
        return []

    def child_exited(
        self, name: str, incarnation: int, now: float, error: E | None
    ) -> list[Action[E]]:
        """A started incarnation ended: it returned (*error* None) or raised *error*."""
        child = self._live(name, incarnation)
        if child is None:
            return []
        if not child.started:
            raise RuntimeError(f"child {name!r} exited before it started: use start_failed()")
        uptime = child.uptime_seconds(now) or 0.0
        if self._end_incarnation(child, incarnation, error, uptime, now):
            return self._flush()
        kind = ExitKind.NORMAL if error is None else ExitKind.ABNORMAL
        op = self._covering(child)
        if op is not None:
            self._absorbed(child, incarnation, op, kind, error, uptime, None)
        elif child.restart is Restart.TEMPORARY:
            self._report(child, incarnation, kind, error, uptime, ExitOutcome.REMOVED)
            child.state = ChildState.EXITED
            self._remove(child)
        elif child.restart is Restart.TRANSIENT and kind is ExitKind.NORMAL:
            self._report(child, incarnation, kind, error, uptime, ExitOutcome.LEFT_EXITED)
            child.state = ChildState.EXITED
        else:
            self._crash(child, incarnation, kind, error, uptime, now, None)
        self._advance(now)
        return self._flush()

    def start_failed(
        self, name: str, incarnation: int, now: float, error: E | None
    ) -> list[Action[E]]:
        """A launched incarnation ended before it reported ready: it raised *error*, or it
        returned (*error* None), or it was stopped or timed out."""
        child = self._live(name, incarnation)
        if child is None:
            return []
        if child.started:
            raise RuntimeError(f"child {name!r} had started: use child_exited()")
        timed_out = child.timed_out
        if self._end_incarnation(child, incarnation, error, 0.0, now):
            return self._flush()
        failure = StartFailure.TIMED_OUT if timed_out else StartFailure.FAILED
        kind = ExitKind.FAILED_START
        op = self._covering(child)
        if op is not None:
            self._absorbed(child, incarnation, op, kind, error, 0.0, failure)
        elif child.ever_started:
            # A failed restart is a crash with no uptime.
            self._crash(child, incarnation, kind, error, 0.0, now, failure)
        elif child.initial and self._mode is _Mode.STARTING:
            self._report(child, incarnation, kind, error, 0.0, ExitOutcome.STARTUP_FAILED, failure)
            self._remove(child)
            self._stop_all(now, Outcome.STARTUP_FAILED, name, error, failure)
        else:
            self._report(child, incarnation, kind, error, 0.0, ExitOutcome.REMOVED, failure)
            self._remove(child)
            if child.awaiting_start:
                child.awaiting_start = False
                self._out.append(StartResolved(name, failure, error))
        self._advance(now)
        return self._flush()

    def stop_requested(self, now: float) -> list[Action[E]]:
        """Stop the whole supervisor: no more restarts or starts, every child stops in reverse
        order, then :class:`Finished`. Idempotent."""
        if self.accepting:
            self._stop_all(now, Outcome.STOPPED, None, None, None)
        return self._flush()

    def stop_child(self, name: str, now: float) -> list[Action[E]]:
        """Stop child *name* (never a crash) and remove it; :class:`StopChildDone` follows.
        Asking again while that stop is under way only waits for the same stop.

        Raises:
            LookupError: no child has that name.
            RuntimeError: the run is stopping or finished.
        """
        if not self.accepting:
            raise RuntimeError(f"cannot stop a child while {self._mode.value}")
        child = self._by_name.get(name)
        if child is None:
            raise LookupError(name)
        if not child.removing:
            child.removing = True
            self._ops.append(_StopChild(child))
            self._advance(now)
        return self._flush()

    def timer_fired(self, now: float) -> list[Action[E]]:
        """Time has passed: launch what is due, time out a start that took too long."""
        starting = self._starting
        if (
            starting is not None
            and starting.incarnation is not None
            and starting.start_deadline is not None
            and starting.start_deadline <= now
        ):
            starting.start_deadline = None
            starting.timed_out = True
            self._out.append(SignalStop(starting.name, starting.incarnation))
            self._out.append(CancelAt(starting.name, starting.incarnation, -math.inf))
        self._serve_starts(now)
        return self._flush()

    def abandon(self) -> None:
        """The run was torn down from outside (cancelled): every child is exited, children
        that never started are dropped, and no decision is made any more. Keeps snapshots
        truthful."""
        for child in list(self._children):
            self._clear_incarnation(child)
            child.state = ChildState.EXITED
            child.restart_due = None
            if not child.ever_started:
                self._remove(child)
        self._timers.clear()
        self._ready.clear()
        self._ops.clear()
        self._mode = _Mode.FINISHED

    # -- internals: records and queues -----------------------------------------------------

    def _flush(self) -> list[Action[E]]:
        out, self._out = self._out, []
        return out

    def _new_record(
        self,
        name: str,
        restart: Restart,
        shutdown: float,
        timeout: float | None,
        *,
        initial: bool,
    ) -> None:
        if name in self._by_name:
            raise ValueError(f"duplicate child name {name!r}")
        child: ChildRecord[E] = ChildRecord(
            name, next(self._order), restart, shutdown, timeout, initial
        )
        self._children.append(child)
        self._by_name[name] = child
        if initial:
            self._initial_pending += 1
        self._wait(child, -math.inf)

    def _live(self, name: str, incarnation: int) -> ChildRecord[E] | None:
        child = self._by_name.get(name)
        if child is None or child.incarnation != incarnation:
            return None
        return child

    def _clear_incarnation(self, child: ChildRecord[E]) -> None:
        if self._starting is child:
            self._starting = None
        child.incarnation = None
        child.started = False
        child.up_since = None
        child.timed_out = False
        child.start_deadline = None

    def _wait(self, child: ChildRecord[E], due: float) -> None:
        """*child* may be launched once *due* has passed (``-inf``: as soon as possible)."""
        child.restart_due = due
        child.restart_token += 1
        if due == -math.inf:
            heapq.heappush(self._ready, (child.order, child.restart_token, child))
        else:
            heapq.heappush(self._timers, (due, child.order, child.restart_token, child))

    def _unschedule(self, child: ChildRecord[E]) -> None:
        child.restart_due = None
        child.restart_token += 1

    def _remove(self, child: ChildRecord[E]) -> None:
        if self._by_name.get(child.name) is child:
            del self._by_name[child.name]
            self._children.remove(child)
            if child.initial and not child.ever_started:
                self._initial_pending -= 1
        self._unschedule(child)

    def _check_ready(self) -> None:
        if self._mode is _Mode.STARTING and self._initial_pending == 0:
            self._mode = _Mode.RUNNING
            self._out.append(Ready())

    def _report(
        self,
        child: ChildRecord[E],
        incarnation: int,
        kind: ExitKind,
        error: E | None,
        uptime: float,
        outcome: ExitOutcome,
        failure: StartFailure | None = None,
        *,
        counted: bool = False,
    ) -> None:
        self._out.append(
            Exited(child.name, incarnation, kind, error, uptime, outcome, failure, counted)
        )

    # -- internals: exits ------------------------------------------------------------------

    def _end_incarnation(
        self,
        child: ChildRecord[E],
        incarnation: int,
        error: E | None,
        uptime: float,
        now: float,
    ) -> bool:
        """Forget the incarnation; if an operation had told it to stop, finish that stop here
        and return True (a shutdown, whatever it raised)."""
        self._clear_incarnation(child)
        if error is not None:
            child.last_error = error
        op = self._ops[0] if self._ops else None
        if op is None or op.current is not child:
            return False
        op.current = None
        if isinstance(op, _GroupRestart) and op.covers(child):
            temporary = child.restart is Restart.TEMPORARY
            child.state = ChildState.EXITED if temporary else ChildState.RESTARTING
            outcome = ExitOutcome.REMOVED if temporary else ExitOutcome.RESTART
        else:
            child.state = ChildState.EXITED
            outcome = ExitOutcome.REMOVED if isinstance(op, _StopChild) else ExitOutcome.LEFT_EXITED
        self._report(child, incarnation, ExitKind.SHUTDOWN, error, uptime, outcome)
        self._advance(now)
        return True

    def _covering(self, child: ChildRecord[E]) -> _Op[E] | None:
        """The operation that will stop *child* anyway: the one under way, or a queued
        ``stop_child`` of it."""
        if self._ops and self._ops[0].covers(child):
            return self._ops[0]
        if child.removing:
            for op in self._ops:
                if isinstance(op, _StopChild) and op.child is child:
                    return op
        return None

    def _absorbed(
        self,
        child: ChildRecord[E],
        incarnation: int,
        op: _Op[E],
        kind: ExitKind,
        error: E | None,
        uptime: float,
        failure: StartFailure | None,
    ) -> None:
        """*child* exited on its own while *op* was going to stop it: reported, not counted."""
        if isinstance(op, _GroupRestart) and child.restart is not Restart.TEMPORARY:
            child.state = ChildState.RESTARTING
            outcome = ExitOutcome.RESTART
        else:
            child.state = ChildState.EXITED
            outcome = ExitOutcome.LEFT_EXITED if isinstance(op, _StopAll) else ExitOutcome.REMOVED
        self._report(child, incarnation, kind, error, uptime, outcome, failure)

    def _crash(
        self,
        child: ChildRecord[E],
        incarnation: int,
        kind: ExitKind,
        error: E | None,
        uptime: float,
        now: float,
        failure: StartFailure | None,
    ) -> None:
        """*child* needs a restart, and its strategy's group with it; the window decides."""
        counted = self.window.counts(uptime)
        if not self.window.allow_restart(now, uptime):
            self._report(
                child, incarnation, kind, error, uptime, ExitOutcome.GIVE_UP, failure, counted=True
            )
            child.state = ChildState.EXITED
            self._out.append(GiveUp(child.name, error))
            self._stop_all(now, Outcome.GAVE_UP, child.name, error, None)
            return
        self._report(
            child, incarnation, kind, error, uptime, ExitOutcome.RESTART, failure, counted=counted
        )
        child.state = ChildState.RESTARTING
        self._ops.append(_GroupRestart(child, uptime))

    def _stop_all(
        self,
        now: float,
        outcome: Outcome,
        name: str | None,
        error: E | None,
        failure: StartFailure | None,
    ) -> None:
        self._mode = _Mode.STOPPING
        # A stop already told to a child is kept: one child stops at a time.
        current = self._ops[0].current if self._ops else None
        self._ops.clear()
        op: _StopAll[E] = _StopAll(outcome, name, error, failure)
        op.current = current
        op.queue = [c for c in self._children if c.live and c is not current]
        for child in self._children:
            if not child.live:
                self._unschedule(child)
                child.state = ChildState.EXITED
        self._timers.clear()
        self._ready.clear()
        self._ops.append(op)
        self._advance(now)

    # -- internals: operations and starts --------------------------------------------------

    def _advance(self, now: float) -> None:
        """Run operations until one waits for an exit; then launch what may start."""
        ops = self._ops
        while ops:
            op = ops[0]
            if op.current is not None:
                return
            if isinstance(op, _GroupRestart) and not op.begun:
                self._begin_group(op)
            elif isinstance(op, _StopChild) and not op.queue and op.child.live:
                op.queue.append(op.child)
            while op.queue:
                child = op.queue.pop()
                if child.live:
                    self._signal(op, child, now)
                    return
            ops.popleft()
            self._complete(op, now)
        self._serve_starts(now)

    def _begin_group(self, op: _GroupRestart[E]) -> None:
        op.begun = True
        trigger = op.trigger
        if self.strategy is Strategy.ONE_FOR_ONE:
            affected = [trigger]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            affected = list(self._children)
        else:
            affected = self._children[self._children.index(trigger) :]
        op.affected = affected
        for sibling in affected:
            if sibling is trigger:
                continue
            op.pending.add(sibling.order)
            if sibling.live:
                op.queue.append(sibling)
            else:
                self._unschedule(sibling)
                sibling.state = ChildState.RESTARTING

    def _signal(self, op: _Op[E], child: ChildRecord[E], now: float) -> None:
        assert child.incarnation is not None
        op.current = child
        child.state = ChildState.STOPPING
        self._out.append(SignalStop(child.name, child.incarnation))
        shutdown = child.shutdown_seconds
        deadline = -math.inf if shutdown <= 0 else now + shutdown
        self._out.append(CancelAt(child.name, child.incarnation, deadline))

    def _complete(self, op: _Op[E], now: float) -> None:
        if isinstance(op, _GroupRestart):
            trigger = op.trigger
            present = []
            for child in op.affected:
                if self._by_name.get(child.name) is not child:
                    continue
                # A temporary sibling the restart stopped is gone; one never launched was not
                # stopped by anything and waits, in child order, with the group.
                if child is not trigger and child.restart is Restart.TEMPORARY and child.launched:
                    child.state = ChildState.EXITED
                    self._remove(child)
                    if child.awaiting_start:
                        child.awaiting_start = False
                        self._out.append(
                            StartResolved(child.name, StartFailure.GROUP_RESTART, None)
                        )
                    continue
                present.append(child)
            attempt = self.backoff.attempt_after(trigger.attempt, op.uptime)
            delay = self.backoff.delay_seconds(attempt, self.rng.random())
            trigger.attempt = attempt + 1
            due = now + delay
            for child in present:
                child.state = ChildState.RESTARTING
                self._wait(child, due if delay > 0 else -math.inf)
            if present:
                self._out.append(ScheduleRestart(tuple(c.name for c in present), due))
        elif isinstance(op, _StopChild):
            child = op.child
            if self._by_name.get(child.name) is child:
                child.state = ChildState.EXITED
                self._remove(child)
                if child.awaiting_start:
                    child.awaiting_start = False
                    self._out.append(StartResolved(child.name, StartFailure.REMOVED, None))
                self._check_ready()
            self._out.append(StopChildDone(child.name))
        elif isinstance(op, _StopAll):
            for child in list(self._children):
                child.state = ChildState.EXITED
                if not child.ever_started:
                    # Never ready: not a member to show (its caller hears why).
                    self._remove(child)
                    if child.awaiting_start:
                        child.awaiting_start = False
                        self._out.append(StartResolved(child.name, StartFailure.STOPPING, None))
            self._mode = _Mode.FINISHED
            self._out.append(Finished(op.outcome, op.child, op.error, op.failure))

    def _serve_starts(self, now: float) -> None:
        """Launch the next start, lowest child order among those due, unless a start is in
        flight, an operation is under way, or the run is stopping."""
        timers, ready = self._timers, self._ready
        # Due restarts leave the timer heap even when none may launch now: a due entry left
        # there would make next_deadline() a past time, and the driver's timer fire forever.
        while timers and timers[0][0] <= now:
            _, order, token, child = heapq.heappop(timers)
            if child.restart_token == token:
                heapq.heappush(ready, (order, token, child))
        if self._ops or self._starting is not None or not self.accepting:
            return
        while ready:
            _, token, child = heapq.heappop(ready)
            if child.restart_token == token:
                self._launch(child, now)
                return

    def _launch(self, child: ChildRecord[E], now: float) -> None:
        self._unschedule(child)
        if child.launched:
            child.restarts += 1
            self.total_restarts += 1
        child.launched = True
        incarnation = next(self._incarnations)
        child.incarnation = incarnation
        child.started = False
        child.state = ChildState.STARTING
        if child.start_timeout_seconds is not None:
            child.start_deadline = now + child.start_timeout_seconds
        self._starting = child
        self._out.append(Start(child.name, incarnation))
