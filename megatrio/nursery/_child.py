"""One supervised task: readiness, the two-phase stop, and how it exited.

This is the mechanism under the supervisor. A :class:`ChildContext` is one *incarnation* of a
child: each restart creates a new one. The supervisor decides what to do with an exit; this
module only runs the target and classifies how it ended.
"""

from __future__ import annotations

import contextvars
import enum
import math
from collections.abc import Awaitable, Callable
from typing import Any, final

import anyio
import anyio.lowlevel

from .._util import NoPublicConstructor
from ._backend import Event, Spawn, new_event, new_scope, now

Target = Callable[..., Awaitable[object]]
"""An async callable run as ``target(*args, task_status=...)``."""


class ExitKind(enum.Enum):
    """How an incarnation ended, from its supervisor's point of view."""

    NORMAL = "normal"
    """The target returned without being asked to stop."""
    SHUTDOWN = "shutdown"
    """The supervisor asked it to stop (whether it returned or was cancelled by the deadline)."""
    ABNORMAL = "abnormal"
    """The target raised an ``Exception`` without being asked to stop."""


_current: contextvars.ContextVar[ChildContext | None] = contextvars.ContextVar(
    "megatrio_current_child", default=None
)


def current_child() -> ChildContext | None:
    """The :class:`ChildContext` of the supervised child running this code, or ``None``.

    Tasks a child spawns in its own nurseries see the same context. Not a checkpoint.
    """
    return _current.get()


