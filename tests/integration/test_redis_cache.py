"""open_redis and RedisCache against a private, real redis-server: round trips through the
Cache facade, TTLs, single-flight, cancellation, outages (stopped and frozen server)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio
from coredis.exceptions import WrongTypeError

from megatrio import ChildSpec, mega_runtime
from megatrio.services.stores._cache import Cache, open_cache
from megatrio.services.stores._redis import (
    BackendUnavailable,
    CacheUnavailable,
    open_redis,
    parse_redis_url,
    ttl_milliseconds,
)
from megatrio.services.stores._redis_cache import RedisCache

from ..servers import RedisServer, free_port
from .redis_support import client_list, pttl, raw_keys

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


@contextlib.contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """SIGSTOP the server by pid: connections stay open but nothing is answered."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


async def wait_until(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll *predicate*: only for state that changes on Redis' own clock or on the server."""
    with trio.fail_after(2):
        while True:
            if await predicate():
                return
            await trio.sleep(0.01)


# -- open_redis -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:7000/3", {"host": "127.0.0.1", "port": 7000, "db": 3}),
        ("redis://cache.internal", {"host": "cache.internal", "port": 6379, "db": 0}),
        ("redis://[::1]:7001/", {"host": "::1", "port": 7001, "db": 0}),
        (
            "redis://app:p%40ss@h:1/2",
            {"host": "h", "username": "app", "password": "p@ss", "db": 2},
        ),
        ("redis://:pw@h/0", {"username": None, "password": "pw"}),
        ("rediss://h:6380/1", {"host": "h", "port": 6380, "db": 1, "tls": True}),
        ("unix:///run/redis.sock?db=4", {"unix_path": "/run/redis.sock", "db": 4}),
    ],
)
def test_parse_redis_url_accepts_the_documented_forms(
    url: str, expected: dict[str, object]
) -> None:
    target = parse_redis_url(url)
    for name, value in expected.items():
        assert getattr(target, name) == value, name


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:hunter2@h:1/0", "http://u:***@h:1/0"),
        ("redis://u:hunter2@:6379/0", "redis://u:***@:6379/0"),
        ("redis://u:hunter2@h:notaport/0", "redis://u:***@h:notaport/0"),
        ("redis://u:hunter2@h:99999/0", "redis://u:***@h:99999/0"),
        ("redis://u:hunter2@h:1/zero", "redis://u:***@h:1/zero"),
        ("redis://u:hunter2@h:1/-1", "redis://u:***@h:1/-1"),
        ("redis://u:hunter2@h:1/0/1", "redis://u:***@h:1/0/1"),
        ("redis://u:hunter2@h:1/0?timeout=3", "redis://u:***@h:1/0?timeout=***"),
        ("redis://u:hunter2@h:1/0#frag", "redis://u:***@h:1/0#***"),
        ("unix://u:hunter2@h/sock", "unix://u:***@h/sock"),
        ("unix://u:hunter2@/sock?database=1", "unix://u:***@/sock?database=***"),
        # Odd ones: a password with an unencoded '/', secrets in a query or a fragment.
        ("redis://u:hunter2/x@h:1/0", "redis://u:***@h:1/0"),
        ("redis://h:1/0?password=hunter2", "redis://h:1/0?password=***"),
        ("unix:///s.sock?db=1&password=hunter2", "unix:///s.sock?db=1&password=***"),
        ("redis://h:1/0#hunter2", "redis://h:1/0#***"),
        ("u:hunter2@h", "***"),
    ],
)
def test_malformed_urls_raise_value_error_naming_the_url_without_its_password(
    url: str, shown: str
) -> None:
    with pytest.raises(ValueError, match="invalid Redis URL") as info:
        parse_redis_url(url)
    assert "hunter2" not in str(info.value)
    assert repr(shown) in str(info.value)


def test_ttl_milliseconds_rounds_up_to_whole_milliseconds() -> None:
    assert ttl_milliseconds(1.1) == 1100
    assert ttl_milliseconds(0.0001) == 1
    assert ttl_milliseconds(0.0) == 1
    assert ttl_milliseconds(2.0005) == 2001
    assert ttl_milliseconds(1e300) == 2**53


async def test_open_redis_pings_on_open_and_closes_its_connections_on_exit(
    redis: RedisServer,
) -> None:
    async with open_redis(redis.url, client_name="watcher") as watcher:
        async with open_redis(redis.url, client_name="short-lived") as client:
            assert await client.ping() == b"PONG"
            clients = await client_list(watcher)
            assert any(c.get("name") == "short-lived" for c in clients)

        # The server sees the connection go as soon as the block has exited.
        async def gone() -> bool:
            return all(c.get("name") != "short-lived" for c in await client_list(watcher))

        await wait_until(gone)


async def test_open_redis_rejects_options_the_url_decides(redis: RedisServer) -> None:
    with pytest.raises(TypeError, match="sets db itself"):
        async with open_redis(redis.url, db=2):
            pass  # pragma: no cover


