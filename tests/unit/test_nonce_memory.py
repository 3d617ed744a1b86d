"""MemoryNonceStore: replay, staleness, expiry from the message timestamp, fail-closed cap."""

from __future__ import annotations

import pytest

from megatrio.services.stores._nonce import MemoryNonceStore, NonceVerdict

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_accepts_once_rejects_replays_until_timestamp_plus_skew() -> None:
    clock = Clock()
    store = MemoryNonceStore(skew_seconds=30, max_entries=10, clock=clock)
    t = clock.now - 10  # sent 10 s ago
    assert await store.check("alice", "n1", t) is NonceVerdict.ACCEPTED
    assert await store.check("alice", "n1", t) is NonceVerdict.REPLAY
    assert await store.check("bob", "n1", t) is NonceVerdict.ACCEPTED  # keyed by sender too
    clock.now = t + 30  # the message is at the edge of freshness: still remembered
    assert await store.check("alice", "n1", t) is NonceVerdict.REPLAY
    clock.now = t + 30.5  # past timestamp + skew: the message itself is stale now
    assert await store.check("alice", "n1", t) is NonceVerdict.STALE
    assert store.rejected == {"replay": 2, "stale": 1}


async def test_future_and_past_timestamps_outside_the_skew_are_stale() -> None:
    clock = Clock()
    store = MemoryNonceStore(skew_seconds=5, clock=clock)
    assert await store.check("a", "x", clock.now + 6) is NonceVerdict.STALE
    assert await store.check("a", "y", clock.now - 6) is NonceVerdict.STALE
    assert await store.check("a", "z", float("nan")) is NonceVerdict.STALE
    assert len(store) == 0


async def test_the_cap_fails_closed_and_expiry_frees_room() -> None:
    clock = Clock()
    store = MemoryNonceStore(skew_seconds=10, max_entries=3, clock=clock)
    for i in range(3):
        assert (await store.check("s", f"n{i}", clock.now)).accepted
    assert await store.check("s", "n3", clock.now) is NonceVerdict.FULL
    assert len(store) == 3
    clock.now += 12  # every remembered nonce has outlived its message
    assert (await store.check("s", "n3", clock.now)).accepted
    assert len(store) == 1
    assert store.rejected == {"full": 1}
