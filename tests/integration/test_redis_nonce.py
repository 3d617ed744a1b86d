"""RedisNonceStore against a private, real redis-server: accept once, replays and stale
messages rejected, TTL from the message timestamp, shared between stores, fail-closed."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest
import trio

from megatrio._policy._nonces import NonceVerdict
from megatrio.services.stores._redis import NonceStoreUnavailable, RedisClient, open_redis
from megatrio.services.stores._redis_nonce import RedisNonceStore

from ..servers import RedisServer
from .redis_support import pttl, raw_keys

pytestmark = pytest.mark.anyio

SKEW = 300.0


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


class Clock:
    """Wall-clock time, frozen: the store's idea of now, set by the test."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


async def nonce_keys(client: RedisClient) -> set[bytes]:
    return await raw_keys(client, "mega:nonce:*")


async def test_accepts_once_then_rejects_the_replay(redis: RedisServer) -> None:
    clock = Clock()
    async with open_redis(redis.url) as client:
        store = RedisNonceStore(client, namespace="api", clock=clock)
        t = clock.now - 10
        assert await store.check("alice", "n1", t) is NonceVerdict.ACCEPTED
        assert await store.check("alice", "n1", t) is NonceVerdict.REPLAY
        assert await store.check("alice", "n1", t + 1) is NonceVerdict.REPLAY  # same nonce
        assert await store.check("bob", "n1", t) is NonceVerdict.ACCEPTED  # keyed by sender
        assert await store.check("alice", "n2", t) is NonceVerdict.ACCEPTED
        assert store.rejected == {"replay": 2}
        assert store.accepted == 3
        checks = {dict(s.labels)["verdict"]: s.value for s in store.samples()}
        assert checks == {"accepted": 3, "replay": 2, "stale": 0, "full": 0}
        assert await nonce_keys(client) == {
            b"mega:nonce:api:alice:n1",
            b"mega:nonce:api:bob:n1",
            b"mega:nonce:api:alice:n2",
        }


async def test_stale_messages_are_rejected_without_touching_redis(redis: RedisServer) -> None:
    clock = Clock()
    async with open_redis(redis.url) as client:
        store = RedisNonceStore(client, namespace="api", skew_seconds=5, clock=clock)
        for timestamp in (clock.now - 5.001, clock.now + 5.001, math.nan, math.inf, -math.inf):
            assert await store.check("a", "x", timestamp) is NonceVerdict.STALE
        assert store.rejected == {"stale": 5}
        assert await nonce_keys(client) == set()
        # The edges of the window are fresh.
        assert await store.check("a", "early", clock.now - 5) is NonceVerdict.ACCEPTED
        assert await store.check("a", "late", clock.now + 5) is NonceVerdict.ACCEPTED


async def test_the_key_lives_until_timestamp_plus_skew(redis: RedisServer) -> None:
    clock = Clock()  # the real time, so Redis' clock and the store's agree
    async with open_redis(redis.url) as client:
        store = RedisNonceStore(client, namespace="api", skew_seconds=SKEW, clock=clock)
        cases = {"past": clock.now - 100, "now": clock.now, "future": clock.now + 100}
        start = trio.current_time()
        for nonce, timestamp in cases.items():
            assert (await store.check("s", nonce, timestamp)).accepted
        ttls = {nonce: await pttl(client, store.key("s", nonce)) for nonce in cases}
        elapsed_ms = (trio.current_time() - start) * 1000  # Redis counts down meanwhile
        for nonce, timestamp in cases.items():
            expected_ms = (timestamp + SKEW - clock.now) * 1000
            assert expected_ms - elapsed_ms - 1 <= ttls[nonce] <= expected_ms + 1, nonce
        # At the very edge the message is still fresh: remembered for 1 ms (maybe gone now).
        assert (await store.check("s", "edge", clock.now - SKEW)).accepted
        assert await pttl(client, store.key("s", "edge")) <= 1


