"""A small program for the signal tests: ``python signal_app.py graceful|stubborn``.

It prints ``ready`` once its tree runs; on stop, the "slow" child takes 0.5 s to clean up.
In ``stubborn`` mode a second child ignores stop requests and has a 60 s grace, so only a
second signal can end the process quickly.
"""

from __future__ import annotations

import sys

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
    task_status.started()
    await trio.sleep_forever()


async def main(mode: str) -> None:
    async with megatrio.mega_runtime(grace_seconds=30, handle_signals=True) as rt:
        await rt.start_child(ChildSpec("slow", slow, shutdown_seconds=10))
        if mode == "stubborn":
            await rt.start_child(ChildSpec("stubborn", stubborn, shutdown_seconds=60))
        print("ready", flush=True)
        await trio.sleep_forever()
    print("runtime exited", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
