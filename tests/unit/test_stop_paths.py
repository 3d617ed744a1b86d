"""The paths a happy-path suite skips: errors raised while stopping, cancelled callers, a
second stop during cleanup, outer cancellation of resources, the child's narrow context, start
timeouts and starts that never finish.

On trio with the autojump clock (exact times), and the runtime-level tests on asyncio too.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest
import trio
import trio.testing

import megatrio
from megatrio import (
    NO_BACKOFF,
    ChildSpec,
    Restart,
    RestartIntensityExceeded,
    StartupFailed,
    Strategy,
    Supervisor,
    SupervisorNotRunning,
    mega_runtime,
)

from ..helpers import Boom, settle, task_names

pytestmark = pytest.mark.anyio

BOTH = pytest.mark.parametrize(
    "anyio_backend",
    [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), "asyncio"],
    indirect=True,
)


def supervisor_records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "megatrio.supervisor" and text in r.message]


def fatal_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelname == "CRITICAL"]


# -- children that misbehave while being stopped ------------------------------------------------


async def raises_bare_when_cancelled(*, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Ignores its stop signal; when the deadline cancels it, raises instead of Cancelled."""
    task_status.started()
    try:
        await anyio.sleep_forever()
    except anyio.get_cancelled_exc_class():
        raise Boom("cleanup failed") from None