async def test_open_redis_to_nothing_listening_fails_fast_with_backend_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    start = trio.current_time()
    with pytest.raises(BackendUnavailable, match=f"cannot reach Redis at {url}"):
        async with open_redis(url, connect_timeout_seconds=0.5):
            pass  # pragma: no cover
    assert trio.current_time() - start < 1.5


async def test_a_refused_login_never_shows_the_password(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://nobody:hunter2@{redis.host}:{redis.port}/0"
    with pytest.raises(BackendUnavailable) as info:
        async with open_redis(url):
            pass  # pragma: no cover
    assert "AuthenticationFailureError" in str(info.value)
    assert "redis://nobody:***@" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in caplog.text


async def test_errors_from_the_body_are_not_wrapped_in_a_group(redis: RedisServer) -> None:
    with pytest.raises(KeyError, match="from the body"):
        async with open_redis(redis.url):
            raise KeyError("from the body")


# -- RedisCache through the facade ----------------------------------------------------------


async def test_round_trip_with_namespaced_raw_keys(redis: RedisServer) -> None:
    async with open_redis(redis.url) as client:
        driver = RedisCache(client)
        shop, blog = Cache(driver, namespace="shop"), Cache(driver, namespace="blog")
        await shop.set("user:1", {"name": "ana", "tags": [1, 2]})
        await blog.set("user:1", "a blog post")
        assert await shop.get("user:1") == {"name": "ana", "tags": [1, 2]}
        assert await blog.get("user:1") == "a blog post"
        assert await raw_keys(client) == {b"mega:cache:shop:user:1", b"mega:cache:blog:user:1"}
        assert await client.get("mega:cache:shop:user:1") == b'{"name":"ana","tags":[1,2]}'
        assert await shop.get("missing", "dflt") == "dflt"


async def test_delete_and_has(redis: RedisServer) -> None:
    async with open_redis(redis.url) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        await cache.set("abc", 1)
        await client.set("a", b"must survive")  # what DEL "abc" as a bare string would hit
        assert await cache.has("abc")
        assert not await cache.has("ab")
        assert await cache.delete("abc")
        assert not await cache.delete("abc")
        assert not await cache.has("abc")
        assert await raw_keys(client) == {b"a"}


async def test_ttl_becomes_px_and_none_means_no_expiry(redis: RedisServer) -> None:
    async with open_redis(redis.url) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        start = trio.current_time()
        await cache.set("ttl", 1, ttl_seconds=5)
        remaining = await pttl(client, "mega:cache:shop:ttl")
        elapsed_ms = (trio.current_time() - start) * 1000  # Redis counts down meanwhile
        assert 5_000 - elapsed_ms - 1 <= remaining <= 5_000
        await cache.set("forever", 2)
        assert await pttl(client, "mega:cache:shop:forever") == -1
        await cache.set("ttl", 3)  # a plain SET clears the old expiry
        assert await pttl(client, "mega:cache:shop:ttl") == -1


async def test_redis_expires_entries_itself(redis: RedisServer) -> None:
    async with open_redis(redis.url) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        await cache.set("short", "v", ttl_seconds=0.05)
        assert await cache.get("short") == "v"

        # Only Redis' clock is involved here: poll until it has expired the key.
        async def expired() -> bool:
            return await cache.get("short") is None

        await wait_until(expired)
        assert not await cache.has("short")
        assert await raw_keys(client) == set()


async def test_get_or_set_computes_once_for_concurrent_misses(redis: RedisServer) -> None:
    async with open_redis(redis.url) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        calls = 0
        results: list[object] = []

        async def compute() -> dict[str, int]:
            nonlocal calls
            calls += 1
            await trio.sleep(0.05)
            return {"answer": 42}

        async def reader() -> None:
            results.append(await cache.get_or_set("slow", compute, ttl_seconds=60))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(reader)
        assert calls == 1
        assert results == [{"answer": 42}] * 20
        assert await client.get("mega:cache:shop:slow") == b'{"answer":42}'
        assert 59_000 < await pttl(client, "mega:cache:shop:slow") <= 60_000
        assert await cache.get_or_set("slow", compute) == {"answer": 42}
        assert calls == 1


async def test_a_write_refused_by_maxmemory_noeviction_raises_cache_unavailable(
    redis: RedisServer,
) -> None:
    async with open_redis(redis.url) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        await cache.set("kept", 1)
        old = await client.execute("CONFIG", "GET", "maxmemory*")
        assert isinstance(old, list)
        await client.execute("CONFIG", "SET", "maxmemory-policy", "noeviction", "maxmemory", 1)
        try:
            with pytest.raises(CacheUnavailable, match=r"cache SET 'mega:cache:shop:new'.*OOM"):
                await cache.set("new", 2)
            assert await cache.get("kept") == 1  # reads still work
        finally:
            await client.execute("CONFIG", "SET", *old)


async def test_a_key_of_another_type_is_a_bug_not_an_outage(redis: RedisServer) -> None:
    async with open_redis(redis.url) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        await client.execute("RPUSH", "mega:cache:shop:list", b"x")
        with pytest.raises(WrongTypeError):
            await cache.get("list")


# -- cancellation ---------------------------------------------------------------------------


async def test_a_cancelled_command_leaves_its_connection_in_sync(redis: RedisServer) -> None:
    async with open_redis(redis.url) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        for key in ("k1", "k2", "k3"):
            await cache.set(key, key.upper())
        with frozen(redis), trio.move_on_after(0.1) as scope:
            await cache.get("k1")
        assert scope.cancelled_caught
        # The reply to the cancelled GET arrives now and is dropped, not handed to the next.
        assert await cache.get("k2") == "K2"
        assert await cache.get("k3") == "K3"
        assert await cache.get("k1") == "K1"


async def test_cancelling_while_connecting_is_a_cancellation_and_leaks_no_pool_slot(
    redis: RedisServer,
) -> None:
    async with open_redis(redis.url, max_connections=2) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        await cache.set("k", "v")
        client.disconnect()  # the next command has to connect again
        with frozen(redis):
            # The TCP connect succeeds (the kernel accepts), the HELLO handshake hangs.
            for _ in range(4):  # more than max_connections
                with trio.move_on_after(0.1) as scope:
                    await cache.get("k")
                assert scope.cancelled_caught  # not CacheUnavailable
        with trio.fail_after(2):  # a leaked slot would make this wait forever
            assert await cache.get("k") == "v"


# -- outages --------------------------------------------------------------------------------


async def test_a_stopped_server_raises_cache_unavailable_then_the_client_recovers(
    redis: RedisServer,
) -> None:
    async with open_redis(
        redis.url, connect_timeout_seconds=0.5, stream_timeout_seconds=0.5
    ) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        await cache.set("k", "v")
        redis.stop()
        start = trio.current_time()
        with pytest.raises(CacheUnavailable, match="cache GET 'mega:cache:shop:k' failed") as info:
            await cache.get("k")
        assert info.value.__cause__ is not None
        with pytest.raises(CacheUnavailable, match="cache SET"):
            await cache.set("k", "new")

        async def compute() -> str:
            raise AssertionError("no computing when the cache cannot be read")

        with pytest.raises(CacheUnavailable):
            await cache.get_or_set("k", compute)
        assert trio.current_time() - start < 1.0  # refused at once: no waiting for timeouts
        redis.start()  # same port; the restarted server has no data (no persistence)
        assert await cache.get("k") is None
        await cache.set("k", "after")
        assert await cache.get("k") == "after"


async def test_a_frozen_server_raises_cache_unavailable_after_the_stream_timeout(
    redis: RedisServer,
) -> None:
    async with open_redis(redis.url, stream_timeout_seconds=0.5) as client:
        cache = Cache(RedisCache(client), namespace="shop")
        await cache.set("a", "A")
        await cache.set("b", "B")
        with frozen(redis):
            start = trio.current_time()
            with pytest.raises(CacheUnavailable, match="timed out"):
                await cache.get("a")
            elapsed = trio.current_time() - start
        assert 0.5 <= elapsed < 0.95  # one timeout: a timed-out command is not retried
        assert await cache.get("b") == "B"  # the late reply to the timed-out GET was dropped


# -- in the runtime -------------------------------------------------------------------------


async def test_in_a_runtime_the_cleaner_is_a_supervised_child_that_stops_on_request(
    redis: RedisServer,
) -> None:
    async with open_redis(redis.url) as client:
        start = trio.current_time()
        async with mega_runtime(name="shop", grace_seconds=5) as rt:
            cache = await rt.enter_async_context(open_cache(rt, "default", RedisCache(client)))
            assert rt.cache() is cache
            children = {child["name"]: child for child in rt.snapshot()["children"]}
            assert children["cache-default"]["state"] == "running"

            async def worker(*, task_status: trio.TaskStatus[None]) -> None:
                await cache.set("seen", True)
                task_status.started()
                await trio.sleep_forever()

            await rt.start_child(ChildSpec("worker", worker, shutdown_seconds=0))
        assert trio.current_time() - start < 1.0  # the cleaner returned on the stop request
        assert await client.get("mega:cache:shop:seen") == b"true"


async def test_the_cleaner_outside_a_supervisor_waits_until_cancelled(redis: RedisServer) -> None:
    async with open_redis(redis.url) as client:
        with trio.move_on_after(0.05) as scope:
            await RedisCache(client).serve_cleaner()
        assert scope.cancelled_caught


def test_open_redis_as_a_runtime_resource(redis: RedisServer) -> None:
    # A trio.run of its own, as an application would have: the pool's task group is held by
    # the runtime's resource holder task and closed after every child stopped.
    async def main() -> None:
        async with mega_runtime(name="shop", grace_seconds=5) as rt:
            client = await rt.enter_async_context(open_redis(redis.url))
            cache = await rt.enter_async_context(open_cache(rt, "default", RedisCache(client)))
            await cache.set("k", 1)
        assert await _get_raw(redis, "mega:cache:shop:k") == b"1"

    trio.run(main)


async def _get_raw(redis: RedisServer, key: str) -> bytes | None:
    async with open_redis(redis.url) as client:
        return await client.get(key)
