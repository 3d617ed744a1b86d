"""The core-NATS bus on a real nats-server: fan-out, queue groups, bounded buffers, requests."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

import anyio
import pytest
import trio

from megatrio.services.nats._bus import Bus, BusMessage, Subscription, _Outbox
from megatrio.services.nats._connection import NatsConnection, open_nats

from ..servers import NatsServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


@pytest.fixture
async def conn(nats: NatsServer) -> AsyncIterator[NatsConnection]:
    async with open_nats(nats.url, name="t-bus") as conn:
        yield conn


async def wait_until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        for _ in iter(int, 1):
            if predicate():
                return
            await trio.sleep(0.01)


def buffered(sub: Subscription) -> int:
    return sub._receive.statistics().current_buffer_used  # type: ignore[attr-defined, no-any-return]


async def take(sub: Subscription, n: int) -> list[BusMessage]:
    got: list[BusMessage] = []
    async for msg in sub:
        got.append(msg)
        if len(got) == n:
            break
    return got


async def drain(sub: Subscription, quiet_seconds: float = 0.3) -> list[BusMessage]:
    """Every message that arrives until none has for *quiet_seconds*."""
    got: list[BusMessage] = []
    while True:
        with trio.move_on_after(quiet_seconds):
            got.append(await sub.__anext__())
            continue
        return got


async def test_publish_and_subscribe_round_trip(conn: NatsConnection) -> None:
    bus = Bus(conn)
    with trio.fail_after(10):
        async with bus.subscribe("orders.>") as sub:
            await bus.publish("orders.new", b"one", headers={"X-Kind": "a"})
            await bus.publish("elsewhere", b"never")
            await bus.publish("orders.paid", b"two")
            first, second = await take(sub, 2)
        assert first == BusMessage("orders.new", b"one", {"X-Kind": "a"}, None)
        assert (second.subject, second.data) == ("orders.paid", b"two")
        assert sub.dropped == 0


async def test_a_queue_group_shares_the_messages(conn: NatsConnection) -> None:
    bus = Bus(conn)
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    all_in = trio.Event()

    async def member(name: str, sub: Subscription) -> None:
        async for msg in sub:
            got[name].append(msg.data)
            if len(got["a"]) + len(got["b"]) == 200:
                all_in.set()

    with trio.fail_after(20):
        async with (
            bus.subscribe("jobs.work", queue="workers") as a,
            bus.subscribe("jobs.work", queue="workers") as b,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(member, "a", a)
            nursery.start_soon(member, "b", b)
            for i in range(200):
                await bus.publish("jobs.work", str(i).encode())
            await bus.flush()
            await all_in.wait()
            await trio.sleep(0.2)  # a duplicate would arrive now
            nursery.cancel_scope.cancel()
    assert 0 < len(got["a"]) < 200
    assert 0 < len(got["b"]) < 200
    assert sorted(got["a"] + got["b"], key=int) == [str(i).encode() for i in range(200)]


async def test_a_full_drop_subscriber_drops_and_counts_while_a_fast_one_gets_all(
    conn: NatsConnection,
) -> None:
    bus = Bus(conn)
    with trio.fail_after(20):
        async with (
            bus.subscribe("ticks", max_pending=10, when_full="drop") as slow,
            bus.subscribe("ticks") as fast,
        ):
            for i in range(200):
                await bus.publish("ticks", str(i).encode())
            await bus.flush()
            fast_got = await take(fast, 200)
            # Nobody reads the slow one: its channel fills and the rest is dropped.
            await wait_until(lambda: slow.dropped + buffered(slow) == 200)
            slow_got = await drain(slow)
    assert [m.data for m in fast_got] == [str(i).encode() for i in range(200)]
    assert fast.dropped == 0
    assert len(slow_got) == 10
    assert slow.dropped == 190


async def test_block_loses_nothing_within_its_buffers(conn: NatsConnection) -> None:
    bus = Bus(conn)
    with trio.fail_after(20):
        # A burst as large as the buffers: nats-py parses a burst without yielding, so its own
        # queue (max_pending) must hold it; past that nats-py drops (the test below).
        async with bus.subscribe("ticks", max_pending=100, when_full="block") as sub:
            for i in range(100):
                await bus.publish("ticks", str(i).encode())
            await bus.flush()
            await trio.sleep(0.3)  # nobody reads yet: the handler waits for room
            got = await take(sub, 100)
    assert [m.data for m in got] == [str(i).encode() for i in range(100)]
    assert sub.dropped == 0


async def test_block_is_bounded_too_nats_py_drops_and_it_is_counted(
    conn: NatsConnection,
) -> None:
    bus = Bus(conn)
    with trio.fail_after(20):
        async with bus.subscribe("ticks", max_pending=10, when_full="block") as sub:
            for i in range(200):
                await bus.publish("ticks", str(i).encode())
            await bus.flush()
            await trio.sleep(0.3)
            got = await drain(sub)
    assert sub.dropped > 0
    assert len(got) + sub.dropped == 200
    assert len(got) <= 4 * 10 + 1  # nats-py's queue, hand-off, pump's batch, channel, handler


async def test_request_reply_and_its_failures(conn: NatsConnection) -> None:
    bus = Bus(conn)

    async def echo(sub: Subscription) -> None:
        async for msg in sub:
            await bus.reply(msg, msg.data.upper())

    with trio.fail_after(20):
        async with (
            bus.subscribe("svc.echo") as echo_sub,
            bus.subscribe("svc.silent"),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(echo, echo_sub)
            answer = await bus.request("svc.echo", b"hi", timeout_seconds=5)
            assert answer.data == b"HI"
            with pytest.raises(TimeoutError, match=r"'svc\.silent'"):
                await bus.request("svc.silent", b"?", timeout_seconds=0.3)
            with pytest.raises(LookupError, match=r"no responders on 'svc\.nobody'"):
                await bus.request("svc.nobody", b"?", timeout_seconds=5)
            with pytest.raises(ValueError, match="no reply subject"):
                await bus.reply(BusMessage("x", b""), b"")
            nursery.cancel_scope.cancel()


async def test_the_bus_keeps_working_across_a_server_restart(
    nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"nats://alice:hunter2-secret@{nats.host}:{nats.port}"
    with trio.fail_after(30):
        async with open_nats(url, name="t-bus-restart") as conn:
            bus = Bus(conn)
            async with bus.subscribe("after.restart") as sub:
                await bus.publish("after.restart", b"before")
                assert [m.data for m in await take(sub, 1)] == [b"before"]

                await trio.to_thread.run_sync(nats.stop)
                await wait_until(lambda: conn.status.state == "disconnected")
                await trio.to_thread.run_sync(nats.start)
                await wait_until(lambda: conn.status.state == "connected")
                assert conn.status.reconnects == 1

                # nats-py re-subscribes on reconnect: the same subscription keeps receiving.
                await bus.publish("after.restart", b"after")
                await bus.flush()
                assert [m.data for m in await take(sub, 1)] == [b"after"]
    texts = [record.getMessage() for record in caplog.records]
    assert any("alice:***@" in text for text in texts)
    assert not any("hunter2" in text for text in texts)


async def test_publishes_cross_in_batches_in_order(conn: NatsConnection) -> None:
    bus = Bus(conn)
    with trio.fail_after(20):
        async with bus.subscribe("seq", max_pending=5000) as sub:
            for i in range(2000):
                await bus.publish("seq", str(i).encode())
            await bus.flush()
            got = await take(sub, 2000)
    assert [m.data for m in got] == [str(i).encode() for i in range(2000)]
    assert sub.dropped == 0
    assert bus._outbox.drains < 2000  # the drainer carried several publishes per wake-up


async def test_publishing_after_the_connection_closed_fails_every_time(nats: NatsServer) -> None:
    async with open_nats(nats.url, name="t-bus-closed") as conn:
        bus = Bus(conn)
        await bus.publish("x", b"before")
        await bus.flush()
    with trio.fail_after(5):
        for _ in range(3):  # never a hang: nothing is left waiting for a drainer
            with pytest.raises(anyio.ClosedResourceError, match="NATS connection is closed"):
                await bus.publish("x", b"after")


async def test_publish_nowait_never_waits_and_refuses_when_the_outbox_is_full(
    conn: NatsConnection,
) -> None:
    bus = Bus(conn)
    bus._outbox = _Outbox(conn, limit=3)
    with trio.fail_after(10):
        async with bus.subscribe("ticks") as sub:
            # The loop is busy: nothing drains while the outbox fills.
            conn.bridge.call_soon_in_loop(time.sleep, 0.3)
            results = [bus.publish_nowait("ticks", b"%d" % n) for n in range(5)]
            assert results == [True, True, True, False, False]
            assert bus._outbox.refused == 2
            got = [(await sub.__anext__()).data for _ in range(3)]
            assert got == [b"0", b"1", b"2"]
            assert bus.publish_nowait("ticks", b"later")
            assert (await sub.__anext__()).data == b"later"
