"""A small program for the signal tests: ``python signal_app.py graceful|stubborn|blocked``.

It prints ``ready`` once its tree runs; on stop, the "slow" child takes 0.5 s to clean up.
In ``stubborn`` mode a second child hears its stop request, ignores it, and has a 60 s grace,
so only a second signal can end the process quickly. In ``blocked`` mode a child holds the
event loop without ever awaiting (the watchdog warns after 0.5 s, on stderr): no signal can be
read, and a further one ends the process from the handler.
"""

from __future__ import annotations

import sys
import time

import trio

import megatrio
from megatrio import ChildSpec


async def slow(*, task_status: trio.TaskStatus[None]) -> None:
    ctx = megatrio.current_child()
    assert ctx is not None
    task_status.started()
    await ctx.wait_stopping()
    await trio.sleep(0.5)
    print("slow: cleaned up", flush=True)


async def stubborn(*, task_status: trio.TaskStatus[None]) -> None:
    ctx = megatrio.current_child()
    assert ctx is not None
    assert not ctx.stopping  # it hears its stop signal, and ignores it
    task_status.started()
    await trio.sleep_forever()


async def blocker(*, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    await trio.sleep(0.1)
    while True:  # the bug the watchdog exists for: a loop that never awaits
        time.sleep(0.01)  # noqa: ASYNC251 -- blocking on purpose


async def main(mode: str) -> None:
    megatrio.configure_logging(stream=sys.stderr)
    async with megatrio.mega_runtime(
        grace_seconds=30, handle_signals=True, blocked_loop_warn_seconds=0.5
    ) as rt:
        await rt.start_child(ChildSpec("slow", slow, shutdown_seconds=10))
        if mode == "stubborn":
            await rt.start_child(ChildSpec("stubborn", stubborn, shutdown_seconds=60))
        if mode == "blocked":
            await rt.start_child(ChildSpec("blocker", blocker))
        print("ready", flush=True)
        await trio.sleep_forever()
    print("runtime exited", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
