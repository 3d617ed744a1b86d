"""One supervised task: how it runs, how it is told to stop, and how its exit is classified.

An :class:`Incarnation` is the supervisor's private handle on one run of a child (each
restart is a new one): its cancel scope, its stop signal, its readiness. The child itself only
ever sees the :class:`ChildContext` view of it, which offers what a child may do — report
ready, watch for its stop, annotate itself — and none of the supervisor's controls.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, final

import anyio
import anyio.lowlevel
import trio

from .._util import NoPublicConstructor
from ._backend import Event, new_event, new_scope, now
from ._errors import describe, log_exception, split_exit

Target = Callable[..., Awaitable[object]]
"""An async callable run as ``target(*args, task_status=...)``."""

log = logging.getLogger("megatrio.supervisor")

_current: contextvars.ContextVar[Incarnation | None] = contextvars.ContextVar(
    "megatrio_current_child", default=None
)


def current_child() -> ChildContext | None:
    """The :class:`ChildContext` of the supervised child running this code, or ``None``.

    Tasks a child spawns in its own nurseries see the same context. Not a checkpoint.
    """
    incarnation = _current.get()
    return None if incarnation is None else incarnation.context


def current_incarnation() -> Incarnation | None:
    """The supervisor's handle of the child running this code (for nested supervisors)."""
    return _current.get()


class Owner(Protocol):
    """What an incarnation reports to: its supervisor (synchronously, from the child's task)."""

    def _child_started(self, incarnation: Incarnation, up: bool) -> None: ...

    def _child_up(self, incarnation: Incarnation) -> None: ...

    def _child_ended(
        self, incarnation: Incarnation, error: Exception | None, lost: bool
    ) -> None: ...


@final
class ChildContext(metaclass=NoPublicConstructor):
    """A running incarnation of a supervised child, as the child itself sees it.

    A child gets its context from :func:`current_child`; it is also the ``task_status`` passed
    to the target: call ``task_status.started(value)`` once the child is ready to serve.

    Stopping is two-phase. First the supervisor sets the *stopping* signal — the child should
    stop taking new work, finish what it has and return. Then it puts a deadline of
    ``now + shutdown_seconds`` on the child's own cancel scope; whatever is still running at
    the deadline is cancelled. A child that ignores the signal is therefore cancelled at the
    deadline, never leaked. Use ``await ctx.wait_stopping()`` in a task of its own, or check
    :attr:`stopping` between units of work.
    """

    __slots__ = ("_incarnation",)

    def __init__(self, incarnation: Incarnation) -> None:
        self._incarnation = incarnation

    @property
    def name(self) -> str:
        """The child's name in its supervisor."""
        return self._incarnation.name

    @property
    def path(self) -> tuple[str, ...]:
        """Names from the root supervisor down to this child."""
        return self._incarnation.path

    def started(self, value: object = None, *, up: bool = True) -> None:
        """Report readiness; the supervisor's start returns *value*. Not a checkpoint.

        Uptime — what the restart window's ``min_uptime_seconds`` and the backoff's stable
        period judge a crash by — counts from here. With ``up=False`` the child is started
        but not yet *up* (a worker process spawned but still booting): it has no uptime until
        it calls :meth:`mark_up`, so a crash before that is always a rapid crash.

        Raises:
            RuntimeError: called twice.
        """
        self._incarnation.report_started(value, up)

    @property
    def stopping(self) -> bool:
        """True once the supervisor has asked this child to stop."""
        incarnation = self._incarnation
        incarnation.listened = True
        return incarnation.stop_requested

    def wait_stopping(self) -> Coroutine[Any, Any, None]:
        """``await ctx.wait_stopping()``: block until the supervisor asks this child to stop.
        Always a checkpoint. Cancelling it only cancels the wait.
        """
        # The incarnation's coroutine itself, not a wrapper around it: a child parked here
        # (most children, most of the time) costs one suspended frame, not two.
        return self._incarnation.wait_stopping()

    def mark_up(self) -> None:
        """After ``started(up=False)``: the child is up now; its uptime counts from here.

        Not a checkpoint; later calls do nothing.
        """
        self._incarnation.mark_up()

    def uptime_seconds(self) -> float:
        """Seconds since the child was up (see :meth:`started`) until now, or until its exit
        once it has exited; 0.0 before. Not a checkpoint.
        """
        return self._incarnation.uptime_seconds()

    def annotate(self, **info: object) -> None:
        """Add plain-data facts (``pid=...``) to this child's entry in supervisor snapshots.

        Not a checkpoint. Values must be JSON-serialisable; later calls update earlier ones.
        """
        incarnation = self._incarnation
        if incarnation.info is None:
            incarnation.info = {}
        incarnation.info.update(info)

    def show_subtree(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Show ``snapshot()`` under this child in supervisor snapshots, as a nested
        supervisor's own tree is shown (a cluster primary shows each worker's tree this way).
        Not a checkpoint; called at every snapshot, so it must be cheap and must not raise."""
        self._incarnation.snapshot = snapshot

    @property
    def info(self) -> dict[str, object]:
        """What :meth:`annotate` recorded (a copy)."""
        return dict(self._incarnation.info or {})

    def __repr__(self) -> str:
        state = "stopping" if self._incarnation.stop_requested else "running"
        return f"<ChildContext {'/'.join(self.path)} {state}>"


@final
class Incarnation:
    """The supervisor's handle on one run of a child. Private to megatrio."""

    __slots__ = (
        "_stopping",
        "context",
        "ended_at",
        "info",
        "listened",
        "name",
        "number",
        "on_trio",
        "owner",
        "path",
        "scope",
        "snapshot",
        "started_at",
        "started_value",
        "stop_requested",
        "up_since",
    )

    def __init__(
        self, name: str, path: tuple[str, ...], number: int, on_trio: bool, owner: Owner
    ) -> None:
        self.name = name
        self.path = path
        self.number = number
        self.on_trio = on_trio
        self.owner = owner
        self.context = ChildContext._create(self)
        self.scope = new_scope(on_trio)
        self.started_at: float | None = None
        self.up_since: float | None = None
        self.ended_at: float | None = None
        self.started_value: object = None
        self.stop_requested = False
        self.listened = False
        """The child has looked at its stop signal (``stopping`` or ``wait_stopping()``)."""
        # Created only when someone waits: most children never need it.
        self._stopping: Event | None = None
        self.info: dict[str, object] | None = None
        self.snapshot: Callable[[], dict[str, Any]] | None = None
        """A nested supervisor's own snapshot, shown under this child."""

    # -- the child's side, through ChildContext ---------------------------------------------

    def report_started(self, value: object, up: bool) -> None:
        if self.started_at is not None:
            raise RuntimeError(f"child {self.name!r} called task_status.started() twice")
        self.started_at = now(self.on_trio)
        self.up_since = self.started_at if up else None
        self.started_value = value
        self.owner._child_started(self, up)

    async def wait_stopping(self) -> None:
        self.listened = True
        if self.stop_requested:
            await anyio.lowlevel.checkpoint()
            return
        if self._stopping is None:
            self._stopping = new_event(self.on_trio)
        await self._stopping.wait()

    def mark_up(self) -> None:
        if self.up_since is None and self.started_at is not None:
            self.up_since = now(self.on_trio)
            self.owner._child_up(self)

    def uptime_seconds(self) -> float:
        if self.up_since is None:
            return 0.0
        end = now(self.on_trio) if self.ended_at is None else self.ended_at
        return end - self.up_since

    # -- the supervisor's side ----------------------------------------------------------------

    def signal_stop(self) -> None:
        """Phase one: set *stopping*. Not a checkpoint."""
        self.stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    def cancel_at(self, deadline: float) -> None:
        """Phase two: cancel what is left at *deadline* (``-inf``: at once, ``inf``: never).
        An earlier deadline set before is kept. Not a checkpoint."""
        if deadline == -math.inf:
            self.scope.cancel()
        elif deadline < self.scope.deadline:
            self.scope.deadline = deadline

    def __repr__(self) -> str:
        return f"<Incarnation {'/'.join(self.path)} #{self.number}>"


