"""The one task that reads process signals and turns them into stop requests.

A signal is turned into a stop request by a task, so it needs the event loop to run. When the
loop cannot run — some code holds it without ever awaiting — a signal would wait for ever; so
the Python-level handler counts deliveries too, and a further signal that arrives while an
earlier one has waited :data:`EMERGENCY_AFTER_SECONDS` unread (or while the watchdog sees the
loop blocked) ends the process from the handler itself, with the exit code a process killed by
that signal reports to a shell: ``128 + signal number``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import anyio
import anyio.abc

log = logging.getLogger("megatrio.signals")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EMERGENCY_AFTER_SECONDS = 0.5
"""How long a delivered signal may wait unread before the next one ends the process."""


def emergency_exit_code(signum: int) -> int:
    """The exit code of an emergency exit on *signum*: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


def check_main_thread() -> None:
    """Raise RuntimeError unless called on the main thread (signals are delivered only there)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("signal handling can only be installed on the main thread")


class _Deliveries:
    """What the handlers saw and what the reader task took, for the emergency rule."""

    __slots__ = ("delivered", "first_waiting", "loop_blocked", "read")

    def __init__(self, loop_blocked: Callable[[], bool]) -> None:
        self.delivered = 0
        self.read = 0
        self.first_waiting: float | None = None
        """When the oldest delivered, unread signal arrived."""
        self.loop_blocked = loop_blocked

    def on_delivery(self, signum: int) -> None:
        # Runs in the signal handler: only counters, a clock read, and os.write/os._exit.
        now = time.monotonic()
        waiting = self.first_waiting
        stuck = waiting is not None and now - waiting >= EMERGENCY_AFTER_SECONDS
        if self.delivered >= 1 and (stuck or self.loop_blocked()):
            name = signal.Signals(signum).name
            message = (
                f"megatrio: {name} again while the event loop is blocked: exiting at once "
                f"(exit code {emergency_exit_code(signum)}, nothing was cleaned up)\n"
            )
            try:
                os.write(2, message.encode())
            finally:
                os._exit(emergency_exit_code(signum))
        self.delivered += 1
        if waiting is None:
            self.first_waiting = now
        if self.loop_blocked():
            name = signal.Signals(signum).name
            os.write(
                2,
                f"megatrio: {name} received while the event loop is blocked; "
                f"send it again to exit at once\n".encode(),
            )

    def on_read(self) -> None:
        self.read += 1
        self.first_waiting = None if self.read >= self.delivered else time.monotonic()


def _wrap_handlers(deliveries: _Deliveries) -> Callable[[], None]:
    """Chain a counting handler in front of the installed ones; returns the undo."""
    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        installed = signal.getsignal(signum)
        previous[signum] = installed

        def handler(number: int, frame: FrameType | None, installed: Any = installed) -> None:
            deliveries.on_delivery(number)
            if callable(installed):
                installed(number, frame)

        signal.signal(signum, handler)

    def restore() -> None:
        for signum, installed in previous.items():
            signal.signal(signum, installed)

    return restore


async def serve_stop_signals(
    on_first: Callable[[], None],
    on_second: Callable[[], None],
    *,
    loop_blocked: Callable[[], bool] = lambda: False,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Read SIGTERM/SIGINT until cancelled: the first calls *on_first*, later ones *on_second*.

    The callbacks only request a stop (set a deadline, cancel a scope); no state is changed
    from a signal handler. If the loop cannot read a signal — it waited
    :data:`EMERGENCY_AFTER_SECONDS` unread, or *loop_blocked* says so — the next one ends the
    process from the handler with :func:`emergency_exit_code`. Reports started once the
    handlers are installed. Runs until cancelled; cancelling it restores the previous
    handlers.
    """
    check_main_thread()
    deliveries = _Deliveries(loop_blocked)
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        restore = _wrap_handlers(deliveries)
        try:
            task_status.started()
            seen = 0
            async for signum in signals:
                deliveries.on_read()
                seen += 1
                name = signal.Signals(signum).name
                if seen == 1:
                    log.warning("received %s: stopping gracefully", name)
                    on_first()
                else:
                    log.warning("received %s again: cancelling everything now", name)
                    on_second()
        finally:
            restore()
