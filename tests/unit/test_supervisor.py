"""OTP semantics of Supervisor: ordering, strategies, restart types, intensity, escalation.

Runs on trio with an autojump clock (see conftest), so every time in here is exact.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import anyio
import anyio.abc
import pytest
import trio

import megatrio
from megatrio import (
    NO_BACKOFF,
    Backoff,
    ChildSpec,
    Restart,
    RestartIntensityExceeded,
    StartupFailed,
    Strategy,
    Supervisor,
    SupervisorNotRunning,
    ready_immediately,
)

from ..helpers import Boom, Puppet, settle, task_names

pytestmark = pytest.mark.anyio


class Running:
    """A supervisor started in a task group; run()'s outcome is kept instead of raised."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.error: BaseException | None = None
        self.done = False
        self.finished_at: float | None = None

    async def __call__(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await self.sup.run(task_status=task_status)
        except Exception as exc:
            self.error = exc
        finally:
            self.done = True
            self.finished_at = trio.current_time()


async def start(tg: anyio.abc.TaskGroup, sup: Supervisor) -> Running:
    running = Running(sup)
    await tg.start(running)
    return running


def puppets(journal: list[str], *names: str) -> dict[str, Puppet]:
    return {name: Puppet(name, journal) for name in names}


def states(sup: Supervisor) -> dict[str, str]:
    return {c["name"]: c["state"] for c in sup.snapshot()["children"]}


def restarts(sup: Supervisor) -> dict[str, int]:
    return {c["name"]: c["restarts"] for c in sup.snapshot()["children"]}


# -- start order and readiness -----------------------------------------------------------------


async def test_children_start_in_order_each_after_the_previous_is_ready() -> None:
    events: list[tuple[str, float]] = []

    def slow_ready(name: str, delay: float) -> ChildSpec:
        async def target(*, task_status: anyio.abc.TaskStatus[str]) -> None:
            events.append((f"begin {name}", trio.current_time()))
            await trio.sleep(delay)
            events.append((f"ready {name}", trio.current_time()))
            task_status.started(name)
            await trio.sleep_forever()

        return ChildSpec(name, target)

    sup = Supervisor([slow_ready("a", 1), slow_ready("b", 2), slow_ready("c", 0)], name="s")
    t0 = trio.current_time()
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        started_at = trio.current_time() - t0
        sup.stop()
    assert [e for e, _ in events] == [
        "begin a",
        "ready a",
        "begin b",
        "ready b",
        "begin c",
        "ready c",
    ]
    assert started_at == pytest.approx(3.0)
    assert events[2][1] - t0 == pytest.approx(1.0)


async def test_start_child_returns_the_started_value_and_appends_in_order() -> None:
    journal: list[str] = []
    p = puppets(journal, "a", "b")
    sup = Supervisor([p["a"].spec()], name="s")
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        assert await sup.start_child(p["b"].spec()) == "b"
        assert [c["name"] for c in sup.snapshot()["children"]] == ["a", "b"]
        with pytest.raises(ValueError, match="duplicate child name 'b'"):
            await sup.start_child(p["b"].spec())
        sup.stop()
    assert journal == ["start a", "start b", "stop b", "stop a"]


async def test_initial_start_failure_stops_started_children_and_raises_startup_failed() -> None:
    journal: list[str] = []
    a, c = Puppet("a", journal), Puppet("c", journal)
    b = Puppet("b", journal, fail_start=1)
    sup = Supervisor([a.spec(), b.spec(), c.spec()], name="s")
    with pytest.raises(
        StartupFailed, match=r"'b' failed to start: Boom: b failed to start"
    ) as info:
        await sup.run()
    assert info.value.child == "b"
    assert isinstance(info.value.__cause__, Boom)
    assert journal == ["start a", "fail-start b", "stop a"]
    assert c.starts == 0
    assert a.alive == 0


async def test_returning_before_started_is_a_startup_failure() -> None:
    async def lazy(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        return None

    with pytest.raises(StartupFailed, match=r"returned before calling task_status\.started"):
        await Supervisor([ChildSpec("lazy", lazy)]).run()


async def test_start_child_failure_is_raised_and_the_child_is_not_added() -> None:
    journal: list[str] = []
    sup = Supervisor(name="s")
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        with pytest.raises(StartupFailed) as info:
            await sup.start_child(Puppet("x", journal, fail_start=1).spec())
        assert isinstance(info.value.__cause__, Boom)
        assert sup.snapshot()["children"] == []
        sup.stop()


async def test_ready_immediately_adapts_plain_coroutines() -> None:
    ran = trio.Event()

    async def plain(x: int) -> None:
        assert x == 7
        ran.set()
        await trio.sleep_forever()

    sup = Supervisor([ChildSpec("plain", megatrio.ready_immediately(plain), (7,))])
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await ran.wait()
        sup.stop()


# -- stopping ----------------------------------------------------------------------------------


async def test_stop_is_reverse_order_and_one_child_at_a_time() -> None:
    log: list[tuple[str, float]] = []

    def slow_stop(name: str, cleanup: float) -> ChildSpec:
        async def target(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            ctx = megatrio.current_child()
            assert ctx is not None
            task_status.started()
            await ctx.wait_stopping()
            log.append((f"stopping {name}", trio.current_time()))
            await trio.sleep(cleanup)
            log.append((f"exited {name}", trio.current_time()))

        return ChildSpec(name, target, shutdown_seconds=10)

    sup = Supervisor([slow_stop("a", 1), slow_stop("b", 2), slow_stop("c", 3)], name="s")
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        t0 = trio.current_time()
        sup.stop()
    assert [(e, round(t - t0, 6)) for e, t in log] == [
        ("stopping c", 0),
        ("exited c", 3),
        ("stopping b", 3),
        ("exited b", 5),
        ("stopping a", 5),
        ("exited a", 6),
    ]


async def test_a_child_that_ignores_stop_is_cancelled_exactly_at_its_grace() -> None:
    cancelled_at: list[float] = []

    async def stubborn(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = megatrio.current_child()
        assert ctx is not None
        assert not ctx.stopping  # it can hear its stop signal, and ignores it
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            cancelled_at.append(trio.current_time())

    sup = Supervisor([ChildSpec("stubborn", stubborn, shutdown_seconds=2.5)])
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        t0 = trio.current_time()
        sup.stop()
    assert cancelled_at == [pytest.approx(t0 + 2.5)]


async def test_a_child_that_never_looks_at_its_stop_signal_is_cancelled_at_once() -> None:
    cancelled_at: list[float] = []

    async def deaf(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            cancelled_at.append(trio.current_time())

    sup = Supervisor(
        [
            ChildSpec("polite", ready_immediately(trio.sleep_forever), shutdown_seconds=5),
            ChildSpec("deaf", deaf, shutdown_seconds=5),
        ]
    )
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        t0 = trio.current_time()
        sup.stop()
    # Neither can hear a stop signal: waiting 5 s each would only delay the other.
    assert cancelled_at == [t0]
    assert trio.current_time() == t0


async def test_zero_grace_cancels_at_once_and_infinite_grace_waits() -> None:
    finished: dict[str, float] = {}

    def child(name: str, work: float, grace: float) -> ChildSpec:
        async def target(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            try:
                await trio.sleep(1000)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(work)
                finished[name] = trio.current_time()

        return ChildSpec(name, target, shutdown_seconds=grace)

    sup = Supervisor([child("inf", 0, math.inf), child("zero", 0, 0)])
    async with anyio.create_task_group() as tg:
        t0 = trio.current_time()
        await tg.start(sup.run)
        sup.stop()
    assert finished["zero"] == pytest.approx(t0)
    # The infinitely patient child is never cancelled: it ends when its own sleep(1000) does.
    assert finished["inf"] == pytest.approx(t0 + 1000)


async def test_stop_child_is_never_a_crash_and_removes_the_child() -> None:
    journal: list[str] = []
    p = puppets(journal, "a", "b")
    sup = Supervisor([p["a"].spec(), p["b"].spec()], max_restarts=0, name="s")
    async with anyio.create_task_group() as tg:
        running = await start(tg, sup)
        await sup.stop_child("a")
        assert [c["name"] for c in sup.snapshot()["children"]] == ["b"]
        with pytest.raises(LookupError, match="has no child 'a'"):
            await sup.stop_child("a")
        await settle()
        assert not running.done
        sup.stop()
    assert running.error is None
    assert journal == ["start a", "start b", "stop a", "stop b"]


async def test_an_error_raised_while_stopping_is_logged_not_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def messy(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            raise Boom("cleanup failed")

    sup = Supervisor([ChildSpec("messy", messy, shutdown_seconds=0)], max_restarts=0)
    async with anyio.create_task_group() as tg:
        running = await start(tg, sup)
        sup.stop()
    assert running.error is None
    assert "raised while stopping: Boom: cleanup failed" in caplog.text


async def test_stop_while_a_child_is_starting_stops_it_without_startup_failure() -> None:
    entered = trio.Event()

    async def slow_start(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        entered.set()
        ctx = megatrio.current_child()
        assert ctx is not None
        await ctx.wait_stopping()

    sup = Supervisor([ChildSpec("slow", slow_start)])
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        await entered.wait()
        sup.stop()
    assert sup.snapshot()["state"] == "stopped"


# -- strategies --------------------------------------------------------------------------------


async def test_one_for_one_restarts_only_the_crashed_child() -> None:
    journal: list[str] = []
    p = puppets(journal, "a", "b", "c")
    sup = Supervisor([x.spec() for x in p.values()], backoff=NO_BACKOFF, name="s")
    async with anyio.create_task_group() as tg:
        await start(tg, sup)
        journal.clear()
        p["b"].crash()
        await settle()
        assert journal == ["crash b", "start b"]
        assert restarts(sup) == {"a": 0, "b": 1, "c": 0}
        assert states(sup) == {"a": "running", "b": "running", "c": "running"}
        sup.stop()


async def test_one_for_all_stops_others_in_reverse_and_restarts_all_in_order() -> None:
    journal: list[str] = []
    p = puppets(journal, "a", "b", "c")
    sup = Supervisor(
        [x.spec() for x in p.values()],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=NO_BACKOFF,
        name="s",
    )
    async with anyio.create_task_group() as tg:
        await start(tg, sup)
        journal.clear()
        p["b"].crash()
        await settle()
        assert journal == ["crash b", "stop c", "stop a", "start a", "start b", "start c"]
        assert restarts(sup) == {"a": 1, "b": 1, "c": 1}
        assert sup.snapshot()["restarts"] == 3
        sup.stop()


async def test_rest_for_one_restarts_the_crashed_child_and_those_after_it() -> None:
    journal: list[str] = []
    p = puppets(journal, "a", "b", "c", "d")
    sup = Supervisor(
        [x.spec() for x in p.values()],
        strategy=Strategy.REST_FOR_ONE,
        backoff=NO_BACKOFF,
        name="s",
    )
    async with anyio.create_task_group() as tg:
        await start(tg, sup)
        journal.clear()
        p["b"].crash()
        await settle()
        assert journal == ["crash b", "stop d", "stop c", "start b", "start c", "start d"]
        assert restarts(sup) == {"a": 0, "b": 1, "c": 1, "d": 1}
        sup.stop()


async def test_group_restart_removes_temporary_siblings_and_counts_once() -> None:
    journal: list[str] = []
    p = puppets(journal, "a", "tmp", "c")
    sup = Supervisor(
        [p["a"].spec(), p["tmp"].spec(restart=Restart.TEMPORARY), p["c"].spec()],
        strategy=Strategy.ONE_FOR_ALL,
        max_restarts=1,
        backoff=NO_BACKOFF,
        name="s",
    )
    async with anyio.create_task_group() as tg:
        running = await start(tg, sup)
        journal.clear()
        p["c"].crash()
        await settle()
        assert journal == ["crash c", "stop tmp", "stop a", "start a", "start c"]
        assert list(states(sup)) == ["a", "c"]
        # The group restart counted once: max_restarts=1 is used up only now.
        p["a"].crash()
        await settle()
        assert isinstance(running.error, RestartIntensityExceeded)


# -- restart types -----------------------------------------------------------------------------


async def test_restart_types_on_normal_and_abnormal_exits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    p = puppets(journal, "perm", "trans", "temp")
    sup = Supervisor(
        [
            p["perm"].spec(restart=Restart.PERMANENT),
            p["trans"].spec(restart=Restart.TRANSIENT),
            p["temp"].spec(restart=Restart.TEMPORARY),
        ],
        max_restarts=10,
        backoff=NO_BACKOFF,
        name="s",
    )
    async with anyio.create_task_group() as tg:
        await start(tg, sup)
        p["perm"].exit()  # permanent: even a normal exit is restarted
        p["trans"].crash()  # transient: restarted after an abnormal exit
        await settle()
        assert restarts(sup) == {"perm": 1, "trans": 1, "temp": 0}
        p["trans"].exit()  # transient: a normal exit is final
        p["temp"].crash()  # temporary: never restarted, removed; not fatal
        await settle()
        assert states(sup) == {"perm": "running", "trans": "exited"}
        assert restarts(sup) == {"perm": 1, "trans": 1}
        sup.stop()
    assert "child s/temp crashed" in caplog.text


# -- intensity ---------------------------------------------------------------------------------


async def test_gives_up_at_the_crash_that_exceeds_the_intensity() -> None:
    journal: list[str] = []
    p = puppets(journal, "a", "b")
    sup = Supervisor(
        [p["a"].spec(), p["b"].spec()], max_restarts=2, period_seconds=5, backoff=NO_BACKOFF
    )
    async with anyio.create_task_group() as tg:
        running = await start(tg, sup)
        for _ in range(2):
            p["b"].crash()
            await settle()
        assert not running.done
        journal.clear()
        p["b"].crash()
        await settle()
        assert running.done
    assert isinstance(running.error, RestartIntensityExceeded)
    assert isinstance(running.error.__cause__, Boom)
    assert "more than 2 restart(s) within 5 s" in str(running.error)
    assert journal == ["crash b", "stop a"]
    assert sup.snapshot()["state"] == "failed"


async def test_crashes_spread_wider_than_the_period_never_give_up() -> None:
    journal: list[str] = []
    p = puppets(journal, "a")
    sup = Supervisor([p["a"].spec()], max_restarts=2, period_seconds=5, backoff=NO_BACKOFF)
    async with anyio.create_task_group() as tg:
        running = await start(tg, sup)
        for _ in range(10):
            await trio.sleep(2.5)
            p["a"].crash()
            await settle()
        assert not running.done
        assert restarts(sup) == {"a": 10}
        sup.stop()


async def test_min_uptime_counts_only_rapid_crashes() -> None:
    journal: list[str] = []
    p = puppets(journal, "w")
    sup = Supervisor(
        [p["w"].spec()],
        max_restarts=1,
        period_seconds=100,
        min_uptime_seconds=1,
        backoff=NO_BACKOFF,
    )
    async with anyio.create_task_group() as tg:
        running = await start(tg, sup)
        for _ in range(5):  # slow crashes: never counted
            await trio.sleep(1)
            p["w"].crash()
            await settle()
        p["w"].crash()  # rapid crash #1: allowed
        await settle()
        assert not running.done
        p["w"].crash()  # rapid crash #2: exceeds max_restarts=1
        await settle()
    assert isinstance(running.error, RestartIntensityExceeded)


async def test_a_failed_start_during_restart_counts_as_a_crash() -> None:
    journal: list[str] = []
    w = Puppet("w", journal)
    sup = Supervisor([w.spec()], max_restarts=3, backoff=NO_BACKOFF)
    async with anyio.create_task_group() as tg:
        running = await start(tg, sup)
        w.fail_start = 10
        w.crash()
        await settle()
    assert isinstance(running.error, RestartIntensityExceeded)
    # The crash, then 3 failed restarts allowed; the 3rd failure is the 4th counted crash.
    assert journal.count("fail-start w") == 3
    assert isinstance(running.error.__cause__, Boom)


async def test_default_settings_give_up_on_a_child_crashing_right_after_each_start() -> None:
    starts: list[float] = []

    async def crashy(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        starts.append(trio.current_time())
        await trio.sleep(0.1)
        raise Boom("again")

    sup = Supervisor([ChildSpec("crashy", crashy)])
    t0 = trio.current_time()
    with pytest.raises(RestartIntensityExceeded) as info:
        await sup.run()
    assert len(starts) == 4
    assert trio.current_time() - t0 < 5.0
    assert isinstance(info.value.__cause__, Boom)


async def test_backoff_waits_exponentially_and_resets_after_a_stable_run() -> None:
    starts: list[float] = []
    uptimes = iter([0.0, 0.0, 0.0, 10.0, 0.0])

    async def crashy(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        starts.append(trio.current_time())
        try:
            await trio.sleep(next(uptimes))
        except StopIteration:
            await trio.sleep_forever()
        raise Boom("again")

    sup = Supervisor(
        [ChildSpec("crashy", crashy)],
        max_restarts=100,
        backoff=Backoff(initial_seconds=1, multiplier=2, max_seconds=3, jitter=0, stable_seconds=5),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await trio.sleep(100)
        sup.stop()
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    # Restart delays 0, 1, 2, then the 10 s run was stable: 0 again, then 1.
    assert gaps == [0, 1, 2, 10, 1]


async def test_stop_during_backoff_returns_without_restarting() -> None:
    journal: list[str] = []
    w = Puppet("w", journal)
    sup = Supervisor(
        [w.spec()],
        backoff=Backoff(initial_seconds=30, jitter=0),
        max_restarts=10,
    )
    async with anyio.create_task_group() as tg:
        running = await start(tg, sup)
        w.crash()
        await settle()
        w.crash()  # second rapid crash: restart is 30 s away
        await settle()
        assert states(sup) == {"w": "restarting"}
        t0 = trio.current_time()
        sup.stop()
    assert running.finished_at == pytest.approx(t0)
    assert journal.count("start w") == 2


# -- escalation, outside cancellation, snapshots -------------------------------------------------


async def test_nested_supervisor_escalates_to_its_parent() -> None:
    journal: list[str] = []
    leaf = Puppet("leaf", journal)
    inner = Supervisor([leaf.spec()], max_restarts=1, backoff=NO_BACKOFF, name="inner")
    sibling = Puppet("sibling", journal)
    outer = Supervisor(
        [sibling.spec(), inner.child_spec()], max_restarts=0, backoff=NO_BACKOFF, name="outer"
    )
    async with anyio.create_task_group() as tg:
        running = await start(tg, outer)
        snap = outer.snapshot()
        assert snap["children"][1]["supervisor"]["children"][0]["name"] == "leaf"
        assert snap["children"][1]["supervisor"]["path"] == "outer/inner"
        leaf.crash()
        await settle()
        assert not running.done  # the inner supervisor absorbed one restart
        leaf.crash()
        await settle()
    # inner gave up -> a crash of child "inner" -> outer (max_restarts=0) gives up too.
    assert isinstance(running.error, RestartIntensityExceeded)
    assert running.error.supervisor == "outer"
    cause = running.error.__cause__
    assert isinstance(cause, RestartIntensityExceeded)
    assert cause.supervisor == "inner"
    assert isinstance(cause.__cause__, Boom)
    assert journal == [
        "start sibling",
        "start leaf",
        "crash leaf",
        "start leaf",
        "crash leaf",
        "stop sibling",
    ]


async def test_parent_restarts_a_nested_supervisor_from_its_initial_children() -> None:
    journal: list[str] = []
    leaf = Puppet("leaf", journal)
    extra = Puppet("extra", journal)
    inner = Supervisor([leaf.spec()], max_restarts=0, backoff=NO_BACKOFF, name="inner")
    outer = Supervisor([inner.child_spec()], max_restarts=5, backoff=NO_BACKOFF, name="outer")
    async with anyio.create_task_group() as tg:
        await start(tg, outer)
        await inner.start_child(extra.spec())
        leaf.crash()
        await settle()
        children = outer.snapshot()["children"][0]["supervisor"]["children"]
        assert [c["name"] for c in children] == ["leaf"]
        assert outer.snapshot()["children"][0]["restarts"] == 1
        outer.stop()
    assert journal == [
        "start leaf",
        "start extra",
        "crash leaf",
        "stop extra",
        "start leaf",
        "stop leaf",
    ]


async def test_parent_stop_reaches_nested_children_in_reverse_order() -> None:
    journal: list[str] = []
    p = puppets(journal, "x", "y", "z")
    inner = Supervisor([p["y"].spec(), p["z"].spec()], name="inner")
    outer = Supervisor([p["x"].spec(), inner.child_spec()], name="outer")
    async with anyio.create_task_group() as tg:
        await tg.start(outer.run)
        outer.stop()
    assert journal == ["start x", "start y", "start z", "stop z", "stop y", "stop x"]


async def test_outside_cancellation_is_not_a_crash_and_leaves_no_task() -> None:
    journal: list[str] = []
    p = puppets(journal, "a", "b")
    sup = Supervisor([p["a"].spec(), p["b"].spec()], max_restarts=0, name="cx")
    with trio.move_on_after(10) as scope:
        await sup.run()
    assert scope.cancelled_caught
    assert sorted(journal[2:]) == ["cancelled a", "cancelled b"]
    assert restarts(sup) == {"a": 0, "b": 0}
    assert task_names("cx/") == []
    assert p["a"].alive == p["b"].alive == 0


async def test_start_child_and_stop_child_need_a_running_supervisor() -> None:
    sup = Supervisor(name="idle")
    with pytest.raises(SupervisorNotRunning, match="supervisor 'idle' is not running"):
        await sup.start_child(ChildSpec("x", megatrio.ready_immediately(trio.sleep_forever)))
    with pytest.raises(SupervisorNotRunning):
        await sup.stop_child("x")


async def test_run_twice_at_once_is_refused() -> None:
    sup = Supervisor(name="once")
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        with pytest.raises(RuntimeError, match="already running"):
            await sup.run()
        sup.stop()


async def test_crash_reports_are_logged_with_the_supervision_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    w = Puppet("w", journal)
    sup = Supervisor([w.spec()], backoff=NO_BACKOFF, name="root")
    with caplog.at_level(logging.ERROR, logger="megatrio.supervisor"):
        async with anyio.create_task_group() as tg:
            await start(tg, sup)
            w.crash()
            await settle()
            sup.stop()
    [record] = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert "root/w crashed after 0.000 s: Boom: w crashed" in record.getMessage()
    assert record.exc_info is not None


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "child name must be a non-empty string"),
        ({"name": "a/b"}, "without '/'"),
        ({"target": 3}, "child target must be an async callable"),
        ({"shutdown_seconds": -1}, "shutdown_seconds must be >= 0"),
        ({"shutdown_seconds": math.nan}, "shutdown_seconds must not be NaN"),
        ({"restart": "permanent"}, "'restart' must be <enum 'Restart'>"),
    ],
)
def test_child_spec_validation(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"name": "ok", "target": trio.sleep_forever} | kwargs
    with pytest.raises((ValueError, TypeError), match=message):
        ChildSpec(**args)


def test_supervisor_validation() -> None:
    spec = ChildSpec("a", trio.sleep_forever)
    with pytest.raises(ValueError, match="duplicate child name 'a' in supervisor 'dup'"):
        Supervisor([spec, spec], name="dup")
    with pytest.raises(ValueError, match="period_seconds must be > 0"):
        Supervisor(period_seconds=0)
    with pytest.raises(ValueError, match="max_restarts must be >= 0"):
        Supervisor(max_restarts=-1)
    with pytest.raises(TypeError, match=r"strategy must be a megatrio\.Strategy"):
        Supervisor(strategy="one_for_one")  # type: ignore[arg-type]


async def test_a_failed_group_restart_starts_each_sibling_once() -> None:
    journal: list[str] = []
    c0, c1 = Puppet("c0", journal), Puppet("c1", journal)
    sup = Supervisor(
        [c0.spec(shutdown_seconds=0), c1.spec(shutdown_seconds=0)],
        strategy=Strategy.ONE_FOR_ALL,
        max_restarts=2,
        backoff=NO_BACKOFF,
        name="grp",
    )
    async with anyio.create_task_group() as tg:
        running = await start(tg, sup)
        c0.fail_start = 1
        c0.crash()
        await settle()
        # c0 crashes, c1 is stopped (grace 0), c0's restart fails (another crash), then the
        # group restarts again: each sibling starts exactly once.
        assert journal[2:] == ["crash c0", "cancelled c1", "fail-start c0", "start c0", "start c1"]
        assert len(task_names("grp/c1")) == 1
        assert states(sup) == {"c0": "running", "c1": "running"}
        sup.stop()
    assert running.error is None
    assert states(sup) == {"c0": "exited", "c1": "exited"}


async def test_children_waiting_in_backoff_are_exited_after_stop() -> None:
    journal: list[str] = []
    w = Puppet("w", journal)
    sup = Supervisor([w.spec()], backoff=Backoff(initial_seconds=30, jitter=0), max_restarts=9)
    async with anyio.create_task_group() as tg:
        await start(tg, sup)
        w.crash()
        await settle()
        w.crash()
        await settle()
        assert states(sup) == {"w": "restarting"}
        sup.stop()
    assert states(sup) == {"w": "exited"}


async def test_a_child_started_but_not_up_has_no_uptime_until_mark_up() -> None:
    crashes = 0

    async def booting(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal crashes
        ctx = megatrio.current_child()
        assert ctx is not None
        ctx.started(up=False)
        await trio.sleep(5)  # a long boot: still no uptime
        assert ctx.uptime_seconds() == 0.0
        if crashes < 2:
            crashes += 1
            raise Boom("died while booting")
        ctx.mark_up()
        await trio.sleep(2)
        assert ctx.uptime_seconds() == pytest.approx(2)
        await trio.sleep_forever()

    sup = Supervisor(
        [ChildSpec("w", booting)],
        max_restarts=1,
        period_seconds=100,
        min_uptime_seconds=1,
        backoff=NO_BACKOFF,
    )
    with pytest.raises(RestartIntensityExceeded):
        await sup.run()  # two boot crashes after 5 s each are both rapid: gives up
    assert crashes == 2
