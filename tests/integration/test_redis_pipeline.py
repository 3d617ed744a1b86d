"""The pipelined pool against a private, real redis-server: it grows under concurrency within
its cap, matches 64 callers' replies over a handful of writes, and keeps its connections in
sync through cancelled callers, a server killed mid-pipeline and a frozen one."""

from __future__ import annotations

import random
import signal

import anyio
import pytest
import trio

from megatrio.services.stores._cache import Cache
from megatrio.services.stores._redis import CacheUnavailable, RedisClient, open_redis
from megatrio.services.stores._redis_cache import RedisCache

from ..servers import RedisServer
from .redis_support import client_list
from .test_redis_cache import frozen

pytestmark = pytest.mark.anyio

TASKS = 64


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


async def named_connections(watcher: RedisClient, name: str) -> int:
    return sum(1 for c in await client_list(watcher) if c.get("name") == name)


@pytest.mark.parametrize("auto_pipeline", [True, False])
@pytest.mark.parametrize("cap", [2, 4])
async def test_64_concurrent_callers_use_more_than_one_connection_never_more_than_the_cap(
    redis: RedisServer, auto_pipeline: bool, cap: int
) -> None:
    seen: list[int] = []
    async with (
        open_redis(redis.url, client_name="watcher") as watcher,
        open_redis(
            redis.url, max_connections=cap, auto_pipeline=auto_pipeline, client_name="pool"
        ) as client,
    ):
        running = True

        async def caller(task: int) -> None:
            for i in range(40):
                key = f"k{task}:{i}"
                assert await client.set(key, b"%d" % i)
                assert await client.get(key) == b"%d" % i

        async def sample() -> None:
            while running:
                seen.append(await named_connections(watcher, "pool"))
                assert client.connection_count <= cap
                await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            async with trio.open_nursery() as callers:
                for task in range(TASKS):
                    callers.start_soon(caller, task)
            running = False
        seen.append(await named_connections(watcher, "pool"))
        assert client.connections_opened <= cap  # none failed, none replaced
    assert max(seen) > 1
    assert max(seen) <= cap


async def test_64_callers_on_one_connection_need_a_handful_of_writes(redis: RedisServer) -> None:
    async with open_redis(redis.url, max_connections=1) as client:
        for task in range(TASKS):
            await client.set(f"k{task}", b"v%d" % task)
        before = client.writes
        got: dict[int, bytes | None] = {}

        async def caller(task: int) -> None:
            got[task] = await client.get(f"k{task}")

        async with trio.open_nursery() as nursery:
            for task in range(TASKS):
                nursery.start_soon(caller, task)
        assert got == {task: b"v%d" % task for task in range(TASKS)}  # each its own reply
        assert client.writes - before <= 4


async def test_without_auto_pipeline_each_command_is_a_write_of_its_own(
    redis: RedisServer,
) -> None:
    async with open_redis(redis.url, max_connections=1, auto_pipeline=False) as client:
        before = client.writes
        async with trio.open_nursery() as nursery:
            for task in range(16):
                nursery.start_soon(client.get, f"k{task}")
        assert client.writes - before == 16


