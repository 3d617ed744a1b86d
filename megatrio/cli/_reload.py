"""``megatrio run --reload``: restart the workers when the app's Python sources change.

The reloader is a supervised child of the ``--workers`` primary. It watches directories with
watchfiles and, after each burst of changes to ``.py`` files, hands the changed paths to a
callback — the cluster's, which restarts the worker processes. The primary keeps the listening
sockets open throughout, so a connection made while a worker restarts waits in the listen
backlog for the new one: it is never refused. The primary never imports the app, so nothing
here needs to be reloaded itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import trio
from watchfiles import Change, DefaultFilter, awatch

from ..nursery._child import current_child

log = logging.getLogger("megatrio.reload")

STEP_MS = 100
"""A burst of changes ends after this long without a new one (an editor's save is several)."""
DEBOUNCE_MS = 1600
"""A burst is cut after this long, even if changes keep coming."""
POLL_MS = 500
"""How long the watcher thread waits before it returns with nothing: the bound on noticing
that the watcher was started, and a backstop for a stop."""
LISTED_PATHS = 3
"""Changed paths named in the log line; more are counted."""


class SourceFilter(DefaultFilter):
    """Accepts changes to ``.py`` files, except in directories no app source lives in
    (``__pycache__``, ``.git``, virtual environments, tool caches, ...).

    Only the part of a path below the watched directory it is in is looked at, so an app that
    itself lives under, say, a ``venv`` directory is still watched.
    """

    ignore_dirs = (*DefaultFilter.ignore_dirs, "venv", ".nox", ".ruff_cache", "site-packages")

    def __init__(self, roots: Sequence[Path]) -> None:
        super().__init__()
        self._roots = [str(root) for root in roots]

    def __call__(self, change: Change, path: str) -> bool:
        if not path.endswith(".py"):
            return False
        return super().__call__(change, self._below_root(path))

    def _below_root(self, path: str) -> str:
        for root in self._roots:
            if path.startswith(root.rstrip(os.sep) + os.sep):
                return path[len(root.rstrip(os.sep)) + 1 :]
        return path


def describe_changes(paths: Iterable[str], *, cwd: Path) -> str:
    """The changed *paths* for one log line: sorted, relative to *cwd* when below it, the
    first few named and the rest counted (``"a.py, b.py, c.py and 2 more"``)."""
    shown = sorted({_relative(path, cwd) for path in paths})
    named = ", ".join(shown[:LISTED_PATHS])
    more = len(shown) - LISTED_PATHS
    return f"{named} and {more} more" if more > 0 else named


def _relative(path: str, cwd: Path) -> str:
    try:
        return str(Path(path).relative_to(cwd))
    except ValueError:
        return path


def forget_bytecode(paths: Iterable[str]) -> None:
    """Remove the cached bytecode of each source in *paths*, if there is any.

    Python trusts a ``.pyc`` whose recorded source mtime (in whole seconds) and size match the
    source; an edit within the same second that keeps the size (``v1`` → ``v2``) would
    otherwise leave the new worker running the old code.
    """
    for path in paths:
        with contextlib.suppress(ValueError, OSError):
            os.unlink(importlib.util.cache_from_source(path))


async def serve_reloader(
    directories: Sequence[Path],
    on_change: Callable[[list[str]], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch *directories* (recursively) and await ``on_change(paths)`` after each burst of
    changes to ``.py`` files (see :class:`SourceFilter`), with their cached bytecode removed
    first. Runs until its child's stop request.

    Started once the watcher is observing the directories: a change made after
    ``start_child`` returned is seen. Changes made while *on_change* runs are kept and make
    the next call. A stop request ends the watch within :data:`STEP_MS` and cancels an
    *on_change* under way; cancelling it from outside waits at most :data:`POLL_MS` for the
    watcher thread.

    Raises:
        FileNotFoundError: a directory does not exist (or vanished).
    """
    ctx = current_child()
    assert ctx is not None
    # One line per reload is logged by the callback; watchfiles' own "N changes detected"
    # would be a second.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    stop = trio.Event()
    announced = False
    async with trio.open_nursery() as nursery:

        async def stop_on_request() -> None:
            await ctx.wait_stopping()
            stop.set()  # the watcher thread sees it and returns
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_request)
        batches = awatch(
            *directories,
            watch_filter=SourceFilter(directories),
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop,
            rust_timeout=POLL_MS,
            # The first batch, empty or not, proves the watcher exists: only then is this
            # child started.
            yield_on_timeout=True,
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                if not announced:
                    announced = True
                    log.info(
                        "watching %s for changes to .py files",
                        ", ".join(str(d) for d in directories),
                    )
                    task_status.started()
                if batch:
                    paths = sorted({path for _, path in batch})
                    forget_bytecode(paths)
                    await on_change(paths)
        nursery.cancel_scope.cancel()
