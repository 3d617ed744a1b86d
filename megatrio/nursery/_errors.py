"""Errors at the tree's boundaries: unwrapping groups, classifying exits, cheap crash reports."""

from __future__ import annotations

import contextlib
import linecache
import logging
import sys
import traceback
import types
from collections.abc import Callable, Iterator

MAX_FRAMES = 40
"""Frames kept per exception in a crash report: the outermost and innermost halves."""
MAX_CHAIN = 8
"""Chained exceptions (``__cause__``/``__context__``) followed in a crash report."""


def unwrap_group(exc: BaseException) -> BaseException:
    """The single leaf of nested one-error exception groups, or *exc* itself.

    Groups with more than one error are returned unchanged: they really are several errors.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@contextlib.contextmanager
def unwrapped_groups() -> Iterator[None]:
    """Let a one-error exception group leaving the block out as that error (:func:`unwrap_group`).

    For public boundaries around a task group: the caller sees the real error, and the group
    stays reachable as its ``__context__``. Groups of several errors leave unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = unwrap_group(group)
        if leaf is group:
            raise
        raise leaf  # noqa: B904 -- the group stays reachable as __context__


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` — the one-line form used in snapshots and log lines."""
    exc = unwrap_group(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def split_exit(exc: BaseException) -> tuple[Exception | None, BaseException | None]:
    """Split what a child raised into *its error* and *what must propagate*.

    The error is every ``Exception`` in *exc* — a single one unwrapped from its groups, several
    kept as a group. What must propagate is everything else: ``Cancelled`` of an enclosing
    scope, ``KeyboardInterrupt``, ``SystemExit`` (a single one unwrapped, so that the scope it
    belongs to recognises it). Either part may be None.
    """
    if isinstance(exc, Exception):
        return unwrap_exception(exc), None
    if not isinstance(exc, BaseExceptionGroup):
        return None, exc
    errors, rest = exc.split(Exception)
    error = None if errors is None else unwrap_exception(errors)
    propagate = None if rest is None else unwrap_group(rest)
    return error, propagate


@contextlib.contextmanager
def containing(on_error: Callable[[Exception], object]) -> Iterator[None]:
    """Contain the block's failure: its errors (:func:`split_exit`; also ones grouped with
    ``Cancelled``) go to *on_error* and end the block; ``Cancelled``, ``KeyboardInterrupt``
    and ``SystemExit`` propagate. For what may fail alone: one connection, one message."""
    try:
        yield
    except BaseException as exc:
        error, propagate = split_exit(exc)
        del exc
        if error is not None:
            on_error(error)
        if propagate is not None:
            raise propagate from None


def unwrap_exception(exc: Exception) -> Exception:
    leaf = unwrap_group(exc)
    assert isinstance(leaf, Exception)
    return leaf


# -- crash reports ---------------------------------------------------------------------------


def format_exception(exc: BaseException) -> str:
    """A traceback of *exc* as ``traceback.format_exception`` writes it, minus the column
    markers (``^^^^``), capped at :data:`MAX_FRAMES` frames per exception and
    :data:`MAX_CHAIN` chained exceptions.

    The column markers are what makes the standard formatter slow on Python 3.11 (it parses
    each frame's source line); a crash report on a restart's hot path costs a few
    microseconds per frame instead. Exception groups use the standard formatter.
    """
    if _has_group(exc):
        return "".join(traceback.format_exception(exc)).rstrip("\n")
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link: str | None = None
    while current is not None and id(current) not in seen and len(chain) < MAX_CHAIN:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            link = "The above exception was the direct cause of the following exception:"
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            link = "During handling of the above exception, another exception occurred:"
            current = current.__context__
        else:
            current = None
    lines: list[str] = []
    # Oldest first, as Python prints a chain; each entry's link says how it led to the next.
    for index in range(len(chain) - 1, -1, -1):
        error, link = chain[index]
        _format_one(error, lines)
        if index > 0 and link is not None:
            lines.extend(("", link, ""))
    return "\n".join(lines)


def _has_group(exc: BaseException) -> bool:
    current: BaseException | None = exc
    depth = 0
    while current is not None and depth < MAX_CHAIN:
        if isinstance(current, BaseExceptionGroup):
            return True
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
        depth += 1
    return False


def _format_one(exc: BaseException, lines: list[str]) -> None:
    frames = list(_walk(exc.__traceback__))
    if frames:
        lines.append("Traceback (most recent call last):")
    half = MAX_FRAMES // 2
    if len(frames) > MAX_FRAMES:
        omitted = len(frames) - MAX_FRAMES
        shown = [*frames[:half], None, *frames[-half:]]
    else:
        omitted, shown = 0, list(frames)
    for frame in shown:
        if frame is None:
            lines.append(f"  [... {omitted} frames omitted ...]")
            continue
        code, lineno = frame
        lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}')
        source = linecache.getline(code.co_filename, lineno).strip()
        if source:
            lines.append(f"    {source}")
    lines.extend(line.rstrip("\n") for line in traceback.format_exception_only(type(exc), exc))


def _walk(tb: types.TracebackType | None) -> list[tuple[types.CodeType, int]]:
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    return frames


def log_exception(
    logger: logging.Logger, level: int, error: BaseException, msg: str, *args: object
) -> None:
    """Log *msg* % *args* at *level* with *error*'s traceback, formatted by
    :func:`format_exception` once, at the call (handlers reuse ``record.exc_text``).

    Costs nothing when *level* is disabled for *logger*.
    """
    if not logger.isEnabledFor(level):
        return
    caller = sys._getframe(1)
    fn, lineno, func = caller.f_code.co_filename, caller.f_lineno, caller.f_code.co_name
    record = logger.makeRecord(
        logger.name, level, fn, lineno, msg, args, (type(error), error, error.__traceback__), func
    )
    record.exc_text = format_exception(error)
    logger.handle(record)
