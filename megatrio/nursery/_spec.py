"""What a supervised child is: its :class:`ChildSpec`, and :func:`ready_immediately`."""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import anyio.abc
import attrs

from .._policy._checks import check_seconds
from .._policy._supervision import Restart
from ._child import Target


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"child name must be a non-empty string without '/', got {value!r}")


def _check_target(instance: object, attribute: attrs.Attribute[Target], value: Target) -> None:
    if not callable(value):
        raise TypeError(f"child target must be an async callable, got {value!r}")


def _check_shutdown(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds("shutdown_seconds", value)


def _check_start_timeout(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None:
        check_seconds("start_timeout_seconds", value, allow_zero=False)


def _as_args(value: Iterable[object]) -> tuple[object, ...]:
    return tuple(value)


@attrs.frozen
class ChildSpec:
    """How to run one child: ``await target(*args, task_status=...)``.

    The target must call ``task_status.started(value)`` once it is ready; only then is it
    *started* (its uptime counts from there, and the next child may start). Raising or
    returning before that is a failed start, and so is not reporting ready within
    *start_timeout_seconds* (``None``: no limit) — the child is then cancelled. Wrap a plain
    coroutine function with :func:`ready_immediately` when it has no readiness to report.

    *shutdown_seconds* is this child's grace when it is stopped: its *stopping* signal is set,
    and whatever still runs ``shutdown_seconds`` later is cancelled. ``0`` cancels at once;
    ``math.inf`` waits for the child to return (as OTP's ``infinity``, meant for supervisors).
    A finite grace is for children that can hear the signal: one that never read
    ``current_child().stopping`` nor awaited ``wait_stopping()`` (in any of its tasks) is
    cancelled at once — its ``finally`` blocks still run, shielded cleanup included.
    """

    name: str = attrs.field(validator=_check_name)
    target: Target = attrs.field(validator=_check_target)
    args: tuple[object, ...] = attrs.field(default=(), converter=_as_args)
    restart: Restart = attrs.field(
        default=Restart.PERMANENT, validator=attrs.validators.instance_of(Restart)
    )
    shutdown_seconds: float = attrs.field(default=5.0, validator=_check_shutdown)
    start_timeout_seconds: float | None = attrs.field(
        default=None, kw_only=True, validator=_check_start_timeout
    )


def ready_immediately(fn: Target) -> Target:
    """Adapt ``fn(*args)`` to a child target that reports ready as soon as it runs.

    Use it for children whose readiness means nothing beyond "it is running"::

        ChildSpec("sweeper", ready_immediately(sweep_forever))

    Such a child is stopped by cancellation, at once, unless *fn* watches
    ``megatrio.current_child().stopping`` (or awaits ``wait_stopping()``): then it gets its
    ``shutdown_seconds`` to finish what it is doing.
    """

    async def target(*args: object, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await fn(*args)

    target.__name__ = getattr(fn, "__name__", "target")
    target.__qualname__ = getattr(fn, "__qualname__", "target")
    return target
