"""Drift-free periodic work as a supervised child."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from ._child import current_child


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
