"""The JetStream engine under trio through the NATS connection's bridge: concurrent enqueues
run concurrently with coalesced crossings, and one caller's failure is its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from megatrio.services.jobs._bridged import BridgedDriver
from megatrio.services.jobs._driver import JobSettings
from megatrio.services.jobs._jetstream import JetStreamDriver
from megatrio.services.nats._bridge import AsyncioBridge
from megatrio.services.nats._connection import NatsConnection, open_nats

from ..servers import NatsServer, frozen

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


def driver_bridge(driver: BridgedDriver) -> AsyncioBridge:
    conn = driver._conn
    assert isinstance(conn, NatsConnection)
    return conn.bridge


async def test_concurrent_enqueues_share_wakeups_each_with_its_own_answer(
    driver: BridgedDriver, nats: NatsServer
) -> None:
    sequences: list[int] = []

    async def enqueue(i: int) -> None:
        sequences.append(await driver.enqueue("work", b"%d" % i))

    bridge = driver_bridge(driver)
    before = bridge.loop_wakeups
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(enqueue, i)
    assert sorted(sequences) == list(range(1, 201))
    assert bridge.loop_wakeups - before < 50  # 200 enqueues, a handful of loop wake-ups
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


async def test_a_cancelled_enqueue_is_stopped_on_the_loop_and_nothing_waits(
    driver: BridgedDriver, nats: NatsServer
) -> None:
    bridge = driver_bridge(driver)
    engine = driver.engine
    assert isinstance(engine, JetStreamDriver)
    with frozen(nats.proc):  # connected and silent: no acknowledgement comes
        with trio.fail_after(5):
            with trio.move_on_after(0.2) as scope:
                async with trio.open_nursery() as nursery:
                    for i in range(20):
                        nursery.start_soon(driver.enqueue, "work", b"%d" % i)
            assert scope.cancelled_caught
        # Cancelled was raised only once the loop had stopped every one of them.
        assert bridge._live == set()
        assert await driver._conn.run(_waiting, engine) == 0
    with trio.fail_after(10):
        assert await driver.enqueue("work", b"after") >= 1


async def _waiting(engine: JetStreamDriver) -> int:
    return engine._pubacks.waiting
