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
        "app [one_for_one, running, 0 restarts, max 3 restarts in 5 s]",
        "├── tick  running  up 1.0s  restarts 0",
        "└── inner  running  up 1.0s  restarts 0",
        "    inner [one_for_one, running, 2 restarts, max 3 restarts in 5 s]",
        "    └── flaky  running  up 1.0s  restarts 2  last error: Boom: bad luck",
    ]
