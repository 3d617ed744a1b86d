"""A cluster worker's reports to its primary: its tree, request counts and metric samples,
every second on the status pipe, and once more after its last child has stopped."""

from __future__ import annotations

import os
from typing import IO, final

import trio

from .._samples import gather, to_data
from ..app._app import App
from ..nursery._child import current_child
from ._protocol import tree_line

TREE_EVERY_SECONDS = 1.0
"""How often a worker reports its supervision tree to the primary."""


@final
class TreeReporter:
    """Writes ``tree <json>`` lines (:class:`~._protocol.WorkerStatus`) for *app* on *status*.

    A primary that stops reading never holds the worker up: a line not sent within a second
    is cut off, and the primary drops the torn line (the next line starts on a fresh one, so
    only the torn report is lost). The last report is sent after every child of the worker
    has stopped (a runtime callback, before its stores close), so what the HTTP listener
    counted while draining reaches the primary's totals too.
    """

    def __init__(self, status: IO[bytes], app: App) -> None:
        self._status = status
        self._app = app
        self._pipe: trio.lowlevel.FdStream | None = None
        self._torn = False
        self._closed = False
        self._final_registered = False

    def _line(self) -> bytes:
        rt = self._app.rt
        http = self._app._http_metrics
        samples = to_data(gather(rt.metric_sources.values()))
        return tree_line(rt.snapshot(), None if http is None else http.to_dict(), samples)

    async def send(self) -> bool:
        """One report, cut off after :data:`TREE_EVERY_SECONDS`; false once the primary is
        gone (the pipe is closed then)."""
        if self._closed:
            return False
        if self._pipe is None:
            # From here this reporter is the pipe's only writer; its stream makes it
            # non-blocking.
            fd = os.dup(self._status.fileno())
            self._status.close()
            self._pipe = trio.lowlevel.FdStream(fd)
        line = self._line()
        if self._torn:
            line = b"\n" + line
        self._torn = True
        with trio.move_on_after(TREE_EVERY_SECONDS):
            try:
                await self._pipe.send_all(line)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.aclose()
                return False
            self._torn = False
        return True

    async def final(self) -> None:
        """The last report, if reports had begun, then the pipe is closed."""
        try:
            if self._pipe is not None:
                await self.send()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        if self._pipe is not None:
            await self._pipe.aclose()

    def register_final(self) -> None:
        """Have the runtime send :meth:`final` after its children (once, however often the
        reporting child restarts)."""
        if not self._final_registered:
            self._final_registered = True
            self._app.rt.push_async_callback(self.final)


async def report_tree(
    reporter: TreeReporter, ready_told: trio.Event, *, task_status: trio.TaskStatus[None]
) -> None:
    """The ``tree-report`` child: once ``ready`` has been told, a report every second until
    asked to stop; a primary that is gone ends the reports (its parent pipe's EOF stops this
    worker)."""
    ctx = current_child()
    assert ctx is not None
    reporter.register_final()
    task_status.started()
    async with trio.open_nursery() as nursery:

        async def report() -> None:
            await ready_told.wait()
            while True:
                if not await reporter.send():
                    return
                await trio.sleep(TREE_EVERY_SECONDS)

        nursery.start_soon(report)
        await ctx.wait_stopping()
        nursery.cancel_scope.cancel()
