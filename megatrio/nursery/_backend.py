"""The few primitives the supervised tree needs, native to the running event loop.

On trio, children are spawned into a plain trio nursery and use trio's own cancel scopes and
events; on any other anyio backend (asyncio), anyio's. anyio's trio task group wraps every
task in a handle with its own cancel scope and event — about 1.5 KB and 10 µs per child,
which for a tree of many idle children is most of its cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import anyio
import sniffio
import trio

Spawn = Callable[..., object]
"""``spawn(async_fn, *args, name=...)``: start a task in the container (not a checkpoint)."""


Scope = trio.CancelScope | anyio.CancelScope
Event = trio.Event | anyio.Event


def running_on_trio() -> bool:
    """Whether the current task runs under trio (not a checkpoint)."""
    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


def new_scope(on_trio: bool) -> Scope:
    return trio.CancelScope() if on_trio else anyio.CancelScope()


def new_event(on_trio: bool) -> Event:
    return trio.Event() if on_trio else anyio.Event()


def now(on_trio: bool) -> float:
    return trio.current_time() if on_trio else anyio.current_time()


@contextlib.asynccontextmanager
async def open_spawner(on_trio: bool) -> AsyncIterator[Spawn]:
    """A task container: leaving it waits for (or, when cancelled, cancels) every task."""
    if on_trio:
        async with trio.open_nursery() as nursery:
            yield nursery.start_soon
    else:
        async with anyio.create_task_group() as tg:
            yield tg.start_soon
