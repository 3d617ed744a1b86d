"""Fixture app whose child crashes on every start: the root supervisor gives up."""

from __future__ import annotations

import trio

import megatrio

app = megatrio.App("crashing")


@app.child()
async def doomed(*, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    await trio.sleep(0.05)
    raise RuntimeError("doomed child crashed (token=abc123)")
