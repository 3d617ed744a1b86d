"""A thread that notices when the event loop stops running, and says who is holding it.

A task that never awaits (``while not ctx.stopping: ...`` with no ``await`` in the body) holds
the loop: nothing else runs — not the HTTP server, not the signal reader. Such a bug cannot be
seen from a task, so the watchdog is a thread: a heartbeat task in the loop stamps the time,
and when the stamp is older than *warn_seconds* the thread logs, once per blocked stretch, the
supervised child that is running (from the loop thread's frames) and its stack.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from types import FrameType

import anyio
import anyio.abc

from ._child import Incarnation, run_incarnation

log = logging.getLogger("megatrio.watchdog")

_STACK_FRAMES = 30


class LoopWatchdog:
    """Heartbeat task plus watching thread for one event loop. Use :meth:`serve` as a task."""

    def __init__(self, warn_seconds: float) -> None:
        self.warn_seconds = warn_seconds
        self._interval = min(0.5, warn_seconds / 4)
        self._heartbeat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._done = threading.Event()
        self._warned = False

    def blocked(self) -> bool:
        """Whether the loop has not run for *warn_seconds*. Safe from any thread or handler."""
        return time.monotonic() - self._heartbeat >= self.warn_seconds

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Stamp the heartbeat until cancelled; the watching thread lives exactly as long.

        Reports started once the thread runs. Cancelling it stops and joins the thread.
        """
        self._loop_thread = threading.get_ident()
        self._heartbeat = time.monotonic()
        thread = threading.Thread(target=self._watch, name="megatrio-watchdog", daemon=True)
        thread.start()
        try:
            task_status.started()
            while True:
                self._heartbeat = time.monotonic()
                await anyio.sleep(self._interval)
        finally:
            self._done.set()
            thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._done.wait(self._interval):
            age = time.monotonic() - self._heartbeat
            if age < self.warn_seconds:
                self._warned = False
            elif not self._warned:
                self._warned = True
                self._report(age)

    def _report(self, age: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        child = _running_child(frame)
        stack = "".join(traceback.format_stack(frame, limit=_STACK_FRAMES)) if frame else ""
        log.warning(
            "the event loop has not run for %.1f s: %s holds it without awaiting "
            "(nothing else runs, signals wait); its stack, innermost last:\n%s",
            age,
            "supervised child " + child if child else "code outside any supervised child",
            stack.rstrip(),
        )


def _running_child(frame: FrameType | None) -> str | None:
    """The supervision path of the innermost child whose frames hold *frame*."""
    code = run_incarnation.__code__
    while frame is not None:
        if frame.f_code is code:
            incarnation = frame.f_locals.get("incarnation")
            if isinstance(incarnation, Incarnation):
                return "/".join(incarnation.path)
        frame = frame.f_back
    return None
