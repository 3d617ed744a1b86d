"""The asyncio bridge: results, errors, and structured cancellation across the thread boundary.

A real thread and a real loop, so the real clock; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable

import anyio
import outcome
import pytest
import sniffio
import trio

from megatrio.services.nats._bridge import AsyncioBridge, open_asyncio_bridge

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # a real thread needs the real clock


class Boom(Exception):
    pass


async def loop_tasks(bridge: AsyncioBridge) -> set[asyncio.Task[object]]:
    """Every task on the bridge's loop, read on the loop's own thread (not from a task)."""
    found: concurrent.futures.Future[set[asyncio.Task[object]]] = concurrent.futures.Future()
    bridge.call_soon_in_loop(lambda: found.set_result(set(asyncio.all_tasks(bridge.loop))))
    return await trio.to_thread.run_sync(found.result, 5)


def bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "megatrio-asyncio-bridge"]


async def test_result_and_exception_cross_unchanged() -> None:
    async def add(a: int, b: int) -> tuple[int, str]:
        await asyncio.sleep(0)
        return a + b, sniffio.current_async_library()

    async def fail() -> None:
        await asyncio.sleep(0)
        raise Boom("from asyncio")

    with trio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            assert bridge.threaded
            # The trio side's context does not leak into the task: sniffio sees asyncio.
            assert await bridge.run(add, 2, 3) == (5, "asyncio")
            with pytest.raises(Boom, match="from asyncio"):
                await bridge.run(fail)
            # A callable that fails before it returns an awaitable fails the call the same way.
            with pytest.raises(TypeError):
                await bridge.run(len, 3)  # type: ignore[arg-type]


async def test_concurrent_calls_run_concurrently_and_share_the_wakeups() -> None:
    arrived = 0
    all_there: asyncio.Event | None = None

    async def meet(i: int) -> int:
        # Returns only once every call is on the loop at the same time: no call waits for
        # another's crossing.
        nonlocal arrived, all_there
        if all_there is None:
            all_there = asyncio.Event()
        arrived += 1
        if arrived == 100:
            all_there.set()
        await all_there.wait()
        return i

    answers: dict[int, int] = {}

    async def call(bridge: AsyncioBridge, i: int) -> None:
        answers[i] = await bridge.run(meet, i)

    async with open_asyncio_bridge() as bridge:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(call, bridge, i)
        assert answers == {i: i for i in range(100)}
        # A burst of calls wakes the loop once, not per call (a loaded machine splits bursts).
        assert bridge.loop_wakeups < 50


async def test_one_cancelled_call_among_concurrent_ones_is_the_only_one_cancelled() -> None:
    release: asyncio.Event | None = None
    finished: list[str] = []

    async def held(name: str) -> str:
        nonlocal release
        if release is None:
            release = asyncio.Event()
        try:
            await release.wait()
            return name
        finally:
            finished.append(name)

    answers: dict[str, str] = {}

    async with open_asyncio_bridge() as bridge:

        async def call(name: str, scope: trio.CancelScope | None = None) -> None:
            with scope or trio.CancelScope():
                answers[name] = await bridge.run(held, name)

        victim = trio.CancelScope()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for name in ("a", "b", "c"):
                    nursery.start_soon(call, name, victim if name == "b" else None)
                # The three calls and the runner's own task.
                while len(await loop_tasks(bridge)) < 4:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                victim.cancel()
                while "b" not in finished:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                assert release is not None
                bridge.call_soon_in_loop(release.set)
        assert answers == {"a": "a", "c": "c"}
        assert sorted(finished) == ["a", "b", "c"]


async def test_a_cancelled_run_finishes_its_task_before_raising_cancelled() -> None:
    events: list[str] = []

    async def sleeper() -> None:
        events.append("started")
        try:
            await asyncio.sleep(60)
        finally:
            events.append("finally")

    with trio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            before = await loop_tasks(bridge)
            with trio.move_on_after(0.2) as scope:
                try:
                    await bridge.run(sleeper)
                except trio.Cancelled:
                    events.append("trio saw Cancelled")
                    raise
            assert scope.cancelled_caught
            assert events == ["started", "finally", "trio saw Cancelled"]
            assert await loop_tasks(bridge) == before


async def test_a_task_slow_to_cancel_holds_the_trio_side_that_long() -> None:
    finished_at: list[float] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # cleanup that takes a while
            finished_at.append(time.monotonic())
            raise

    with trio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            started = time.monotonic()
            with trio.move_on_after(0.1):
                await bridge.run(stubborn)
            returned = time.monotonic()
            assert finished_at, "the trio side returned before the asyncio task finished"
            assert finished_at[0] <= returned
            assert returned - started >= 0.5


async def test_a_task_that_swallows_the_cancel_still_ends_in_cancelled() -> None:
    async def swallow() -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)
        return "ignored"

    with trio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            with trio.move_on_after(0.1) as scope:
                await bridge.run(swallow)
                pytest.fail("a cancelled run returned")  # pragma: no cover
            assert scope.cancelled_caught


async def test_closing_cancels_and_waits_for_everything_on_the_loop() -> None:
    events: list[str] = []
    waiter_error: list[BaseException] = []
    kept: list[asyncio.Task[None]] = []
    running = trio.Event()

    async def background() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.1)  # cleanup awaits; close waits for it
            events.append("background finally")

    async def spawn() -> None:
        # Nobody awaits it: closing the bridge is what must end it.
        kept.append(asyncio.get_running_loop().create_task(background()))

    async def in_flight_call(bridge: AsyncioBridge) -> None:
        async def forever() -> None:
            try:
                bridge.call_soon_in_host(running.set)
                await asyncio.sleep(60)
            finally:
                events.append("in-flight finally")

        try:
            await bridge.run(forever)
        except anyio.ClosedResourceError as exc:
            waiter_error.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with open_asyncio_bridge() as bridge:
                await bridge.run(spawn)
                nursery.start_soon(in_flight_call, bridge)
                await running.wait()
                assert len(await loop_tasks(bridge)) == 3  # main, background, in-flight call
            assert sorted(events) == ["background finally", "in-flight finally"]
            assert bridge.loop.is_closed()
            assert bridge_threads() == []
        assert len(waiter_error) == 1
        with pytest.raises(anyio.ClosedResourceError):
            await bridge.run(asyncio.sleep, 0)


async def test_closing_when_cancelled_still_waits_for_the_loop() -> None:
    events: list[str] = []
    kept: list[asyncio.Task[None]] = []

    async def background() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.2)
            events.append("finally")

    async def spawn() -> None:
        kept.append(asyncio.get_running_loop().create_task(background()))
        await asyncio.sleep(0)

    with trio.fail_after(10):
        with trio.CancelScope() as scope:
            async with open_asyncio_bridge() as bridge:
                await bridge.run(spawn)
                scope.cancel()
        assert events == ["finally"]
        assert bridge.loop.is_closed()
        assert bridge_threads() == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_under_asyncio_run_is_a_plain_await_on_the_running_loop() -> None:
    events: list[str] = []

    async def sleeper() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            events.append("finally")

    async def fail() -> None:
        raise Boom("inline")

    with anyio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            assert not bridge.threaded
            assert bridge.loop is asyncio.get_running_loop()
            assert await bridge.run(asyncio.sleep, 0, "x") == "x"
            with pytest.raises(Boom):
                await bridge.run(fail)
            with anyio.move_on_after(0.05) as scope:
                await bridge.run(sleeper)
            assert scope.cancelled_caught
            assert events == ["finally"]
        assert bridge_threads() == []


class Operation:
    """A callback operation held open on the loop until answered, recording what happened."""

    def __init__(self, bridge: AsyncioBridge | None = None) -> None:
        self.bridge = bridge
        self.events: list[str] = []
        self.done: Callable[[outcome.Outcome[int]], None] | None = None
        self.started = trio.Event()

    def start(self, done: Callable[[outcome.Outcome[int]], None], value: int) -> Callable[[], None]:
        self.events.append(f"start {value} on {threading.current_thread().name}")
        self.done = done
        if self.bridge is not None:
            self.bridge.call_soon_in_host(self.started.set)
        return lambda: self.events.append("stopped")

    def answer(self, result: outcome.Outcome[int]) -> None:
        assert self.done is not None
        self.done(result)


async def test_a_callback_operation_answers_with_a_value_or_what_start_raised() -> None:
    def at_once(done: Callable[[outcome.Outcome[int]], None], value: int) -> Callable[[], None]:
        done(outcome.Value(value * 2))
        done(outcome.Value(-1))  # a second answer is ignored
        return lambda: None

    def refuse(done: Callable[[outcome.Outcome[int]], None], value: int) -> Callable[[], None]:
        raise Boom(f"refused {value}")

    with trio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            assert await bridge.run_callback(at_once, 21) == 42
            with pytest.raises(Boom, match="refused 3"):
                await bridge.run_callback(refuse, 3)
            assert bridge._live == set()


async def test_a_callback_operation_answers_its_error_to_its_caller() -> None:
    with trio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            op = Operation(bridge)
            errors: list[BaseException] = []

            async def call() -> None:
                try:
                    await bridge.run_callback(op.start, 7)
                except Boom as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await op.started.wait()
                bridge.call_soon_in_loop(op.answer, outcome.Error(Boom("late")))
            assert [str(e) for e in errors] == ["late"]
            assert op.events == ["start 7 on megatrio-asyncio-bridge"]
            assert bridge._live == set()


async def test_a_cancelled_callback_operation_is_stopped_before_cancelled_is_raised() -> None:
    with trio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            op = Operation(bridge)
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def cancel_once_started() -> None:
                        await op.started.wait()
                        scope.cancel()

                    nursery.start_soon(cancel_once_started)
                    try:
                        await bridge.run_callback(op.start, 1)
                    except trio.Cancelled:
                        op.events.append("trio saw Cancelled")
                        raise
            assert scope.cancelled_caught
            assert op.events[1:] == ["stopped", "trio saw Cancelled"]
            # An answer after the stop goes nowhere.
            bridge.call_soon_in_loop(op.answer, outcome.Value(5))
            assert await bridge.run(asyncio.sleep, 0, "flushed") == "flushed"
            assert bridge._live == set()


async def test_a_callback_operation_cancelled_before_the_loop_took_it_never_starts() -> None:
    op = Operation()
    with trio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            # The loop is busy while the call is queued and cancelled at its first wait.
            bridge.call_soon_in_loop(time.sleep, 0.3)
            with trio.CancelScope() as scope:
                scope.cancel()
                await bridge.run_callback(op.start, 1)
            assert scope.cancelled_caught
            assert await bridge.run(asyncio.sleep, 0, "x") == "x"
    assert op.events == []


async def test_closing_stops_callback_operations_and_fails_their_callers() -> None:
    errors: list[BaseException] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, open_asyncio_bridge() as bridge:
            op = Operation(bridge)

            async def call() -> None:
                try:
                    await bridge.run_callback(op.start, 1)
                except anyio.ClosedResourceError as exc:
                    errors.append(exc)

            nursery.start_soon(call)
            await op.started.wait()
        assert op.events[1:] == ["stopped"]
        assert [str(e) for e in errors] == ["the asyncio bridge closed while the call ran"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_under_asyncio_a_callback_operation_runs_inline() -> None:
    with anyio.fail_after(10):
        async with open_asyncio_bridge() as bridge:
            op = Operation()

            async def answer_soon() -> None:
                await asyncio.sleep(0.01)
                op.answer(outcome.Value(3))

            task = asyncio.get_running_loop().create_task(answer_soon())
            assert await bridge.run_callback(op.start, 2) == 3
            await task
            assert op.events == ["start 2 on MainThread"]
            with anyio.move_on_after(0.05) as scope:
                await bridge.run_callback(op.start, 4)
            assert scope.cancelled_caught
            assert op.events[-1] == "stopped"
