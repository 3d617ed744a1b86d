"""Drift-free periodic work as a supervised child: :func:`every` (the spec) and
:func:`run_every` (the loop)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from .._policy._checks import check_seconds
from .._policy._supervision import Restart
from ._child import current_child
from ._spec import ChildSpec


async def run_every(
    interval_seconds: float,
    first_tick_seconds: float | None,
    fn: Callable[..., Awaitable[object]],
    *args: object,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``await fn(*args)`` on a fixed grid of times until stopped or cancelled.

    Tick ``k`` is due at ``origin + first + k * interval`` (``first`` defaults to one interval),
    computed from the origin rather than accumulated, so the schedule never drifts. A call that
    overruns skips the ticks it missed instead of bursting to catch up. When the surrounding
    supervised child is asked to stop, the timer returns at once if it is waiting, or after
    the call in progress if one is running; it never starts a call after the stop request.
    An exception from *fn* ends the timer (its supervisor decides about restarting).
    """
    ctx = current_child()
    first = interval_seconds if first_tick_seconds is None else first_tick_seconds
    origin = anyio.current_time() + first
    tick = 0
    task_status.started()
    while True:
        due = origin + tick * interval_seconds
        if ctx is None:
            await anyio.sleep_until(due)
        else:
            with anyio.move_on_at(due):
                await ctx.wait_stopping()
                return
        await fn(*args)
        if ctx is not None and ctx.stopping:
            return
        elapsed = anyio.current_time() - origin
        tick = max(tick + 1, math.floor(elapsed / interval_seconds) + 1)


def every(
    interval_seconds: float,
    fn: Callable[..., Awaitable[object]],
    *args: object,
    name: str | None = None,
    first_tick_seconds: float | None = None,
    restart: Restart = Restart.PERMANENT,
    shutdown_seconds: float = 5.0,
) -> ChildSpec:
    """A :class:`ChildSpec` for a drift-free periodic timer calling ``await fn(*args)``.

    Ticks fall on a fixed grid (``first_tick_seconds`` after start, default one interval, then
    every *interval_seconds*); an overrunning call skips missed ticks. The timer is an ordinary
    supervised child: it stops with the tree (no timer is ever left behind to keep a process
    alive) and an exception from *fn* is a crash handled by its supervisor.

    Raises:
        ValueError: *interval_seconds* is not a positive finite number, or
            *first_tick_seconds* is negative.
    """
    interval = check_seconds(
        "interval_seconds", interval_seconds, allow_zero=False, allow_inf=False
    )
    first = (
        None
        if first_tick_seconds is None
        else check_seconds("first_tick_seconds", first_tick_seconds, allow_inf=False)
    )
    timer_args: tuple[object, ...] = (interval, first, fn, *args)
    label = name if name is not None else f"every-{getattr(fn, '__name__', 'timer')}"
    return ChildSpec(
        label,
        run_every,
        timer_args,
        restart=restart,
        shutdown_seconds=shutdown_seconds,
    )