async def run_incarnation(
    incarnation: Incarnation, target: Target, args: tuple[object, ...]
) -> None:
    """Run *target* as *incarnation* and report how it ended to the incarnation's owner.

    The exit is classified *outside* the child's cancel scope, so whatever the target raised
    while being stopped — bare, or grouped with the scope's ``Cancelled`` — is seen here as
    the child's error. Invariant: nothing but what is not the child's to handle (the
    cancellation of an enclosing scope, ``KeyboardInterrupt``, ``SystemExit``) leaves this
    function; an error raised while such a cancellation unwinds the child is logged as the
    child's shutdown error and dropped.
    """
    _current.set(incarnation)
    error: Exception | None = None
    propagate: BaseException | None = None
    try:
        with incarnation.scope:
            await target(*args, task_status=incarnation.context)
    except BaseException as exc:
        error, propagate = split_exit(exc)
        del exc
    incarnation.ended_at = now(incarnation.on_trio)
    # An exit its supervisor asked for decides nothing, so only the others need the check
    # (which walks the whole chain of enclosing cancel scopes).
    lost = propagate is not None or (
        not incarnation.stop_requested and _cancelled_from_outside(incarnation.on_trio)
    )
    if lost and error is not None:
        log_exception(
            log,
            logging.ERROR,
            error,
            "child %s raised while being cancelled: %s",
            "/".join(incarnation.path),
            describe(error),
        )
    incarnation.owner._child_ended(incarnation, error, lost)
    if propagate is not None:
        raise propagate


def _cancelled_from_outside(on_trio: bool) -> bool:
    # A child that swallowed the cancellation of an enclosing scope and returned: the whole
    # tree is going away, so its exit is nobody's decision.
    if on_trio:
        return trio.current_effective_deadline() == -math.inf
    return anyio.current_effective_deadline() == -math.inf
