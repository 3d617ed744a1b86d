"""open_cache and open_nonces: stores registered on an embedded runtime for a block, not forever."""

from __future__ import annotations

import time

import anyio
import anyio.abc
import pytest
import trio

import megatrio
from megatrio import (
    MemoryCache,
    MemoryNonceStore,
    NonceVerdict,
    mega_runtime,
    open_cache,
    open_nonces,
)

from ..helpers import task_names

pytestmark = pytest.mark.anyio


def children(rt: megatrio.Runtime) -> dict[str, str]:
    return {child["name"]: child["state"] for child in rt.snapshot()["children"]}


# -- open_cache -----------------------------------------------------------------------------


async def test_open_cache_registers_for_the_block_and_stops_its_cleaner_on_exit() -> None:
    driver = MemoryCache(sweep_interval_seconds=5)
    async with mega_runtime(name="shop") as rt:
        async with open_cache(rt, "pages", driver) as cache:
            assert rt.cache("pages") is cache
            assert (cache.namespace, cache.alias) == ("shop", "pages")
            assert children(rt) == {"cache-pages": "running"}
            assert task_names("shop/cache-pages")
            await cache.set("k", [1], ttl_seconds=1)
            assert await rt.cache("pages").get("k") == [1]
            await trio.sleep(5.5)
            assert driver.drops == {"expired": 1}  # swept by the cleaner child
            exit_began = trio.current_time()
        # The cleaner heard the stop request while waiting for its next tick: no delay.
        assert trio.current_time() == exit_began
        assert children(rt) == {}
        assert task_names("shop/cache-pages") == []
        with pytest.raises(
            LookupError, match=r"no cache 'pages' in runtime 'shop' \(known: none\)"
        ):
            rt.cache("pages")
        # The alias is free again, and the runtime still runs.
        async with open_cache(rt, "pages", MemoryCache()) as again:
            assert rt.cache("pages") is again
    assert task_names("shop/") == []


async def test_an_awaited_open_cache_stays_open_until_the_runtime_has_stopped() -> None:
    seen_during_stop: list[object] = []

    async def uses_the_cache_while_stopping(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        ctx = megatrio.current_child()
        assert ctx is not None
        await ctx.wait_stopping()
        seen_during_stop.append(await rt.cache("pages").get("k"))

    driver = MemoryCache()
    async with mega_runtime(name="shop") as rt:
        cache = await open_cache(rt, "pages", driver)
        assert rt.cache("pages") is cache
        await cache.set("k", "v")
        await rt.start_child(megatrio.ChildSpec("user", uses_the_cache_while_stopping))
        assert children(rt) == {"cache-pages": "running", "user": "running"}
    # Closed with the runtime's resources: after the children, which could still use it.
    assert seen_during_stop == ["v"]
    with pytest.raises(LookupError, match="no cache 'pages'"):
        rt.cache("pages")
    assert task_names("shop/") == []


async def test_a_second_cache_under_the_same_alias_is_refused() -> None:
    async with mega_runtime(name="shop") as rt, open_cache(rt, "default", MemoryCache()) as first:
        with pytest.raises(ValueError, match="runtime 'shop' already has a cache 'default'"):
            async with open_cache(rt, "default", MemoryCache()):
                pytest.fail("entered")  # pragma: no cover
        assert rt.cache() is first
        assert children(rt) == {"cache-default": "running"}


async def test_caches_under_other_aliases_are_independent() -> None:
    async with mega_runtime(name="shop") as rt:
        async with open_cache(rt, "a", MemoryCache()) as a:
            async with open_cache(rt, "b", MemoryCache()):
                assert rt.caches.names() == ["a", "b"]
            assert rt.caches.names() == ["a"]
            assert rt.cache("a") is a
            assert children(rt) == {"cache-a": "running"}
        with pytest.raises(LookupError, match=r"no cache 'b' in runtime 'shop' \(known: none\)"):
            rt.cache("b")


@pytest.mark.parametrize("how", ["cancel", "stop", "outer"])
async def test_exit_while_the_runtime_is_cancelled_or_stopping(how: str) -> None:
    start = trio.current_time()
    registered: list[megatrio.Runtime] = []
    with trio.move_on_after(60 if how == "outer" else 3600) as outer:
        async with mega_runtime(name="shop", grace_seconds=30) as rt:
            registered.append(rt)
            async with open_cache(rt, "default", MemoryCache()):
                if how == "cancel":
                    rt.cancel()
                elif how == "stop":
                    rt.stop()
                await trio.sleep_forever()
    assert outer.cancelled_caught == (how == "outer")
    # Well within the cleaner's 5 s shield: the exit did not wait out its bound.
    assert trio.current_time() - start == (60 if how == "outer" else 0)
    assert len(registered[0].caches) == 0
    assert task_names("shop/") == []


async def test_an_error_in_the_block_still_stops_the_cleaner_and_unregisters() -> None:
    with pytest.raises(KeyError, match="boom"):
        async with mega_runtime(name="shop") as rt, open_cache(rt, "default", MemoryCache()):
            raise KeyError("boom")
    assert len(rt.caches) == 0
    assert task_names("shop/") == []


async def test_a_cleaner_that_cannot_start_leaves_nothing_registered() -> None:
    driver = MemoryCache()

    async def failing_cleaner(
        *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        raise OSError("no directory")

    driver.serve_cleaner = failing_cleaner  # type: ignore[method-assign]
    async with mega_runtime(name="shop") as rt:
        with pytest.raises(megatrio.StartupFailed):
            async with open_cache(rt, "default", driver):
                pytest.fail("entered")  # pragma: no cover
        assert "default" not in rt.caches
        async with open_cache(rt, "default", MemoryCache()):
            assert children(rt) == {"cache-default": "running"}


# -- open_nonces ----------------------------------------------------------------------------


async def test_without_a_nonce_store_rt_nonces_says_how_to_open_one() -> None:
    async with mega_runtime(name="shop") as rt:
        with pytest.raises(LookupError, match=r"runtime 'shop' has no nonce store: .*open_nonces"):
            _ = rt.nonces


async def test_open_nonces_installs_the_store_for_the_block() -> None:
    store = MemoryNonceStore(skew_seconds=60)
    async with mega_runtime(name="shop") as rt:
        async with open_nonces(rt, store) as nonces:
            assert nonces is store
            assert rt.nonces is store
            now = time.time()
            assert await rt.nonces.check("bank", "n-1", now) is NonceVerdict.ACCEPTED
            assert await rt.nonces.check("bank", "n-1", now) is NonceVerdict.REPLAY
            with pytest.raises(ValueError, match="runtime 'shop' already has a nonce store"):
                async with open_nonces(rt, MemoryNonceStore()):
                    pytest.fail("entered")  # pragma: no cover
            assert rt.nonces is store
        with pytest.raises(LookupError, match="open_nonces"):
            _ = rt.nonces


async def test_open_nonces_exit_under_cancellation_uninstalls() -> None:
    registered: list[megatrio.Runtime] = []
    with trio.move_on_after(1):
        async with mega_runtime(name="shop") as rt:
            registered.append(rt)
            async with open_nonces(rt, MemoryNonceStore()):
                await trio.sleep_forever()
    with pytest.raises(LookupError, match="has no nonce store"):
        _ = registered[0].nonces
