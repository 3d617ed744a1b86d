"""Timer child specs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ._policy._checks import check_seconds
from .nursery._timer import run_every
from .supervisor import ChildSpec, Restart


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