async def raises_grouped_with_cancelled(*, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Owns a task group in which one task raises while being cancelled: the group carries
    the scope's Cancelled and the error together."""
    task_status.started()
    async with anyio.create_task_group() as tg:

        async def bad() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                raise Boom("cleanup failed")

        tg.start_soon(bad)
        await anyio.sleep_forever()


async def raises_two_when_cancelled(*, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Two tasks raise while being cancelled: several errors, reported as one group."""
    task_status.started()
    async with anyio.create_task_group() as tg:

        async def bad(label: str) -> None:
            try:
                await anyio.sleep_forever()
            finally:
                raise Boom(f"cleanup {label} failed")

        tg.start_soon(bad, "a")
        tg.start_soon(bad, "b")
        await anyio.sleep_forever()


async def raises_on_stop_signal(*, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Hears its stop signal and raises from it (no Cancelled involved)."""
    ctx = megatrio.current_child()
    assert ctx is not None
    task_status.started()
    await ctx.wait_stopping()
    raise Boom("refused to stop")


MISBEHAVING = pytest.mark.parametrize(
    ("target", "expected_error"),
    [
        (raises_bare_when_cancelled, "Boom: cleanup failed"),
        (raises_grouped_with_cancelled, "Boom: cleanup failed"),
        (raises_on_stop_signal, "Boom: refused to stop"),
    ],
    ids=["bare", "grouped-with-cancelled", "on-stop-signal"],
)


@BOTH
@MISBEHAVING
async def test_an_error_raised_while_stopping_is_that_childs_shutdown_error(
    target: Any, expected_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    sup = Supervisor([ChildSpec("bad", target, shutdown_seconds=1.0)], name="sup")
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        sup.stop()
    # run() returned normally: nothing escaped the tree.
    snapshot = sup.snapshot()
    assert snapshot["state"] == "stopped"
    [entry] = snapshot["children"]
    assert (entry["state"], entry["last_error"], entry["restarts"]) == (
        "exited",
        expected_error,
        0,
    )
    [record] = supervisor_records(caplog, "raised while stopping")
    assert record.message == f"child sup/bad raised while stopping: {expected_error}"
    assert record.exc_info is not None
    assert type(record.exc_info[1]) is Boom  # unwrapped from its group
    assert record.exc_text is not None
    assert "Boom" in record.exc_text


async def test_several_errors_raised_while_stopping_are_reported_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = Supervisor([ChildSpec("bad", raises_two_when_cancelled, shutdown_seconds=1.0)])
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        sup.stop()
    [entry] = sup.snapshot()["children"]
    assert entry["last_error"].startswith("ExceptionGroup:")
    [record] = supervisor_records(caplog, "raised while stopping")
    assert record.exc_info is not None
    group = record.exc_info[1]
    assert isinstance(group, ExceptionGroup)
    assert sorted(str(e) for e in group.exceptions) == ["cleanup a failed", "cleanup b failed"]


@BOTH
@MISBEHAVING
async def test_a_graceful_runtime_stop_survives_a_child_raising_while_stopping(
    target: Any, expected_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    journal: list[str] = []

    async def polite(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = megatrio.current_child()
        assert ctx is not None
        task_status.started()
        await ctx.wait_stopping()
        journal.append("polite stopped gracefully")

    async with mega_runtime(grace_seconds=10) as rt:
        await rt.start_child(ChildSpec("polite", polite))
        await rt.start_child(ChildSpec("bad", target, shutdown_seconds=1.0))
        rt.stop()
    # No fatal error: the stop went on, and the child started before got its own grace.
    assert fatal_records(caplog) == []
    assert journal == ["polite stopped gracefully"]
    assert len(supervisor_records(caplog, "raised while stopping")) == 1


async def test_an_error_raised_while_cancelled_from_outside_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup = Supervisor([ChildSpec("bad", raises_grouped_with_cancelled)], name="outer")
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            scope.cancel()
    assert scope.cancelled_caught
    [record] = supervisor_records(caplog, "raised while being cancelled")
    assert record.message == "child outer/bad raised while being cancelled: Boom: cleanup failed"
    assert record.exc_info is not None
    assert type(record.exc_info[1]) is Boom  # split from the Cancelled, unwrapped
    assert task_names("outer/") == []
    snapshot = sup.snapshot()
    assert snapshot["state"] == "stopped"
    assert [c["state"] for c in snapshot["children"]] == ["exited"]


async def test_a_child_returning_while_its_tree_is_cancelled_is_not_restarted() -> None:
    starts = 0
    go = trio.Event()

    async def cancels_the_tree(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal starts
        starts += 1
        task_status.started()
        await go.wait()
        # Returns in the same step as the cancellation: before the supervisor's own task has
        # heard of it, as a child that swallows Cancelled would.
        outer.cancel()

    sup = Supervisor([ChildSpec("c", cancels_the_tree)], backoff=NO_BACKOFF)
    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            go.set()
    assert starts == 1
    assert sup.snapshot()["children"][0]["restarts"] == 0


async def test_a_sibling_raising_while_a_group_restart_stops_it_does_not_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    crashes = 0

    async def crasher(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal crashes
        task_status.started()
        if crashes == 0:
            crashes += 1
            await anyio.sleep(1)
            raise Boom("first crash")
        await anyio.sleep_forever()

    sup = Supervisor(
        [
            ChildSpec("crasher", crasher),
            ChildSpec("bad", raises_grouped_with_cancelled, shutdown_seconds=1.0),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        max_restarts=1,
        backoff=NO_BACKOFF,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await anyio.sleep(5)
        snapshot = sup.snapshot()
        assert [(c["state"], c["restarts"]) for c in snapshot["children"]] == [
            ("running", 1),
            ("running", 1),
        ]
        assert snapshot["restarts"] == 2  # one group restart: two children started again
        sup.stop()
    assert len(supervisor_records(caplog, "raised while stopping")) == 2  # restart, then stop


async def test_a_nested_child_raising_while_stopping_never_reaches_the_parent() -> None:
    inner = Supervisor(
        [ChildSpec("bad", raises_grouped_with_cancelled, shutdown_seconds=1.0)], name="inner"
    )
    outer = Supervisor([inner.child_spec()], name="outer")
    async with anyio.create_task_group() as tg:
        await tg.start(outer.run)
        outer.stop()
    [entry] = outer.snapshot()["children"]
    assert (entry["state"], entry["last_error"]) == ("exited", None)


# -- a cancelled start_child caller -------------------------------------------------------------


async def test_a_start_whose_caller_is_cancelled_completes_and_is_supervised() -> None:
    gate, crash = trio.Event(), trio.Event()
    runs = 0

    async def slow(*, task_status: anyio.abc.TaskStatus[str]) -> None:
        nonlocal runs
        runs += 1
        await gate.wait()
        task_status.started("ready")
        if runs == 1:
            await crash.wait()
            raise Boom("crash after the first start")
        await trio.sleep_forever()

    sup = Supervisor([], backoff=NO_BACKOFF)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with trio.move_on_after(1) as waited:
            await sup.start_child(ChildSpec("slow", slow))
        assert waited.cancelled_caught
        assert [c["state"] for c in sup.snapshot()["children"]] == ["starting"]
        gate.set()
        await settle()
        # It reported ready after its caller left: it is running, and supervised normally.
        assert [(c["state"], c["restarts"]) for c in sup.snapshot()["children"]] == [("running", 0)]
        crash.set()
        await settle()
        assert [(c["state"], c["restarts"]) for c in sup.snapshot()["children"]] == [("running", 1)]
        with pytest.raises(ValueError, match="duplicate child name 'slow'"):
            await sup.start_child(ChildSpec("slow", slow))
        sup.stop()


async def test_a_start_whose_caller_left_and_that_fails_is_removed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = trio.Event()

    async def fails(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        await gate.wait()
        raise Boom("cannot connect")

    sup = Supervisor([])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with trio.move_on_after(1):
            await sup.start_child(ChildSpec("fails", fails))
        gate.set()
        await settle()
        assert sup.snapshot()["children"] == []  # never stuck in "starting"
        assert len(supervisor_records(caplog, "failed to start")) == 1

        # The name is free again.
        async def ok(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            await trio.sleep_forever()

        await sup.start_child(ChildSpec("fails", ok))
        sup.stop()


# -- start timeouts, and no start blocks crash handling ---------------------------------------


async def never_ready(*, task_status: anyio.abc.TaskStatus[None]) -> None:
    await trio.sleep_forever()


async def test_a_start_that_exceeds_its_timeout_fails_and_is_cancelled() -> None:
    sup = Supervisor([])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        began = trio.current_time()
        with pytest.raises(StartupFailed, match="did not report ready within 2 s"):
            await sup.start_child(ChildSpec("slow", never_ready, start_timeout_seconds=2))
        assert trio.current_time() - began == 2
        assert task_names("supervisor/") == []
        assert sup.snapshot()["children"] == []
        sup.stop()


async def test_an_initial_child_that_exceeds_its_timeout_fails_the_supervisor() -> None:
    sup = Supervisor([ChildSpec("slow", never_ready, start_timeout_seconds=3)])
    with pytest.raises(StartupFailed, match="'slow' failed to start: did not report ready"):
        await sup.run()
    assert trio.current_time() == 3


async def test_a_restart_that_exceeds_its_timeout_counts_as_a_crash() -> None:
    runs = 0

    async def ready_once(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            task_status.started()
            raise Boom("first crash")
        await trio.sleep_forever()  # every restart hangs before ready

    sup = Supervisor(
        [ChildSpec("c", ready_once, start_timeout_seconds=1)],
        max_restarts=2,
        period_seconds=100,
        backoff=NO_BACKOFF,
    )
    with pytest.raises(RestartIntensityExceeded):
        await sup.run()
    # crash, then two restarts that time out (each a crash): the third crash gives up.
    assert runs == 3
    assert trio.current_time() == 2


async def test_crash_handling_goes_on_while_a_start_hangs() -> None:
    runs = 0

    async def crashes_once(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs == 1:
            await trio.sleep(1)
            raise Boom("crash while another child starts")
        await trio.sleep_forever()

    sup = Supervisor([ChildSpec("a", crashes_once)], backoff=NO_BACKOFF, max_restarts=0)
    outcome: list[BaseException] = []

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await sup.run(task_status=task_status)
        except RestartIntensityExceeded as exc:
            outcome.append(exc)

    async def hears_but_hangs(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = megatrio.current_child()
        assert ctx is not None
        assert not ctx.stopping
        await trio.sleep_forever()

    async def add() -> None:
        with pytest.raises(SupervisorNotRunning):
            await sup.start_child(ChildSpec("hangs", hears_but_hangs, shutdown_seconds=3))

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        nursery.start_soon(add)
        await trio.sleep(1.5)
        # The crash at t=1 was handled while "hangs" was still starting: with max_restarts=0
        # the supervisor gave up at once, and is stopping "hangs" within its 3 s grace.
        assert sup.snapshot()["state"] == "stopping"
    assert len(outcome) == 1
    assert trio.current_time() == 4


async def test_a_restart_waits_for_the_start_in_flight_then_runs() -> None:
    runs = 0
    gate = trio.Event()

    async def crashes_once(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs == 1:
            await trio.sleep(1)
            raise Boom("crash")
        await trio.sleep_forever()

    async def gated(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        await gate.wait()
        task_status.started()
        await trio.sleep_forever()

    sup = Supervisor([ChildSpec("a", crashes_once)], backoff=NO_BACKOFF)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        nursery.start_soon(sup.start_child, ChildSpec("gated", gated))
        await trio.sleep(2)
        # Starts are one at a time, in order: "a" restarts once "gated" is ready.
        assert [(c["name"], c["state"]) for c in sup.snapshot()["children"]] == [
            ("a", "restarting"),
            ("gated", "starting"),
        ]
        gate.set()
        await settle()
        assert [(c["state"], c["restarts"]) for c in sup.snapshot()["children"]] == [
            ("running", 1),
            ("running", 0),
        ]
        sup.stop()


async def test_stop_while_a_start_hangs_tells_the_caller() -> None:
    sup = Supervisor([])
    errors: list[BaseException] = []

    async def add() -> None:
        try:
            await sup.start_child(ChildSpec("hangs", never_ready, shutdown_seconds=0))
        except SupervisorNotRunning as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        nursery.start_soon(add)
        await settle()
        sup.stop()
    [error] = errors
    assert "stopping" in str(error)
    assert sup.snapshot()["children"] == []


# -- the child's narrow context -----------------------------------------------------------------

CHILD_SIDE = {
    "annotate",
    "info",
    "mark_up",
    "name",
    "path",
    "show_subtree",  # what it shows under itself (a cluster primary's worker: its tree)
    "started",
    "stopping",
    "uptime_seconds",
    "wait_stopping",
}


async def test_a_child_sees_only_what_a_child_may_do() -> None:
    seen: list[set[str]] = []

    async def look(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = megatrio.current_child()
        assert ctx is task_status
        seen.append({n for n in dir(ctx) if not n.startswith("_")})
        task_status.started()
        await ctx.wait_stopping()

    sup = Supervisor([ChildSpec("c", look)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        sup.stop()
    assert seen == [CHILD_SIDE]


# -- the runtime: a second stop, resources under outer cancellation ----------------------------


@contextlib.asynccontextmanager
async def slow_resource(journal: list[str], close_seconds: float) -> AsyncIterator[None]:
    journal.append("open")
    exc_type: object = None
    try:
        yield
    except BaseException as exc:
        exc_type = type(exc).__name__
        raise
    finally:
        try:
            await anyio.sleep(close_seconds)
            journal.append(f"closed (saw {exc_type})")
        except anyio.get_cancelled_exc_class():
            journal.append(f"close cancelled (saw {exc_type})")
            raise


async def test_cancel_interrupts_a_resource_being_closed() -> None:
    journal: list[str] = []
    began = 0.0
    async with anyio.create_task_group() as tg, mega_runtime(grace_seconds=30) as rt:
        await rt.enter_async_context(slow_resource(journal, close_seconds=25))

        async def second_signal() -> None:
            await anyio.sleep(1)
            rt.cancel()

        tg.start_soon(second_signal)
        began = trio.current_time()
        rt.stop()
    assert journal == ["open", "close cancelled (saw None)"]
    assert trio.current_time() - began == 1  # not 25


@BOTH
async def test_cancel_interrupts_an_async_callback_at_once() -> None:
    journal: list[str] = []

    async def on_stop() -> None:
        rt.cancel()  # the second signal arrives while on_stop runs
        try:
            await anyio.sleep(25)
            journal.append("on_stop finished")
        except anyio.get_cancelled_exc_class():
            journal.append("on_stop cancelled")
            raise

    async with mega_runtime(grace_seconds=30) as rt:
        rt.push_async_callback(on_stop)
    assert journal == ["on_stop cancelled"]


@BOTH
async def test_resources_close_cleanly_when_the_runtime_is_cancelled_from_outside() -> None:
    journal: list[str] = []
    with anyio.CancelScope() as outer:
        async with mega_runtime(grace_seconds=30) as rt:
            await rt.enter_async_context(slow_resource(journal, close_seconds=0))
            await rt.start_child(megatrio.every(1.0, anyio.lowlevel.checkpoint, name="tick"))
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    # Its __aexit__ saw no exception and its own awaits were not cancelled.
    assert journal == ["open", "closed (saw None)"]


async def test_resources_closing_under_outer_cancellation_are_bounded_by_the_grace() -> None:
    journal: list[str] = []
    with trio.CancelScope() as outer:
        async with mega_runtime(grace_seconds=3) as rt:
            await rt.enter_async_context(slow_resource(journal, close_seconds=math.inf))
            began = trio.current_time()
            outer.cancel()
            await trio.sleep_forever()
    assert journal == ["open", "close cancelled (saw None)"]
    assert trio.current_time() - began == 3


async def test_outer_cancellation_while_entering_a_resource_cancels_its_enter() -> None:
    entered = trio.Event()

    @contextlib.asynccontextmanager
    async def slow_enter() -> AsyncIterator[None]:
        entered.set()
        await trio.sleep_forever()
        yield

    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:

            async def body() -> None:
                async with mega_runtime(grace_seconds=3) as rt:
                    await rt.enter_async_context(slow_enter())

            nursery.start_soon(body)
            await entered.wait()
            outer.cancel()
    assert outer.cancelled_caught
    assert trio.current_time() == 0


@pytest.mark.parametrize("shutdown_seconds", [25.0, math.inf])
async def test_cancel_interrupts_children_still_stopping(shutdown_seconds: float) -> None:
    async def slow_stop(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = megatrio.current_child()
        assert ctx is not None
        task_status.started()
        await ctx.wait_stopping()
        await trio.sleep(25)  # a long cleanup

    async with trio.open_nursery() as nursery, mega_runtime(grace_seconds=60) as rt:
        await rt.start_child(ChildSpec("slow", slow_stop, shutdown_seconds=shutdown_seconds))

        async def second_signal() -> None:
            await trio.sleep(2)
            rt.cancel()

        nursery.start_soon(second_signal)
        rt.stop()
    assert trio.current_time() == 2


async def test_restart_types_keep_their_meaning_for_timeouts() -> None:
    # A temporary child that times out on its first start is simply not added.
    sup = Supervisor([])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(StartupFailed):
            await sup.start_child(
                ChildSpec("t", never_ready, restart=Restart.TEMPORARY, start_timeout_seconds=1)
            )
        assert sup.snapshot()["children"] == []
        sup.stop()


async def test_a_child_waiting_for_its_first_start_waits_out_a_group_restart() -> None:
    crashes = {"a": trio.Event(), "b": trio.Event()}

    def crasher(name: str) -> ChildSpec:
        async def target(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            if not crashes[name].is_set():
                await crashes[name].wait()
                raise Boom(f"{name} crashed")
            await trio.sleep_forever()

        return ChildSpec(name, target)

    async def slow(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = megatrio.current_child()
        assert ctx is not None
        assert not ctx.stopping  # hears its stop, ignores it: stopped at its 2 s deadline
        task_status.started()
        await trio.sleep_forever()

    async def d(*, task_status: anyio.abc.TaskStatus[str]) -> None:
        task_status.started("d ready")
        await trio.sleep_forever()

    sup = Supervisor(
        [crasher("a"), crasher("b"), ChildSpec("c", slow, shutdown_seconds=2)],
        strategy=Strategy.REST_FOR_ONE,
        backoff=NO_BACKOFF,
    )
    values: list[object] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        crashes["b"].set()
        await settle()  # b's restart is stopping "c" (2 s)

        async def add() -> None:
            values.append(await sup.start_child(ChildSpec("d", d, restart=Restart.TEMPORARY)))

        nursery.start_soon(add)
        await settle()
        crashes["a"].set()  # a's restart (a, b, c and the waiting d) queues behind b's
        await settle()
        assert [(c["name"], c["state"]) for c in sup.snapshot()["children"]] == [
            ("a", "restarting"),
            ("b", "restarting"),
            ("c", "stopping"),
            ("d", "starting"),
        ]
        await trio.sleep(3)
        # Never launched, so never stopped by a restart: it started after its group.
        assert values == ["d ready"]
        assert [(c["name"], c["state"]) for c in sup.snapshot()["children"]] == [
            ("a", "running"),
            ("b", "running"),
            ("c", "running"),
            ("d", "running"),
        ]
        sup.stop()
