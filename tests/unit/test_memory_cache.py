"""Cache facade over the memory driver: namespacing, JSON, TTL, LRU caps, single-flight."""

from __future__ import annotations

import pytest
import trio

import megatrio
from megatrio.services.stores._cache import Cache, MemoryCache

from ..helpers import task_names

pytestmark = pytest.mark.anyio


def cache(**kwargs: object) -> tuple[Cache, MemoryCache]:
    driver = MemoryCache(**kwargs)  # type: ignore[arg-type]
    return Cache(driver, namespace="shop"), driver


async def test_round_trip_with_namespaced_keys_and_json_values() -> None:
    c, driver = cache()
    await c.set("user:1", {"name": "ana", "tags": [1, 2]})
    assert await c.get("user:1") == {"name": "ana", "tags": [1, 2]}
    assert await driver.get("mega:cache:shop:user:1") == b'{"name":"ana","tags":[1,2]}'
    other = Cache(driver, namespace="blog")
    assert await other.get("user:1") is None  # same driver, other app: no collision
    assert await c.has("user:1")
    assert await c.delete("user:1")
    assert not await c.delete("user:1")
    assert await c.get("user:1", "dflt") == "dflt"


async def test_ttl_expiry_is_exact_and_never_returns_expired_values() -> None:
    c, driver = cache()
    await c.set("k", 1, ttl_seconds=10)
    await trio.sleep(9.999)
    assert await c.get("k") == 1
    await trio.sleep(0.001)
    assert await c.get("k") is None
    assert driver.drops == {"expired": 1}


async def test_lru_eviction_respects_entry_and_byte_caps() -> None:
    c, driver = cache(max_entries=2)
    await c.set("a", 1)
    await c.set("b", 2)
    await c.get("a")  # "b" is now the least recently used
    await c.set("c", 3)
    assert [await c.has(k) for k in "abc"] == [True, False, True]
    assert driver.drops == {"capacity": 1}
    c, driver = cache(max_entries=100, max_bytes=10)
    await c.set("x", "12345")  # 7 bytes of JSON
    await c.set("y", "1")  # 3 bytes: 10 in all
    await c.set("z", "1")  # 13 > 10: "x" goes
    assert len(driver) == 2
    with pytest.raises(ValueError, match="exceeds max_bytes=10 for key 'mega:cache:shop:big'"):
        await c.set("big", "x" * 20)


async def test_bad_values_and_keys_are_named() -> None:
    c, _ = cache()
    with pytest.raises(TypeError, match="cache value for key 'k' is not JSON-serialisable"):
        await c.set("k", object())
    with pytest.raises(TypeError, match="cache value for key 'nan'"):
        await c.set("nan", float("nan"))
    with pytest.raises(TypeError, match="cache keys are strings, got int"):
        await c.get(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl_seconds must be > 0"):
        await c.set("k", 1, ttl_seconds=0)
    with pytest.raises(ValueError, match="max_entries must be >= 1"):
        MemoryCache(max_entries=0)


async def test_get_or_set_computes_once_for_concurrent_misses() -> None:
    c, _ = cache()
    calls = 0

    async def compute() -> dict[str, int]:
        nonlocal calls
        calls += 1
        await trio.sleep(1)
        return {"v": calls}

    results: list[object] = []
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(lambda: _append(results, c.get_or_set("k", compute)))
    assert calls == 1
    assert results == [{"v": 1}] * 10
    assert await c.get_or_set("k", compute) == {"v": 1}  # cached now


async def _append(results: list[object], awaitable: object) -> None:
    results.append(await awaitable)  # type: ignore[misc]


async def test_get_or_set_shares_errors_and_survives_a_cancelled_computer() -> None:
    c, _ = cache()

    async def boom() -> int:
        await trio.sleep(1)
        raise RuntimeError("backend down")

    errors: list[str] = []

    async def waiter() -> None:
        try:
            await c.get_or_set("k", boom)
        except RuntimeError as exc:
            errors.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
    assert errors == ["backend down", "backend down"]

    # The first caller is cancelled mid-compute: the waiter computes itself, no hang.
    async def slow() -> int:
        await trio.sleep(5)
        return 7

    got: list[int] = []
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as first:
            nursery.start_soon(lambda: _append(got, c.get_or_set("j", slow)))
            await trio.sleep(1)
            first.cancel()
        async with trio.open_nursery() as inner:
            inner.start_soon(lambda: _append(got, c.get_or_set("j", slow)))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert got in ([7], [])  # whoever finished first; nothing hung, nothing leaked
    assert not c._flights


async def test_the_cleaner_sweeps_as_a_supervised_child_and_stops_with_the_tree() -> None:
    driver = MemoryCache(sweep_interval_seconds=5)
    c = Cache(driver, namespace="app")
    async with megatrio.mega_runtime(name="cc") as rt:
        await rt.start_child(megatrio.ChildSpec("cache-sweep", driver.serve_cleaner))
        for i in range(10):
            await c.set(f"k{i}", i, ttl_seconds=1 + i)
        await trio.sleep(5.5)
        assert len(driver) == 5  # k0..k4 expire at or before the 5 s sweep: gone, unread
        assert driver.drops == {"expired": 5}
    assert task_names("cc/") == []
