"""format_tree renders a snapshot readably, nested supervisors indented."""

from __future__ import annotations

import anyio
import pytest

import megatrio
from megatrio import NO_BACKOFF, ChildSpec, Supervisor

from ..helpers import Boom

pytestmark = pytest.mark.anyio


async def test_format_tree_shows_states_restarts_and_nesting() -> None:
    crashes = 0

    async def flaky(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal crashes
        task_status.started()
        if crashes < 2:
            crashes += 1
            raise Boom("bad luck")
        await anyio.sleep_forever()

    inner = Supervisor([ChildSpec("flaky", flaky)], backoff=NO_BACKOFF, name="inner")
    async with megatrio.mega_runtime(name="app") as rt:
        await rt.start_child(megatrio.every(5, anyio.lowlevel.checkpoint, name="tick"))
        await rt.start_child(inner.child_spec())
        await anyio.sleep(1)
        text = megatrio.format_tree(rt.snapshot())
    assert text.splitlines() == [
        "app [one_for_one, running, restarts in window 0/3 in 5 s; 0 total]",
        "├── tick  running  up 1.0s  0 restarts",
        "└── inner  running  up 1.0s  0 restarts",
        "    inner [one_for_one, running, restarts in window 2/3 in 5 s; 2 total]",
        "    └── flaky  running  up 1.0s  2 restarts  last error: Boom: bad luck",
    ]


async def test_the_window_empties_with_time_and_counts_are_singular_when_one() -> None:
    crashed = False

    async def once(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        nonlocal crashed
        task_status.started()
        if not crashed:
            crashed = True
            raise Boom("once")
        await anyio.sleep_forever()

    sup = Supervisor([ChildSpec("once", once)], backoff=NO_BACKOFF, name="s")
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await anyio.sleep(1)
        first = megatrio.format_tree(sup.snapshot()).splitlines()
        await anyio.sleep(5)  # the crash leaves the 5 s window
        later = megatrio.format_tree(sup.snapshot()).splitlines()
        sup.stop()
    assert first[0] == "s [one_for_one, running, restarts in window 1/3 in 5 s; 1 total]"
    assert first[1].startswith("└── once  running  up 1.0s  1 restart  last error")
    assert later[0] == "s [one_for_one, running, restarts in window 0/3 in 5 s; 1 total]"
