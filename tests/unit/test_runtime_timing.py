"""Timing of the runtime's stop and of timers, on trio's autojump clock (exact, no real sleeps)."""

from __future__ import annotations

import math

import anyio
import anyio.abc
import pytest
import trio

import megatrio
from megatrio import ChildSpec, mega_runtime

from ..helpers import Boom, task_names

pytestmark = pytest.mark.anyio


async def stubborn(*, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Hears its stop signal (reads it once) and ignores it: cancelled at its deadline."""
    ctx = megatrio.current_child()
    assert ctx is not None
    assert not ctx.stopping
    task_status.started()
    await trio.sleep_forever()


async def test_grace_seconds_bounds_the_whole_stop() -> None:
    closed_at: list[float] = []

    async def slow_close() -> None:
        try:
            await trio.sleep(100)
        finally:
            closed_at.append(trio.current_time())

    async with mega_runtime(grace_seconds=3) as rt:
        rt.push_async_callback(slow_close)
        await rt.start_child(ChildSpec("a", stubborn, shutdown_seconds=2))
        await rt.start_child(ChildSpec("b", stubborn, shutdown_seconds=100))
        t0 = trio.current_time()
    # "b" ignores its stop and would take 100 s; grace cuts the whole stop at 3 s, and the
    # resource cleanup that comes after it gets whatever is left of the grace (nothing here).
    assert trio.current_time() - t0 == pytest.approx(3)
    assert closed_at == [pytest.approx(t0 + 3)]


async def test_children_get_their_own_grace_within_the_runtime_grace() -> None:
    async with mega_runtime(grace_seconds=30) as rt:
        await rt.start_child(ChildSpec("a", stubborn, shutdown_seconds=2))
        await rt.start_child(ChildSpec("b", stubborn, shutdown_seconds=5))
        t0 = trio.current_time()
    assert trio.current_time() - t0 == pytest.approx(7)


async def test_cancel_stops_everything_at_once() -> None:
    async with mega_runtime(grace_seconds=30) as rt:
        await rt.start_child(ChildSpec("a", stubborn, shutdown_seconds=20))
        t0 = trio.current_time()
        rt.cancel()
        await trio.sleep_forever()
    assert trio.current_time() == pytest.approx(t0)


async def test_outer_cancellation_cancels_children_and_still_closes_resources() -> None:
    closed: list[str] = []

    async def close() -> None:
        await trio.sleep(1)  # shielded cleanup may still await, within the grace
        closed.append("closed")

    with trio.move_on_after(10) as outer:
        async with mega_runtime(name="outer", grace_seconds=5) as rt:
            rt.push_async_callback(close)
            await rt.start_child(ChildSpec("a", stubborn, shutdown_seconds=100))
            await trio.sleep_forever()
    assert outer.cancelled_caught
    assert closed == ["closed"]
    assert task_names("outer/") == []


async def test_every_is_drift_free_and_skips_missed_ticks() -> None:
    ticks: list[float] = []
    t0 = trio.current_time()

    async def tick() -> None:
        ticks.append(round(trio.current_time() - t0, 9))
        if len(ticks) == 3:
            await trio.sleep(2.5)  # overruns ticks 4 and 5

    async with mega_runtime() as rt:
        await rt.start_child(megatrio.every(1.0, tick, name="ticker"))
        await trio.sleep(8.5)
    assert ticks == [1, 2, 3, 6, 7, 8]


async def test_every_stops_with_the_tree_and_never_calls_after_stop() -> None:
    calls: list[float] = []

    async def tick() -> None:
        calls.append(trio.current_time())

    async with mega_runtime() as rt:
        t0 = trio.current_time()
        await rt.start_child(megatrio.every(10.0, tick, first_tick_seconds=0, name="t"))
        await trio.sleep(15)
    assert calls == [t0, t0 + 10]
    # The timer answered its stop request at once: no 10 s wait, no leftover task.
    assert trio.current_time() == pytest.approx(t0 + 15)
    assert task_names("megatrio/") == []


async def test_a_crashing_timer_is_restarted_by_its_supervisor() -> None:
    calls = 0

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Boom("tick failed")

    async with mega_runtime() as rt:
        await rt.start_child(megatrio.every(1.0, tick, name="t"))
        await trio.sleep(3.5)
        [entry] = rt.snapshot()["children"]
    assert entry["restarts"] == 1
    assert entry["last_error"] == "Boom: tick failed"


@pytest.mark.parametrize(
    ("interval", "message"),
    [(0, "interval_seconds must be > 0"), (math.inf, "must be finite"), (-1, "must be >= 0")],
)
def test_every_validates_its_interval(interval: float, message: str) -> None:
    async def tick() -> None:
        pass

    with pytest.raises(ValueError, match=message):
        megatrio.every(interval, tick)


async def test_forced_says_whether_the_stop_cut_work_off() -> None:
    async with mega_runtime(grace_seconds=30) as rt:
        await rt.start_child(ChildSpec("a", stubborn, shutdown_seconds=2))
    assert not rt.forced  # cancelled at its own deadline, well within the grace

    async with mega_runtime(grace_seconds=3) as rt:
        await rt.start_child(ChildSpec("b", stubborn, shutdown_seconds=100))
    assert rt.forced  # the grace ran out while "b" was still stopping

    async with mega_runtime(grace_seconds=30) as rt:
        await rt.start_child(ChildSpec("c", stubborn, shutdown_seconds=100))
        rt.cancel()
    assert rt.forced


async def test_a_shutdown_delay_keeps_children_running_while_stopping_is_true() -> None:
    seen: list[tuple[float, bool, bool]] = []

    async def watch(rt: megatrio.Runtime) -> None:
        for _ in range(4):
            ctx_states = [c["state"] for c in rt.snapshot()["children"]]
            seen.append((trio.current_time(), rt.stopping, ctx_states == ["running"]))
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        async with mega_runtime(grace_seconds=30, shutdown_delay_seconds=2.5) as rt:
            await rt.start_child(ChildSpec("a", stubborn, shutdown_seconds=0))
            t0 = trio.current_time()
            rt.stop()
            nursery.start_soon(watch, rt)
        ended = trio.current_time()
    assert ended - t0 == 2.5
    assert [(t - t0, stopping, running) for t, stopping, running in seen[:3]] == [
        (0, True, True),
        (1, True, True),
        (2, True, True),
    ]
    assert not rt.forced


async def test_cancel_cuts_a_shutdown_delay_short() -> None:
    async with (
        trio.open_nursery() as nursery,
        mega_runtime(grace_seconds=30, shutdown_delay_seconds=20) as rt,
    ):
        t0 = trio.current_time()

        async def second_signal() -> None:
            await trio.sleep(1)
            rt.cancel()

        nursery.start_soon(second_signal)
        rt.stop()
    assert trio.current_time() - t0 == 1
    assert rt.forced


async def test_the_shutdown_delay_counts_within_the_grace() -> None:
    async with mega_runtime(grace_seconds=3, shutdown_delay_seconds=10) as rt:
        await rt.start_child(ChildSpec("a", stubborn, shutdown_seconds=5))
        t0 = trio.current_time()
    assert trio.current_time() - t0 == 3
    assert rt.forced
