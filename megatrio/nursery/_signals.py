"""The one task that reads process signals and turns them into stop requests."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

import anyio
import anyio.abc

log = logging.getLogger("megatrio.signals")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def check_main_thread() -> None:
    """Raise RuntimeError unless called on the main thread (signals are delivered only there)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("signal handling can only be installed on the main thread")


async def serve_stop_signals(
    on_first: Callable[[], None],
    on_second: Callable[[], None],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Read SIGTERM/SIGINT until cancelled: the first calls *on_first*, later ones *on_second*.

    The callbacks only request a stop (set a deadline, cancel a scope); no state is changed
    from a signal handler. Reports started once the handlers are installed. Runs until
    cancelled; cancelling it restores the previous handlers.
    """
    check_main_thread()
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        seen = 0
        async for signum in signals:
            seen += 1
            name = signal.Signals(signum).name
            if seen == 1:
                log.warning("received %s: stopping gracefully", name)
                on_first()
            else:
                log.warning("received %s again: cancelling everything now", name)
                on_second()