async def test_two_stores_on_one_namespace_reject_each_others_replays(
    redis: RedisServer,
) -> None:
    clock = Clock()
    # Two clients, as two worker processes would have.
    async with open_redis(redis.url) as one, open_redis(redis.url) as two:
        first = RedisNonceStore(one, namespace="api", clock=clock)
        second = RedisNonceStore(two, namespace="api", clock=clock)
        other_app = RedisNonceStore(two, namespace="billing", clock=clock)
        assert await first.check("alice", "n1", clock.now) is NonceVerdict.ACCEPTED
        assert await second.check("alice", "n1", clock.now) is NonceVerdict.REPLAY
        assert await second.check("alice", "n2", clock.now) is NonceVerdict.ACCEPTED
        assert await first.check("alice", "n2", clock.now) is NonceVerdict.REPLAY
        assert await other_app.check("alice", "n1", clock.now) is NonceVerdict.ACCEPTED
        assert first.rejected == {"replay": 1}
        assert second.rejected == {"replay": 1}


async def test_concurrent_checks_of_one_message_accept_exactly_one(redis: RedisServer) -> None:
    clock = Clock()
    verdicts: list[NonceVerdict] = []
    async with open_redis(redis.url) as one, open_redis(redis.url) as two:
        stores = [RedisNonceStore(c, namespace="api", clock=clock) for c in (one, two)]

        async def check(store: RedisNonceStore) -> None:
            verdicts.append(await store.check("alice", "race", clock.now))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(check, stores[i % 2])
    assert verdicts.count(NonceVerdict.ACCEPTED) == 1
    assert verdicts.count(NonceVerdict.REPLAY) == 19


async def test_colons_in_sender_or_nonce_cannot_make_two_messages_share_a_key(
    redis: RedisServer,
) -> None:
    clock = Clock()
    pairs = [("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c"), ("a", "b%3Ac"), ("", "a:b:c"), ("é", ":")]
    async with open_redis(redis.url) as client:
        store = RedisNonceStore(client, namespace="api", clock=clock)
        for sender, nonce in pairs:
            assert await store.check(sender, nonce, clock.now) is NonceVerdict.ACCEPTED
        for sender, nonce in pairs:
            assert await store.check(sender, nonce, clock.now) is NonceVerdict.REPLAY
        keys = await nonce_keys(client)
        assert len(keys) == len(pairs)
        assert b"mega:nonce:api:a%3Ab:c" in keys
        assert b"mega:nonce:api:a:b%3Ac" in keys
        assert b"mega:nonce:api:a%253Ab:c" in keys
        # After the namespace, exactly one raw ':' separates sender and nonce.
        assert all(key.count(b":") == 4 for key in keys)


def test_the_namespace_must_not_contain_a_colon() -> None:
    with pytest.raises(ValueError, match="nonce namespace must be non-empty without ':'"):
        RedisNonceStore(None, namespace="a:b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nonce namespace"):
        RedisNonceStore(None, namespace="")  # type: ignore[arg-type]


async def test_a_stopped_server_fails_closed_then_the_store_recovers(redis: RedisServer) -> None:
    clock = Clock()
    async with open_redis(
        redis.url, connect_timeout_seconds=0.5, stream_timeout_seconds=0.5
    ) as client:
        store = RedisNonceStore(client, namespace="api", clock=clock)
        assert (await store.check("alice", "n1", clock.now)).accepted
        redis.stop()
        start = trio.current_time()
        for nonce in ("n1", "n2"):
            with pytest.raises(NonceStoreUnavailable, match="rejecting") as info:
                await store.check("alice", nonce, clock.now)
            assert info.value.__cause__ is not None
        assert trio.current_time() - start < 1.0
        # Staleness needs no Redis: still answered.
        assert await store.check("alice", "n3", clock.now - 2 * SKEW) is NonceVerdict.STALE
        redis.start()
        assert (await store.check("alice", "n2", clock.now)).accepted
        assert await store.check("alice", "n2", clock.now) is NonceVerdict.REPLAY


async def test_a_frozen_server_fails_closed_after_the_stream_timeout(redis: RedisServer) -> None:
    clock = Clock()
    async with open_redis(redis.url, stream_timeout_seconds=0.5) as client:
        store = RedisNonceStore(client, namespace="api", clock=clock)
        assert redis.proc is not None
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            start = trio.current_time()
            with pytest.raises(NonceStoreUnavailable, match="timed out"):
                await store.check("alice", "n1", clock.now)
            assert trio.current_time() - start < 0.95  # one timeout, no retry
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        # The timed-out SET NX did reach Redis once it woke: the message stays rejected.
        with trio.fail_after(2):
            while True:
                if await client.exists(store.key("alice", "n1")):
                    break
                await trio.sleep(0.01)
        assert await store.check("alice", "n1", clock.now) is NonceVerdict.REPLAY