@final
class ChildContext(metaclass=NoPublicConstructor):
    """A running incarnation of a supervised child, as the child itself sees it.

    A child gets its context from :func:`current_child`, and it is also the ``task_status``
    passed to the target: call ``task_status.started(value)`` once the child is ready to serve.

    Stopping is two-phase. First the supervisor sets the *stopping* signal — the child should
    stop taking new work, finish what it has and return. Then it puts a deadline of
    ``now + shutdown_seconds`` on the child's own cancel scope; whatever is still running at the
    deadline is cancelled. A child that ignores the signal is therefore cancelled at the
    deadline, never leaked. Use ``await ctx.wait_stopping()`` in a task of its own, or check
    :attr:`stopping` between units of work.
    """

    __slots__ = (
        "_ended_at",
        "_error",
        "_exited",
        "_info",
        "_kind",
        "_on_trio",
        "_ready",
        "_scope",
        "_snapshot",
        "_started_at",
        "_started_value",
        "_stop_requested",
        "_stopping",
        "_up_since",
        "name",
        "path",
    )

    def __init__(self, name: str, path: tuple[str, ...], on_trio: bool) -> None:
        self.name = name
        """The child's name in its supervisor."""
        self.path = path
        """Names from the root supervisor down to this child."""
        self._on_trio = on_trio
        self._scope = new_scope(on_trio)
        self._started_at: float | None = None
        self._up_since: float | None = None
        self._ended_at: float | None = None
        self._started_value: object = None
        self._stop_requested = False
        # Events are created only when someone waits: most children never need them.
        self._stopping: Event | None = None
        self._ready: Event | None = None
        self._exited: Event | None = None
        self._kind: ExitKind | None = None
        self._error: BaseException | None = None
        self._snapshot: Callable[[], dict[str, Any]] | None = None
        self._info: dict[str, object] | None = None

    # -- the child's side -------------------------------------------------------------------

    def started(self, value: object = None, *, up: bool = True) -> None:
        """Report readiness; the supervisor's start returns *value*. Not a checkpoint.

        Uptime — what the restart window's ``min_uptime_seconds`` and the backoff's stable
        period judge a crash by — counts from here. With ``up=False`` the child is started
        but not yet *up* (a worker process spawned but still booting): it has no uptime until
        it calls :meth:`mark_up`, so a crash before that is always a rapid crash.

        Raises:
            RuntimeError: called twice.
        """
        if self._started_at is not None:
            raise RuntimeError(f"child {self.name!r} called task_status.started() twice")
        self._started_at = now(self._on_trio)
        self._up_since = self._started_at if up else None
        self._started_value = value
        if self._ready is not None:
            self._ready.set()

    @property
    def stopping(self) -> bool:
        """True once the supervisor has asked this child to stop."""
        return self._stop_requested

    async def wait_stopping(self) -> None:
        """Block until the supervisor asks this child to stop. Always a checkpoint.

        Cancelling this call only cancels the wait.
        """
        if self._stop_requested:
            await anyio.lowlevel.checkpoint()
            return
        if self._stopping is None:
            self._stopping = new_event(self._on_trio)
        await self._stopping.wait()

    def mark_up(self) -> None:
        """After ``started(up=False)``: the child is up now; its uptime counts from here.

        Not a checkpoint; later calls do nothing.
        """
        if self._up_since is None:
            self._up_since = now(self._on_trio)

    def uptime_seconds(self) -> float:
        """Seconds since the child was up (see :meth:`started`) until now, or until its exit
        once it has exited; 0.0 before. Not a checkpoint.
        """
        if self._up_since is None:
            return 0.0
        end = now(self._on_trio) if self._ended_at is None else self._ended_at
        return end - self._up_since

    # -- the supervisor's side --------------------------------------------------------------

    @property
    def exit_kind(self) -> ExitKind | None:
        """How it ended, or ``None`` while it runs."""
        return self._kind

    @property
    def error(self) -> BaseException | None:
        """The exception it exited with, if any."""
        return self._error

    @property
    def has_started(self) -> bool:
        return self._started_at is not None

    def request_stop(self, shutdown_seconds: float) -> None:
        """Phase one and two at once: set *stopping*, then give the scope its deadline.

        ``shutdown_seconds == 0`` cancels at the next checkpoint; ``inf`` waits for the child.
        An earlier deadline set before is kept. Not a checkpoint.
        """
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()
        if shutdown_seconds <= 0:
            self._scope.cancel()
        elif not math.isinf(shutdown_seconds):
            deadline = now(self._on_trio) + shutdown_seconds
            if deadline < self._scope.deadline:
                self._scope.deadline = deadline

    def cancel_now(self) -> None:
        """Cancel the child's scope immediately (a forced stop). Not a checkpoint."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()
        self._scope.cancel()

    async def wait_exited(self) -> None:
        """Block until the target has finished. A checkpoint."""
        if self._kind is not None:
            await anyio.lowlevel.checkpoint()
            return
        if self._exited is None:
            self._exited = new_event(self._on_trio)
        await self._exited.wait()

    async def stop(self, shutdown_seconds: float) -> None:
        """Two-phase stop, then wait for the exit. A checkpoint; cancelling it stops waiting."""
        if self._kind is None:
            self.request_stop(shutdown_seconds)
        await self.wait_exited()

    def annotate(self, **info: object) -> None:
        """Add plain-data facts (``pid=...``) to this child's entry in supervisor snapshots.

        Not a checkpoint. Values must be JSON-serialisable; later calls update earlier ones.
        """
        if self._info is None:
            self._info = {}
        self._info.update(info)

    @property
    def info(self) -> dict[str, object]:
        """What :meth:`annotate` recorded (a copy)."""
        return dict(self._info or {})

    def attach_snapshot(self, provider: Callable[[], dict[str, Any]]) -> None:
        """Let the child contribute its own subtree (a nested supervisor) to snapshots."""
        self._snapshot = provider

    def subtree(self) -> dict[str, Any] | None:
        return None if self._snapshot is None else self._snapshot()

    def __repr__(self) -> str:
        state = "running" if self._kind is None else self._kind.value
        return f"<ChildContext {'/'.join(self.path)} {state}>"


async def _run_target(
    ctx: ChildContext,
    target: Target,
    args: tuple[object, ...],
    on_exit: Callable[[ChildContext], None],
) -> None:
    # Invariant: this wrapper never raises anything but the outer cancellation (or a
    # BaseException such as KeyboardInterrupt that is not ours to handle): every exit of the
    # target is recorded on ctx and reported, so no child error ever reaches the task group.
    _current.set(ctx)
    finished = False
    try:
        with ctx._scope:
            try:
                await target(*args, task_status=ctx)
            except Exception as exc:
                ctx._error = exc
        finished = True
    finally:
        ctx._ended_at = now(ctx._on_trio)
        if finished:
            if ctx._stop_requested:
                ctx._kind = ExitKind.SHUTDOWN
            elif ctx._error is not None:
                ctx._kind = ExitKind.ABNORMAL
            else:
                ctx._kind = ExitKind.NORMAL
        else:
            ctx._kind = ExitKind.SHUTDOWN
        if ctx._ready is not None:
            ctx._ready.set()
        if ctx._exited is not None:
            ctx._exited.set()
        # Exits before started() are the starter's to report; exits on outer cancellation
        # belong to nobody (the whole tree is going away).
        if finished and ctx._started_at is not None:
            on_exit(ctx)


async def start_child_task(
    spawn: Spawn,
    ctx: ChildContext,
    target: Target,
    args: tuple[object, ...],
    on_exit: Callable[[ChildContext], None],
) -> bool:
    """Run *target* as *ctx* with *spawn* and wait until it reports ready or exits.

    Returns True once it has called ``started()``; False when it exited first (its
    :attr:`~ChildContext.error` says why, ``None`` for a return without ``started()``). After
    True, *on_exit* is called exactly once, synchronously, when it exits on its own or by
    request — but not when the whole task group is cancelled.

    Cancelling this call cancels the wait, not the child.
    """
    ctx._ready = new_event(ctx._on_trio)
    spawn(_run_target, ctx, target, args, on_exit, name="/".join(ctx.path))
    try:
        await ctx._ready.wait()
    finally:
        ctx._ready = None
    return ctx._started_at is not None


def bind_context(name: str, path: tuple[str, ...], on_trio: bool) -> ChildContext:
    """A fresh incarnation context for *name* at *path*, native to trio when *on_trio*."""
    return ChildContext._create(name, path, on_trio)
