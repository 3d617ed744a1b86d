"""Cancel from outside at every lifecycle phase: nothing may be left running or counted.

Each test drives a supervisor (or a runtime) into one phase, cancels the enclosing scope, and
checks that no task of the tree is alive, no child target is still inside its body, the
cancellation was not counted as a crash, and the supervisor can run again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import pytest
import trio

from megatrio import NO_BACKOFF, Backoff, ChildSpec, Strategy, Supervisor, mega_runtime

from ..helpers import Puppet, settle, task_names

pytestmark = pytest.mark.anyio


async def cancel_in_phase(
    sup: Supervisor,
    reach_phase: Callable[[trio.Nursery], Awaitable[None]],
    *puppets: Puppet,
    check: Callable[[], None] = lambda: None,
) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await settle()
            await reach_phase(nursery)
            await settle()
            scope.cancel()
    assert scope.cancelled_caught
    assert task_names(f"{sup.name}/") == []
    assert all(p.alive == 0 for p in puppets)
    assert sup.snapshot()["state"] == "stopped"
    check()
    # The same object runs again from scratch: no state survived the cancellation.
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert all(c["restarts"] == 0 for c in sup.snapshot()["children"])
        sup.stop()


async def noop(nursery: trio.Nursery) -> None:
    pass


async def test_cancel_while_an_initial_child_is_starting() -> None:
    gate = trio.Event()
    entered = trio.Event()
    runs = 0

    async def slow_start(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal runs
        runs += 1
        entered.set()
        if runs == 1:
            await gate.wait()
        task_status.started()
        await trio.sleep_forever()

    sup = Supervisor([ChildSpec("slow", slow_start)], name="starting")

    async def phase(nursery: trio.Nursery) -> None:
        await entered.wait()

    await cancel_in_phase(sup, phase)


async def test_cancel_while_start_child_waits_for_readiness() -> None:
    journal: list[str] = []
    a = Puppet("a", journal)
    sup = Supervisor([a.spec()], name="dynamic")
    started: list[object] = []

    async def never_ready(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        await trio.sleep_forever()

    async def phase(nursery: trio.Nursery) -> None:
        async def add() -> None:
            started.append(await sup.start_child(ChildSpec("never", never_ready)))

        nursery.start_soon(add)
        await settle()
        assert [c["state"] for c in sup.snapshot()["children"]] == ["running", "starting"]

    await cancel_in_phase(sup, phase, a)
    assert started == []


async def test_cancel_while_running() -> None:
    journal: list[str] = []
    p = [Puppet(n, journal) for n in "abc"]
    sup = Supervisor([x.spec() for x in p], name="running")

    def check() -> None:
        assert sorted(journal[3:]) == ["cancelled a", "cancelled b", "cancelled c"]

    await cancel_in_phase(sup, noop, *p, check=check)


async def test_cancel_while_children_are_stopping() -> None:
    journal: list[str] = []
    p = [Puppet(n, journal) for n in "ab"]
    for x in p:
        x.ignore_stop = True
    sup = Supervisor([x.spec(shutdown_seconds=100) for x in p], name="stopping")

    async def phase(nursery: trio.Nursery) -> None:
        sup.stop()
        await trio.sleep(10)  # "b" is inside its 100 s grace

    await cancel_in_phase(sup, phase, *p)
    assert sorted(journal[-2:]) == ["cancelled a", "cancelled b"]


async def test_cancel_during_a_group_restart() -> None:
    journal: list[str] = []
    a, b, c = (Puppet(n, journal) for n in "abc")
    c.ignore_stop = True  # the group restart is stuck stopping "c"
    sup = Supervisor(
        [a.spec(), b.spec(), c.spec(shutdown_seconds=100)],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=NO_BACKOFF,
        name="group",
    )

    async def phase(nursery: trio.Nursery) -> None:
        b.crash()
        await trio.sleep(10)

    def check() -> None:
        # b crashed, a was stopped, c was still inside its grace: nobody was restarted.
        assert sorted(journal[3:]) == ["cancelled a", "cancelled c", "crash b"]
        assert all(c["restarts"] == 0 for c in sup.snapshot()["children"])

    await cancel_in_phase(sup, phase, a, b, c, check=check)


async def test_cancel_while_a_restarted_child_is_starting() -> None:
    incarnations = 0
    restarting = trio.Event()

    async def second_start_hangs(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal incarnations
        incarnations += 1
        if incarnations == 2:
            restarting.set()
            await trio.sleep_forever()
        task_status.started()
        if incarnations == 1:
            raise RuntimeError("first incarnation dies")
        await trio.sleep_forever()

    sup = Supervisor([ChildSpec("w", second_start_hangs)], backoff=NO_BACKOFF, name="restart")

    async def phase(nursery: trio.Nursery) -> None:
        await restarting.wait()

    await cancel_in_phase(sup, phase)


async def test_cancel_while_backing_off() -> None:
    journal: list[str] = []
    w = Puppet("w", journal)
    sup = Supervisor([w.spec()], backoff=Backoff(initial_seconds=60, jitter=0), name="backoff")

    async def phase(nursery: trio.Nursery) -> None:
        w.crash()
        await settle()
        w.crash()
        await settle()
        assert sup.snapshot()["children"][0]["state"] == "restarting"

    await cancel_in_phase(sup, phase, w)


@pytest.mark.parametrize("phase", ["body", "stopping", "cleanup"])
async def test_cancel_a_runtime_in_every_phase(phase: str) -> None:
    journal: list[str] = []
    w = Puppet("w", journal)
    w.ignore_stop = True
    cleaned = []

    async def cleanup() -> None:
        if phase == "cleanup":
            await trio.sleep(50)
        cleaned.append(True)

    with trio.CancelScope() as scope:
        async with mega_runtime(name=f"rt-{phase}", grace_seconds=100) as rt:
            rt.push_async_callback(cleanup)
            await rt.start_child(w.spec(shutdown_seconds=20 if phase == "stopping" else 0))

            async def canceller() -> None:
                await trio.sleep({"body": 1, "stopping": 5, "cleanup": 5}[phase])
                scope.cancel()

            trio.lowlevel.spawn_system_task(canceller)
            if phase == "body":
                await trio.sleep_forever()
    assert task_names(f"rt-{phase}/") == []
    assert w.alive == 0
    # Resource cleanup is shielded: an outer cancel cannot skip it (it is bounded by the grace).
    assert cleaned == [True]
