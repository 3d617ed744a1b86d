"""A supervised tree that restarts a crashing child, embedded with ``mega_runtime()``.

Run it with ``python examples/supervised_tree.py`` (stops by itself after ``--seconds``, or on
Ctrl-C / SIGTERM: the first signal stops gracefully, a second one at once).
"""

from __future__ import annotations

import argparse
import logging
import sys

import trio

import megatrio
from megatrio import ChildSpec, Restart, Strategy, Supervisor


async def heartbeat() -> None:
    logging.getLogger("example").info("heartbeat at t=%.1f", trio.current_time())


async def flaky_worker(crash_every: float, *, task_status: trio.TaskStatus[None]) -> None:
    """Serves until asked to stop, or crashes after *crash_every* seconds (then it restarts)."""
    ctx = megatrio.current_child()
    assert ctx is not None
    task_status.started()
    with trio.move_on_after(crash_every):
        await ctx.wait_stopping()
        return
    raise RuntimeError(f"worker crashed after {crash_every:g} s (on purpose)")


async def steady_store(*, task_status: trio.TaskStatus[str]) -> None:
    """Finishes its work before stopping: waits for the stop request, then cleans up."""
    ctx = megatrio.current_child()
    assert ctx is not None
    task_status.started("store ready")
    await ctx.wait_stopping()
    logging.getLogger("example").info("store: flushing before exit")
    await trio.sleep(0.2)


async def main(seconds: float) -> None:
    workers = Supervisor(
        [
            ChildSpec("store", steady_store),
            ChildSpec("flaky", flaky_worker, (1.5,)),
        ],
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=5,
        period_seconds=10,
        name="workers",
    )
    async with megatrio.mega_runtime(name="demo", grace_seconds=5, handle_signals=True) as rt:
        await rt.start_child(megatrio.every(1.0, heartbeat, name="heartbeat"))
        await rt.start_child(workers.child_spec(restart=Restart.PERMANENT))
        print("ready: supervised tree running (Ctrl-C to stop)", flush=True)
        if seconds > 0:
            await trio.sleep(seconds)
            print(megatrio.format_tree(rt.snapshot()), flush=True)
            rt.stop()
        await trio.sleep_forever()
    print("stopped cleanly", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds",
        type=float,
        default=4.0,
        help="run this long, print the tree, then stop (0: until a signal)",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    trio.run(main, args.seconds)
