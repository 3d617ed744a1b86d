"""OTP supervisors on structured concurrency.

A :class:`Supervisor` owns a task group. Each child is described by a :class:`ChildSpec` and
runs as one task in that group, inside its own cancel scope. The supervisor starts children in
order, each only after the previous one reported ready (``task_status.started()``), restarts
them according to their :class:`Restart` type and the supervisor's :class:`Strategy`, limits
restarts with a :class:`RestartWindow`, and stops children one at a time in reverse start
order, each with its own two-phase shutdown (see :class:`~megatrio.ChildContext`).

Exit classes, as in OTP:

* **normal** — the target returned without being asked to stop;
* **shutdown** — its own supervisor asked it to stop (never a crash, whatever it raised);
* **abnormal** — it raised an ``Exception`` without being asked to stop.

Cancellation from outside the supervisor, ``KeyboardInterrupt`` and ``SystemExit`` are never
counted as crashes: they propagate and take the tree down.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
import random
from collections.abc import Iterable
from typing import Any, final

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._exceptions import RestartIntensityExceeded, StartupFailed, SupervisorNotRunning
from ._policy._backoff import DEFAULT_BACKOFF, NO_BACKOFF, Backoff
from ._policy._checks import check_seconds
from ._policy._window import RestartWindow
from .nursery._backend import Spawn, now, open_spawner, running_on_trio
from .nursery._child import (
    ChildContext,
    ExitKind,
    Target,
    bind_context,
    current_child,
    start_child_task,
)
from .nursery._errors import describe

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


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"child name must be a non-empty string without '/', got {value!r}")


def _check_target(instance: object, attribute: attrs.Attribute[Target], value: Target) -> None:
    if not callable(value):
        raise TypeError(f"child target must be an async callable, got {value!r}")


def _check_shutdown(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds("shutdown_seconds", value)


def _as_args(value: Iterable[object]) -> tuple[object, ...]:
    return tuple(value)


@attrs.frozen
class ChildSpec:
    """How to run one child: ``await target(*args, task_status=...)``.

    The target must call ``task_status.started(value)`` once it is ready; only then is it
    *started* (its uptime counts from there, and the next child may start). Raising or
    returning before that is a failed start. Wrap a plain coroutine function with
    :func:`ready_immediately` when it has no readiness to report.

    *shutdown_seconds* is this child's grace when it is stopped: its *stopping* signal is set,
    and whatever still runs ``shutdown_seconds`` later is cancelled. ``0`` cancels at once;
    ``math.inf`` waits for the child to return (as OTP's ``infinity``, meant for supervisors).
    """

    name: str = attrs.field(validator=_check_name)
    target: Target = attrs.field(validator=_check_target)
    args: tuple[object, ...] = attrs.field(default=(), converter=_as_args)
    restart: Restart = attrs.field(
        default=Restart.PERMANENT, validator=attrs.validators.instance_of(Restart)
    )
    shutdown_seconds: float = attrs.field(default=5.0, validator=_check_shutdown)


def ready_immediately(fn: Target) -> Target:
    """Adapt ``fn(*args)`` to a child target that reports ready as soon as it runs.

    Use it for children whose readiness means nothing beyond "it is running"::

        ChildSpec("sweeper", ready_immediately(sweep_forever))
    """

    async def target(*args: object, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await fn(*args)

    target.__name__ = getattr(fn, "__name__", "target")
    target.__qualname__ = getattr(fn, "__qualname__", "target")
    return target


class _ChildState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "restarting"
    EXITED = "exited"


class _Child:
    """The supervisor's record of one child across its incarnations."""

    __slots__ = (
        "attempt",
        "ctx",
        "last_error",
        "order",
        "restart_due",
        "restart_token",
        "restarts",
        "spec",
        "state",
    )

    def __init__(self, spec: ChildSpec, order: int) -> None:
        self.spec = spec
        self.order = order
        self.ctx: ChildContext | None = None
        self.state = _ChildState.STARTING
        self.restarts = 0
        self.last_error: BaseException | None = None
        self.attempt = 0
        self.restart_due: float | None = None
        # Identifies the one live entry of this child in the supervisor's restart heap;
        # rescheduling bumps it, which makes every older entry stale.
        self.restart_token = 0


_NOT_STARTED = "returned before calling task_status.started()"


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
        self._window = RestartWindow(max_restarts, period_seconds, min_uptime_seconds)
        self._initial = specs
        self._rng = random_source if random_source is not None else random.Random()
        self._running = False
        self._state = "idle"
        self._path: tuple[str, ...] = (name,)
        self._children: list[_Child] = []
        self._by_name: dict[str, _Child] = {}
        self._due: list[tuple[float, int, int, _Child]] = []
        self._order = itertools.count()
        self._stop_requested = False
        self._give_up: RestartIntensityExceeded | None = None
        self._starting: _Child | None = None
        self._spawn: Spawn | None = None
        self._on_trio = False
        self._send: MemoryObjectSendStream[ChildContext | None] | None = None
        self._lock: anyio.Lock | None = None
        self._total_restarts = 0

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
        cancels every child at once.

        Raises:
            StartupFailed: an initial child failed to start; the ones already started were
                stopped in reverse order first.
            RestartIntensityExceeded: too many restarts; every child was stopped first.
            RuntimeError: it is already running.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._running = True
        self._reset()
        parent = current_child()
        if parent is not None:
            self._path = parent.path
            parent.attach_snapshot(self.snapshot)
        # Unbounded, yet bounded by construction: at most one exit message per incarnation,
        # and the supervise loop consumes them in order.
        send, receive = anyio.create_memory_object_stream[ChildContext | None](math.inf)
        self._send = send
        self._lock = anyio.Lock(fast_acquire=True)
        self._on_trio = running_on_trio()
        error: BaseException | None = None
        try:
            with send, receive:
                async with open_spawner(self._on_trio) as spawn:
                    self._spawn = spawn
                    watch = anyio.CancelScope()
                    if parent is not None:
                        spawn(self._follow_parent_stop, parent, watch)
                    try:
                        await self._start_initial()
                        if not self._stop_requested:
                            self._state = "running"
                            task_status.started()
                            error = await self._supervise(receive)
                    except StartupFailed as exc:
                        error = exc
                    self._state = "stopping"
                    await self._stop_all()
                    watch.cancel()
        finally:
            self._state = "stopped" if error is None else "failed"
            self._running = False
            self._spawn = None
            self._send = None
            self._starting = None
        if error is not None:
            raise error

    def stop(self) -> None:
        """Ask the supervisor to stop: no more restarts, children stop in reverse order.

        Idempotent and not a checkpoint; :meth:`run` returns once every child has stopped. A
        child being started at that moment gets its stop request too.
        """
        if not self._running or self._stop_requested:
            return
        self._stop_requested = True
        starting = self._starting
        if starting is not None and starting.ctx is not None:
            starting.ctx.request_stop(starting.spec.shutdown_seconds)
        if self._send is not None:
            self._send.send_nowait(None)

    async def start_child(self, spec: ChildSpec) -> object:
        """Add *spec* as the last child and start it; return the value it passed to started().

        Raises:
            StartupFailed: the child failed before it was started (it is not added).
            SupervisorNotRunning: the supervisor is not running or is stopping.
            ValueError: a child with that name already exists.
        """
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child takes a ChildSpec, got {spec!r}")
        self._check_running("start a child")
        assert self._lock is not None
        async with self._lock:
            self._check_running("start a child")
            if spec.name in self._by_name:
                raise ValueError(f"duplicate child name {spec.name!r} in supervisor {self.name!r}")
            return await self._start_new(spec)

    async def stop_child(self, name: str) -> None:
        """Stop the child *name* (two-phase, within its grace) and remove it.

        A child stopped this way is never counted as a crash and is not restarted.

        Raises:
            LookupError: there is no child called *name*.
            SupervisorNotRunning: the supervisor is not running or is stopping.
        """
        self._check_running("stop a child")
        assert self._lock is not None
        async with self._lock:
            child = self._by_name.get(name)
            if child is None:
                raise LookupError(f"supervisor {self.name!r} has no child {name!r}")
            if child.ctx is not None:
                await self._stop_one(child)
            self._remove(child)

    def snapshot(self) -> dict[str, Any]:
        """The supervision tree below this supervisor as plain data (JSON-serialisable).

        Not a checkpoint. Each child has ``name``, ``state``, ``restart``, ``restarts``,
        ``uptime_seconds`` (``None`` when not running), ``last_error`` (one line or ``None``),
        ``info`` when the child annotated itself (:meth:`ChildContext.annotate`) and, for a
        nested supervisor, ``supervisor`` (its own snapshot).
        """
        return {
            "name": self.name,
            "path": "/".join(self._path),
            "state": self._state,
            "strategy": self.strategy.value,
            "max_restarts": self.max_restarts,
            "period_seconds": self.period_seconds,
            "min_uptime_seconds": self.min_uptime_seconds,
            "restarts": self._total_restarts,
            "children": [self._child_snapshot(child) for child in self._children],
        }

    # -- internals --------------------------------------------------------------------------

    def _reset(self) -> None:
        self._window.reset()
        self._state = "starting"
        self._path = (self.name,)
        self._children = []
        self._by_name = {}
        self._due = []
        self._stop_requested = False
        self._give_up = None
        self._starting = None
        self._total_restarts = 0

    def _check_running(self, what: str) -> None:
        if not self._running or self._stop_requested or self._give_up is not None:
            raise SupervisorNotRunning(
                f"cannot {what}: supervisor {self.name!r} is {self._state_word()}"
            )

    def _state_word(self) -> str:
        if not self._running:
            return "not running"
        return "stopping" if self._stop_requested or self._give_up else self._state

    async def _follow_parent_stop(self, parent: ChildContext, scope: anyio.CancelScope) -> None:
        with scope:
            await parent.wait_stopping()
            self.stop()

    def _on_child_exit(self, ctx: ChildContext) -> None:
        # Called synchronously by the child's task as it ends. Exits the supervisor asked for
        # are awaited by the stopper itself and need no message.
        if not ctx.stopping and self._send is not None:
            self._send.send_nowait(ctx)

    async def _start_initial(self) -> None:
        assert self._lock is not None
        async with self._lock:
            for spec in self._initial:
                if self._stop_requested:
                    return
                try:
                    await self._start_new(spec)
                except SupervisorNotRunning:
                    return  # a stop arrived while this child was starting

    async def _start_new(self, spec: ChildSpec) -> object:
        child = _Child(spec, next(self._order))
        self._children.append(child)
        self._by_name[spec.name] = child
        if await self._start_incarnation(child):
            ctx = child.ctx
            value = None if ctx is None else ctx._started_value
            if ctx is not None:
                ctx._started_value = None
            return value
        self._remove(child)
        if self._stop_requested:
            raise SupervisorNotRunning(
                f"cannot start child {spec.name!r}: supervisor {self.name!r} is stopping"
            )
        error = child.last_error
        reason = _NOT_STARTED if error is None else describe(error)
        raise StartupFailed(spec.name, reason) from error

    async def _start_incarnation(self, child: _Child) -> bool:
        assert self._spawn is not None
        ctx = bind_context(child.spec.name, (*self._path, child.spec.name), self._on_trio)
        child.ctx = ctx
        child.state = _ChildState.STARTING
        self._starting = child
        try:
            started = await start_child_task(
                self._spawn, ctx, child.spec.target, child.spec.args, self._on_child_exit
            )
        finally:
            self._starting = None
        if started:
            if child.ctx is ctx and ctx.exit_kind is None:
                child.state = _ChildState.RUNNING
            return True
        child.ctx = None
        child.state = _ChildState.EXITED
        if not ctx.stopping:
            child.last_error = ctx.error
            if ctx.error is not None:
                log.error(
                    "child %s failed to start: %s",
                    "/".join(ctx.path),
                    describe(ctx.error),
                    exc_info=ctx.error,
                )
            else:
                log.error("child %s %s", "/".join(ctx.path), _NOT_STARTED)
        return False

    async def _supervise(
        self, receive: MemoryObjectReceiveStream[ChildContext | None]
    ) -> RestartIntensityExceeded | None:
        assert self._lock is not None
        while True:
            if self._due and self._due[0][0] <= now(self._on_trio):
                async with self._lock:
                    await self._restart_due()
            if self._give_up is not None:
                return self._give_up
            if self._stop_requested:
                return None
            message: ChildContext | None = None
            try:
                message = receive.receive_nowait()
            except anyio.WouldBlock:
                deadline = self._due[0][0] if self._due else math.inf
                with anyio.move_on_at(deadline):
                    message = await receive.receive()
            if message is not None:
                async with self._lock:
                    await self._handle_exit(message)

    async def _handle_exit(self, ctx: ChildContext) -> None:
        child = self._by_name.get(ctx.name)
        if child is None or child.ctx is not ctx:
            return  # a previous incarnation, already replaced or stopped
        child.ctx = None
        child.state = _ChildState.EXITED
        kind = ctx.exit_kind
        error = ctx.error
        uptime = ctx.uptime_seconds()
        path = "/".join(ctx.path)
        if error is not None:
            child.last_error = error
            log.error(
                "child %s crashed after %.3f s: %s", path, uptime, describe(error), exc_info=error
            )
        restart = child.spec.restart
        if restart is Restart.TEMPORARY or (
            restart is Restart.TRANSIENT and kind is ExitKind.NORMAL
        ):
            log.info("child %s exited (%s); not restarted (%s)", path, kind, restart.value)
            if restart is Restart.TEMPORARY:
                self._remove(child)
            return
        if error is None:
            log.warning("child %s exited normally after %.3f s; restarting", path, uptime)
        await self._crashed(child, uptime, error)

    async def _crashed(self, child: _Child, uptime: float, error: BaseException | None) -> None:
        current = now(self._on_trio)
        if not self._window.allow_restart(current, uptime):
            give_up = RestartIntensityExceeded(self.name, self.max_restarts, self.period_seconds)
            give_up.__cause__ = error
            self._give_up = give_up
            log.error(
                "supervisor %s giving up after child %s: more than %d restart(s) within %g s",
                "/".join(self._path),
                child.spec.name,
                self.max_restarts,
                self.period_seconds,
            )
            return
        affected = self._affected(child)
        for sibling in reversed(affected):
            if sibling is not child and sibling.ctx is not None:
                await self._stop_one(sibling)
        for sibling in affected:
            if sibling is not child and sibling.spec.restart is Restart.TEMPORARY:
                self._remove(sibling)
        attempt = self.backoff.attempt_after(child.attempt, uptime)
        delay = self.backoff.delay_seconds(attempt, self._rng.random())
        child.attempt = attempt + 1
        due = now(self._on_trio) + delay
        for sibling in affected:
            if self._by_name.get(sibling.spec.name) is sibling:
                self._schedule(sibling, due)

    def _schedule(self, child: _Child, due: float) -> None:
        child.state = _ChildState.BACKOFF
        child.restart_due = due
        child.restart_token += 1
        heapq.heappush(self._due, (due, child.order, child.restart_token, child))

    def _affected(self, child: _Child) -> list[_Child]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self._children)
        index = self._children.index(child)
        return self._children[index:]

    async def _restart_due(self) -> None:
        current = now(self._on_trio)
        batch: list[_Child] = []
        while self._due and self._due[0][0] <= current:
            _, _, token, child = heapq.heappop(self._due)
            live = child.restart_due is not None and token == child.restart_token
            if live and self._by_name.get(child.spec.name) is child:
                batch.append(child)
        batch.sort(key=lambda c: c.order)
        for index, child in enumerate(batch):
            if self._stop_requested:
                return
            child.restart_due = None
            child.restarts += 1
            self._total_restarts += 1
            if not await self._start_incarnation(child):
                if self._stop_requested:
                    return
                for rest in batch[index + 1 :]:
                    if rest.restart_due is not None:
                        self._schedule(rest, rest.restart_due)
                # A failed restart is a crash with no uptime.
                await self._crashed(child, 0.0, child.last_error)
                return

    async def _stop_one(self, child: _Child) -> None:
        ctx = child.ctx
        assert ctx is not None
        child.state = _ChildState.STOPPING
        await ctx.stop(child.spec.shutdown_seconds)
        if ctx.error is not None:
            child.last_error = ctx.error
            log.error(
                "child %s raised while stopping: %s",
                "/".join(ctx.path),
                describe(ctx.error),
                exc_info=ctx.error,
            )
        child.ctx = None
        child.state = _ChildState.EXITED

    async def _stop_all(self) -> None:
        assert self._lock is not None
        async with self._lock:
            # One at a time, as OTP: the next (earlier-started) child is asked to stop only
            # after the previous one has exited.
            for child in reversed(self._children):
                if child.ctx is not None:
                    await self._stop_one(child)
                elif child.state is _ChildState.BACKOFF:
                    child.state = _ChildState.EXITED
                child.restart_due = None
            self._due.clear()

    def _remove(self, child: _Child) -> None:
        if self._by_name.get(child.spec.name) is child:
            del self._by_name[child.spec.name]
            self._children.remove(child)
        child.restart_due = None

    def _child_snapshot(self, child: _Child) -> dict[str, Any]:
        ctx = child.ctx
        running = ctx is not None and ctx.has_started and ctx.exit_kind is None
        entry: dict[str, Any] = {
            "name": child.spec.name,
            "state": child.state.value,
            "restart": child.spec.restart.value,
            "restarts": child.restarts,
            "uptime_seconds": ctx.uptime_seconds() if running and ctx is not None else None,
            "last_error": None if child.last_error is None else describe(child.last_error),
        }
        if ctx is not None and ctx._info:
            entry["info"] = dict(ctx._info)
        subtree = None if ctx is None else ctx.subtree()
        if subtree is not None:
            entry["supervisor"] = subtree
        return entry

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self._state_word()} children={len(self._children)}>"
