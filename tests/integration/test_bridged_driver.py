"""The JetStream engine under trio through the NATS connection's bridge: concurrent enqueues
cross together, and one caller's failure or cancellation is its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from megatrio.services.jobs._bridged import BridgedDriver
from megatrio.services.jobs._driver import JobSettings
from megatrio.services.jobs._embedded import EmbeddedDriver
from megatrio.services.jobs._jetstream import JetStreamDriver
from megatrio.services.nats._bridge import AsyncioBridge, open_asyncio_bridge
from megatrio.services.nats._connection import open_nats

from ..servers import NatsServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # a real server needs the real clock


@pytest.fixture
async def driver(nats: NatsServer) -> AsyncIterator[BridgedDriver]:
    async def new_engine(client: Any) -> JetStreamDriver:
        return JetStreamDriver(client, namespace="bridged")

    async with open_nats(nats.url, name="test") as conn:
        bridged = BridgedDriver(conn, await conn.run(new_engine, conn.client))
        await bridged.declare([JobSettings("work")])
        yield bridged
        await bridged.aclose()


async def test_concurrent_enqueues_cross_in_batches_each_with_its_own_answer(
    driver: BridgedDriver,
) -> None:
    sequences: list[int] = []

    async def enqueue(i: int) -> None:
        sequences.append(await driver.enqueue("work", b"%d" % i))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(enqueue, i)
    assert sorted(sequences) == list(range(1, 201))
    assert driver.crossings < 50  # 200 enqueues, a handful of crossings
    # A duplicate msg id still answers the first sequence, inside a batch too.
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(driver.enqueue, "work", b"x")
    first = await driver.enqueue("work", b"y", msg_id="once")
    assert await driver.enqueue("work", b"y", msg_id="once") == first


async def test_a_failing_enqueue_fails_only_its_caller(driver: BridgedDriver) -> None:
    outcomes: dict[str, object] = {}

    async def enqueue(job: str) -> None:
        try:
            outcomes[job] = await driver.enqueue(job, b"{}")
        except LookupError as exc:
            outcomes[job] = exc

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for job in ("work", "nope", "work"):
                nursery.start_soon(enqueue, job)
    assert isinstance(outcomes["nope"], LookupError)
    assert "nope" in str(outcomes["nope"])
    assert isinstance(outcomes["work"], int)


class GatedRunner:
    """The bridge, with every enqueue crossing held at a gate the test opens; records which
    task led each crossing."""

    def __init__(self, bridge: AsyncioBridge) -> None:
        self.bridge = bridge
        self.gates: list[trio.Event] = [trio.Event() for _ in range(8)]
        self.leaders: list[trio.lowlevel.Task] = []

    async def run(self, async_fn: Any, *args: Any) -> Any:
        if getattr(async_fn, "__name__", "") == "_enqueue_all":
            self.leaders.append(trio.lowlevel.current_task())
            await self.gates[len(self.leaders) - 1].wait()
        return await self.bridge.run(async_fn, *args)


async def test_a_cancelled_caller_leading_a_crossing_does_not_fail_the_others() -> None:
    async def new_engine() -> EmbeddedDriver:
        return EmbeddedDriver()  # built on the loop it runs on

    async with open_asyncio_bridge() as bridge:
        runner = GatedRunner(bridge)
        driver = BridgedDriver(runner, await bridge.run(new_engine))
        await driver.declare([JobSettings("work")])
        scopes: dict[trio.lowlevel.Task, trio.CancelScope] = {}
        answers: dict[int, int] = {}

        async def enqueue(i: int) -> None:
            with trio.CancelScope() as scope:
                scopes[trio.lowlevel.current_task()] = scope
                answers[i] = await driver.enqueue("work", b"%d" % i)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(enqueue, 0)  # crosses alone, held at gate 0
                await trio.testing.wait_all_tasks_blocked()
                for i in range(1, 6):
                    nursery.start_soon(enqueue, i)  # wait behind it
                await trio.testing.wait_all_tasks_blocked()
                runner.gates[0].set()
                # The first crossing ends on the loop's thread, not in a trio task.
                while len(runner.leaders) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                await trio.testing.wait_all_tasks_blocked()
                # One waiter now leads a crossing for all five; cancel it mid-crossing.
                scopes[runner.leaders[1]].cancel()
                runner.gates[1].set()
        assert sorted(answers.values()) == list(range(1, 7))  # the leader's answer came too
        assert driver.crossings == 2