async def test_a_command_cancelled_before_it_was_written_never_reaches_redis(
    redis: RedisServer,
) -> None:
    async with open_redis(redis.url) as client:
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.set("never", b"1")
        assert scope.cancelled_caught
        assert await client.exists("never") == 0


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_cancelled_callers_mid_pipeline_leave_every_connection_in_sync(
    redis: RedisServer, auto_pipeline: bool
) -> None:
    rng = random.Random(7)
    async with open_redis(redis.url, max_connections=4, auto_pipeline=auto_pipeline) as client:
        cache = Cache(RedisCache(client), namespace="p")
        for task in range(TASKS):
            await cache.set(f"k{task}", task)
        wrong: list[tuple[int, object]] = []

        async def caller(task: int) -> None:
            for _ in range(30):
                # Cancelled before the write, while in flight, or not at all.
                with trio.move_on_after(rng.choice([0, 0.0001, 0.001, 1.0])):
                    value = await cache.get(f"k{task}")
                    if value != task:
                        wrong.append((task, value))

        async with trio.open_nursery() as nursery:
            for task in range(TASKS):
                nursery.start_soon(caller, task)
        assert wrong == []
        # Whatever was abandoned has been read and dropped: every reply is its own.
        for task in range(TASKS):
            assert await cache.get(f"k{task}") == task


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_a_server_killed_mid_pipeline_fails_every_caller_then_the_client_recovers(
    redis: RedisServer, auto_pipeline: bool
) -> None:
    async with open_redis(
        redis.url,
        connect_timeout_seconds=0.5,
        stream_timeout_seconds=0.5,
        max_connections=4,
        auto_pipeline=auto_pipeline,
    ) as client:
        cache = Cache(RedisCache(client), namespace="p")
        for task in range(TASKS):
            await cache.set(f"k{task}", task)
        outcomes: dict[str, int] = {"ok": 0, "unavailable": 0}
        wrong: list[object] = []

        async def caller(task: int) -> None:
            while True:
                try:
                    value = await cache.get(f"k{task}")
                except CacheUnavailable:
                    outcomes["unavailable"] += 1
                    return
                if value != task:
                    wrong.append(value)
                outcomes["ok"] += 1

        start = trio.current_time()
        with trio.fail_after(5):  # no caller hangs
            async with trio.open_nursery() as nursery:
                for task in range(TASKS):
                    nursery.start_soon(caller, task)
                await trio.sleep(0.05)
                redis.stop(signal.SIGKILL)
        assert wrong == []
        assert outcomes["unavailable"] == TASKS  # every caller saw the outage, none hung
        assert trio.current_time() - start < 2.0
        redis.start()
        assert await cache.get("k1") is None  # the restarted server has no data
        await cache.set("k1", "back")
        assert await cache.get("k1") == "back"


@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_a_frozen_server_with_a_pipeline_in_flight_times_out_once_then_stays_in_sync(
    redis: RedisServer, auto_pipeline: bool
) -> None:
    async with open_redis(
        redis.url, stream_timeout_seconds=0.5, max_connections=4, auto_pipeline=auto_pipeline
    ) as client:
        cache = Cache(RedisCache(client), namespace="p")
        for task in range(TASKS):
            await cache.set(f"k{task}", task)
        # Every connection open and warm before the freeze.
        async with trio.open_nursery() as nursery:
            for task in range(TASKS):
                nursery.start_soon(cache.get, f"k{task}")
        failures: list[BaseException] = []

        async def caller(task: int) -> None:
            try:
                await cache.get(f"k{task}")
            except CacheUnavailable as exc:
                failures.append(exc)

        with frozen(redis), trio.fail_after(5):
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for task in range(TASKS):
                    nursery.start_soon(caller, task)
            elapsed = trio.current_time() - start
        assert len(failures) == TASKS
        # Pipelined, all time out together; one at a time, waiting for a free connection
        # (the pool timeout) fails the rest as soon as the in-flight ones time out.
        assert all("timed out" in str(f) or "no Redis connection" in str(f) for f in failures)
        assert elapsed < 3.0  # connect + stream timeout at most, not 64 timeouts in a row
        # The late replies to the timed-out GETs are dropped, never handed to later callers.
        got = {}

        async def check(task: int) -> None:
            got[task] = await cache.get(f"k{task}")

        with trio.fail_after(3):
            async with trio.open_nursery() as nursery:
                for task in range(TASKS):
                    nursery.start_soon(check, task)
        assert got == {task: task for task in range(TASKS)}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_client_runs_on_asyncio_too(redis: RedisServer) -> None:
    async with open_redis(redis.url, max_connections=2) as client:
        cache = Cache(RedisCache(client), namespace="a")
        async with anyio.create_task_group() as tg:
            for task in range(TASKS):
                tg.start_soon(cache.set, f"k{task}", task)
        got = {}

        async def check(task: int) -> None:
            got[task] = await cache.get(f"k{task}")

        async with anyio.create_task_group() as tg:
            for task in range(TASKS):
                tg.start_soon(check, task)
        assert got == {task: task for task in range(TASKS)}
        with anyio.move_on_after(0) as scope:
            await client.set("never", b"1")
        assert scope.cancelled_caught
        assert await client.exists("never") == 0
