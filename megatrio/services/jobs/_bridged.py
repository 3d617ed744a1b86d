"""A :class:`~._driver.JobDriver` whose engine lives on the NATS connection's asyncio loop.

The JetStream engine is asyncio-native (nats-py); under trio every call crosses to the bridge's
loop through :meth:`NatsConnection.run`, whose cancellation is structured (a cancelled call is
cancelled on the loop and waited for). The driver contract is per batch — one ``fetch`` for the
free slots, one ``settle`` for the acknowledgements due — so the boundary is crossed once per
batch, not once per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar, TypeVarTuple, final

import anyio
import outcome

from ._driver import DeadLetter, Delivery, JobDriver, JobSettings, Settle

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Runner(Protocol):
    """What runs a coroutine function on the engine's loop (a ``NatsConnection``)."""

    async def run(self, async_fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T: ...


class _Enqueue:
    __slots__ = ("job", "msg_id", "payload", "result")

    def __init__(self, job: str, payload: bytes, msg_id: str | None) -> None:
        self.job = job
        self.payload = payload
        self.msg_id = msg_id
        self.result: outcome.Outcome[int] | None = None


@final
class BridgedDriver:
    """*engine*'s coroutines run on *conn*'s loop; the caller may be trio or asyncio.

    Concurrent enqueues cross together: the first caller takes every enqueue waiting and
    crosses once with all of them (published concurrently on the loop, each with its own
    result), while the others wait; whoever is waiting when a crossing ends takes the next.
    A crossing is shielded (each publish is bounded by the engine's request timeout), so
    cancelling one caller never fails the others' enqueues; the cancelled caller's job may
    still be stored, as with any enqueue whose answer was lost.
    """

    def __init__(self, conn: Runner, engine: JobDriver) -> None:
        self._conn = conn
        self._engine = engine
        self._waiting: list[_Enqueue] = []
        self._crossing = False
        self._crossed = anyio.Event()
        self.crossings = 0
        """How many enqueue batches crossed (for tests and benchmarks)."""

    @property
    def engine(self) -> JobDriver:
        return self._engine

    async def declare(self, jobs: Sequence[JobSettings]) -> None:
        await self._conn.run(self._engine.declare, jobs)

    async def enqueue(self, job: str, payload: bytes, *, msg_id: str | None = None) -> int:
        item = _Enqueue(job, payload, msg_id)
        self._waiting.append(item)
        while item.result is None:
            if self._crossing:
                crossed = self._crossed
                await crossed.wait()
                continue
            await self._cross()
        return item.result.unwrap()

    async def _cross(self) -> None:
        batch, self._waiting = self._waiting, []
        self._crossing = True
        try:
            with anyio.CancelScope(shield=True):
                self.crossings += 1
                results = await self._conn.run(_enqueue_all, self._engine, batch)
        except BaseException as exc:
            results = [outcome.Error(exc if isinstance(exc, Exception) else RuntimeError(exc))]
            results *= len(batch)
            raise
        finally:
            for item, result in zip(batch, results, strict=False):
                item.result = result
            self._crossing = False
            crossed, self._crossed = self._crossed, anyio.Event()
            crossed.set()

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


async def _enqueue_all(engine: JobDriver, batch: list[_Enqueue]) -> list[outcome.Outcome[int]]:
    """On the engine's loop: every enqueue of *batch* at once, each with its own outcome."""

    async def one(item: _Enqueue) -> outcome.Outcome[int]:
        try:
            return outcome.Value(await engine.enqueue(item.job, item.payload, msg_id=item.msg_id))
        except Exception as exc:
            return outcome.Error(exc)

    return list(await asyncio.gather(*(one(item) for item in batch)))


async def _fetch(engine: JobDriver, job: str, batch: int, timeout_seconds: float) -> list[Delivery]:
    return await engine.fetch(job, batch, timeout_seconds=timeout_seconds)


async def _dead_letters(engine: JobDriver, limit: int) -> list[tuple[int, DeadLetter]]:
    return await engine.dead_letters(limit=limit)
