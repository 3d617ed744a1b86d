"""Exception-group handling at public boundaries."""

from __future__ import annotations


def unwrap_group(exc: BaseException) -> BaseException:
    """The single leaf of nested one-error exception groups, or *exc* itself.

    Groups with more than one error are returned unchanged: they really are several errors.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` — the one-line form used in snapshots and log lines."""
    exc = unwrap_group(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
