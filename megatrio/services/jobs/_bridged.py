"""A :class:`~._driver.JobDriver` whose engine lives on the NATS connection's asyncio loop.

The JetStream engine is asyncio-native (nats-py); under trio every call crosses to the bridge's
loop through :meth:`NatsConnection.run`, whose cancellation is structured (a cancelled call is
cancelled on the loop and waited for). The driver contract is per batch — one ``fetch`` for the
free slots, one ``settle`` for the acknowledgements due — so the consumer crosses once per
batch, not once per message; enqueues cross one call each, coalesced by the bridge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar, TypeVarTuple, final, runtime_checkable

from ..nats._bridge import Cancel, Done
from ._driver import DeadLetter, Delivery, JobDriver, JobSettings, Settle

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Runner(Protocol):
    """What runs a coroutine function, or a callback operation, on the engine's loop (a
    ``NatsConnection``)."""

    async def run(self, async_fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T: ...

    async def run_callback(self, start: Callable[[Done[T], *Ts], Cancel], *args: *Ts) -> T: ...


@runtime_checkable
class StartsEnqueues(Protocol):
    """An engine whose enqueue is also a callback operation (``JetStreamDriver``)."""

    def start_enqueue(
        self, done: Done[int], job: str, payload: bytes, msg_id: str | None
    ) -> Cancel: ...


@final
class BridgedDriver:
    """*engine*'s coroutines run on *conn*'s loop; the caller may be trio or asyncio.

    Every call is one bridged call: concurrent enqueues run concurrently on the loop, each with
    its own answer, and the bridge coalesces their crossings (a burst of calls wakes the loop
    once, a burst of answers wakes trio once). An engine that :class:`StartsEnqueues` gets its
    enqueues as callback operations, with no task of their own on the loop. A cancelled
    enqueue is stopped on the loop and waited for, like any bridged call; its job may still be
    stored, as with any enqueue whose answer was lost (retry with the same msg id).
    """

    def __init__(self, conn: Runner, engine: JobDriver) -> None:
        self._conn = conn
        self._engine = engine
        self._starter = engine if isinstance(engine, StartsEnqueues) else None

    @property
    def engine(self) -> JobDriver:
        return self._engine

    async def declare(self, jobs: Sequence[JobSettings]) -> None:
        await self._conn.run(self._engine.declare, jobs)

    async def enqueue(self, job: str, payload: bytes, *, msg_id: str | None = None) -> int:
        if self._starter is not None:
            return await self._conn.run_callback(self._starter.start_enqueue, job, payload, msg_id)
        return await self._conn.run(_enqueue, self._engine, job, payload, msg_id)

    async def fetch(self, job: str, batch: int, *, timeout_seconds: float) -> list[Delivery]:
        return await self._conn.run(_fetch, self._engine, job, batch, timeout_seconds)

    async def settle(self, actions: Sequence[Settle]) -> None:
        if actions:
            await self._conn.run(self._engine.settle, actions)

    async def dead_letter(self, letter: DeadLetter) -> None:
        await self._conn.run(self._engine.dead_letter, letter)

    async def dead_letters(self, *, limit: int = 100) -> list[tuple[int, DeadLetter]]:
        return await self._conn.run(_dead_letters, self._engine, limit)

    async def purge_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        return await self._conn.run(self._engine.purge_dead_letters, ids)

    async def aclose(self) -> None:
        await self._conn.run(self._engine.aclose)


# Keyword arguments do not cross NatsConnection.run (it takes positional ones only).


async def _enqueue(engine: JobDriver, job: str, payload: bytes, msg_id: str | None) -> int:
    return await engine.enqueue(job, payload, msg_id=msg_id)


async def _fetch(engine: JobDriver, job: str, batch: int, timeout_seconds: float) -> list[Delivery]:
    return await engine.fetch(job, batch, timeout_seconds=timeout_seconds)


async def _dead_letters(engine: JobDriver, limit: int) -> list[tuple[int, DeadLetter]]:
    return await engine.dead_letters(limit=limit)
