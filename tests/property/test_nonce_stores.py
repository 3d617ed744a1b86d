"""Nonce stores against a no-eviction reference model of the replay-protection contract.

The contract: a message ``(sender, nonce, timestamp)`` is fresh while
``|now - timestamp| <= skew``; an accepted nonce is remembered while
``now <= timestamp + skew`` (equality included: at that instant the message is still fresh),
so no fresh message can reuse it. The model keeps every accepted message forever and answers
by scanning them, which is obviously right; the stores are checked against it.

``MemoryNonceStore`` gets an injected clock that jumps across whole lifetimes. The
``RedisNonceStore`` runs against the real private server, where expiry runs on Redis' own
clock while staleness and the TTL's length come from the injected one. The Redis scenarios
are therefore built so that neither clock expires anything while an example runs: the
injected time advances by at most ``SPAN`` seconds, and every fresh timestamp is late enough
that its nonce outlives that span by ``MARGIN`` seconds of Redis time too. Expiry on Redis is
checked separately, through PTTL, in the integration tests.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from megatrio._policy._nonces import NonceVerdict
from megatrio.services.stores._nonce import MemoryNonceStore, NonceStore
from megatrio.services.stores._redis import open_redis
from megatrio.services.stores._redis_nonce import RedisNonceStore

from ..servers import RedisServer

pytestmark = pytest.mark.anyio

ORIGIN = 1_000_000.0
SPAN = 50.0
MARGIN = 100.0


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # the Redis examples use real sockets, which need the real clock


# -- the model ------------------------------------------------------------------------------


class ReferenceNonces:
    """The contract as stated, with no eviction: every accepted message is kept forever."""

    def __init__(self, skew_seconds: float, max_entries: int | None) -> None:
        self.skew = skew_seconds
        self.max_entries = max_entries
        self.accepted: list[tuple[str, str, float]] = []

    def live(self, now: float) -> list[tuple[str, str, float]]:
        return [m for m in self.accepted if now <= m[2] + self.skew]

    def allowed(self, sender: str, nonce: str, timestamp: float, now: float) -> set[NonceVerdict]:
        """The verdicts the contract allows; ACCEPTED/FULL both when only the store's own
        lazily-expired bookkeeping can tell (it may still hold nonces that are past)."""
        if math.isnan(timestamp) or abs(now - timestamp) > self.skew:
            return {NonceVerdict.STALE}
        live = self.live(now)
        if any((s, n) == (sender, nonce) for s, n, _ in live):
            return {NonceVerdict.REPLAY}
        if self.max_entries is None:
            return {NonceVerdict.ACCEPTED}
        if len(live) >= self.max_entries:
            return {NonceVerdict.FULL}
        return {NonceVerdict.ACCEPTED, NonceVerdict.FULL}

    def record(self, sender: str, nonce: str, timestamp: float) -> None:
        self.accepted.append((sender, nonce, timestamp))


# -- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """``store.check(sender, nonce, timestamp)`` with the injected clock reading *now*."""

    now: float
    sender: str
    nonce: str
    timestamp: float


# Few senders and nonces, so that replays are frequent; ':' and '%' test key encoding.
senders = st.sampled_from(["alice", "bob", "a:b", "a", "a%3Ab"])
nonces = st.sampled_from(["1", "2", "b:1", "1:2", ""])


@st.composite
def scenarios(
    draw: st.DrawFn, *, forgetting: bool, max_checks: int = 40
) -> tuple[float, list[Check]]:
    """A skew and checks at non-decreasing times.

    Timestamps land on the window's edges, replay earlier messages exactly, or fall anywhere
    around ``now``. With *forgetting*, time jumps across whole lifetimes; without, time moves
    at most ``SPAN`` in all and no fresh timestamp's lifetime ends within ``SPAN + MARGIN``.
    """
    skew = draw(st.sampled_from([1.0, 5.0, 300.0]) if forgetting else st.just(300.0))
    now = ORIGIN
    checks: list[Check] = []
    if forgetting:
        # Fractions of the store's 1-second expiry buckets as well as of the skew.
        steps = st.one_of(
            st.just(0.0),
            st.sampled_from([0.25, 0.5, skew / 2, skew, 2 * skew]),
            st.floats(min_value=0.0, max_value=3 * skew),
        )
    else:
        steps = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=SPAN / max_checks))
    for _ in range(draw(st.integers(min_value=0, max_value=max_checks))):
        now += draw(steps)
        stale = [now - skew - 0.5, now + skew + 0.5, math.nan, math.inf]
        if forgetting:
            fresh_low = now - skew
            edges = [now - skew, now + skew, now]
        else:
            # A nonce accepted now must outlive the whole example, on both clocks.
            fresh_low = ORIGIN + SPAN + MARGIN - skew
            edges = [fresh_low, now + skew, now]
        choices = [
            st.sampled_from(edges),
            st.sampled_from(stale),
            st.floats(min_value=fresh_low, max_value=now + skew),
            st.floats(min_value=now - 2 * skew, max_value=now + 2 * skew),
        ]
        earlier = [c.timestamp for c in checks if forgetting or c.timestamp >= fresh_low]
        if earlier:
            choices.append(st.sampled_from(earlier))  # replay an earlier message exactly
        timestamp = draw(st.one_of(*choices))
        if not forgetting and fresh_low > timestamp >= now - skew:
            timestamp = now - skew - 0.5  # would be fresh but too short-lived: make it stale
        checks.append(Check(now, draw(senders), draw(nonces), timestamp))
    return skew, checks


class Clock:
    def __init__(self) -> None:
        self.now = ORIGIN

    def __call__(self) -> float:
        return self.now


async def run_against_model(
    store: NonceStore,
    clock: Clock,
    skew: float,
    checks: list[Check],
    *,
    max_entries: int | None,
    after_each: Callable[[NonceVerdict, ReferenceNonces, Check], None] | None = None,
) -> list[NonceVerdict]:
    """Run *checks* on *store* and on the model; every verdict must be one the model allows."""
    model = ReferenceNonces(skew, max_entries)
    verdicts: list[NonceVerdict] = []
    for index, check in enumerate(checks):
        clock.now = check.now
        allowed = model.allowed(check.sender, check.nonce, check.timestamp, check.now)
        verdict = await store.check(check.sender, check.nonce, check.timestamp)
        note(f"#{index} {check}: {verdict.name} (model allows {sorted(v.name for v in allowed)})")
        assert verdict in allowed
        if verdict is NonceVerdict.ACCEPTED:
            model.record(check.sender, check.nonce, check.timestamp)
        if after_each is not None:
            after_each(verdict, model, check)
        verdicts.append(verdict)
    # Stated directly as well: no message is accepted twice within its nonce's lifetime.
    accepted = [c for c, v in zip(checks, verdicts, strict=True) if v is NonceVerdict.ACCEPTED]
    for i, first in enumerate(accepted):
        for later in accepted[i + 1 :]:
            if (later.sender, later.nonce) == (first.sender, first.nonce):
                assert later.now > first.timestamp + skew
    return verdicts


def rejections(verdicts: list[NonceVerdict]) -> dict[str, int]:
    """What the store's ``rejected`` counter should say after *verdicts*."""
    return {v.value: verdicts.count(v) for v in set(verdicts) if v is not NonceVerdict.ACCEPTED}


# -- MemoryNonceStore -----------------------------------------------------------------------


@given(scenarios(forgetting=True), st.integers(min_value=1, max_value=6))
@example(
    # The edge: at now == timestamp + skew the message is still fresh, so still a replay.
    (5.0, [Check(ORIGIN, "a", "1", ORIGIN - 5.0), Check(ORIGIN, "a", "1", ORIGIN - 5.0)]),
    3,
)
@example(
    # At the cap, a new message fails closed; once the old nonces are past, there is room.
    (
        5.0,
        [Check(ORIGIN, "a", n, ORIGIN) for n in "123"]
        + [Check(ORIGIN + 10.0, "a", "4", ORIGIN + 10.0)],
    ),
    2,
)
@example(
    # A nonce accepted again after its first lifetime must survive the sweep of the expiry
    # bucket that held its first expiry.
    (
        1.0,
        [
            Check(ORIGIN, "a", "1", ORIGIN - 0.9),
            Check(ORIGIN + 0.5, "a", "1", ORIGIN + 0.5),
            Check(ORIGIN + 1.0, "b", "2", ORIGIN + 1.0),
            Check(ORIGIN + 1.0, "a", "1", ORIGIN + 0.5),
        ],
    ),
    5,
)
async def test_memory_store_follows_the_reference_model(
    scenario: tuple[float, list[Check]], max_entries: int
) -> None:
    skew, checks = scenario
    clock = Clock()
    store = MemoryNonceStore(skew_seconds=skew, max_entries=max_entries, clock=clock)

    def within_the_cap(verdict: NonceVerdict, model: ReferenceNonces, check: Check) -> None:
        # Never above the cap, FULL only at the cap, and no live nonce forgotten.
        assert len(store) <= max_entries
        if verdict is NonceVerdict.FULL:
            assert len(store) == max_entries
        assert len(store) >= len(model.live(check.now))

    verdicts = await run_against_model(
        store, clock, skew, checks, max_entries=max_entries, after_each=within_the_cap
    )
    assert store.rejected == rejections(verdicts)


# -- RedisNonceStore ------------------------------------------------------------------------


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios(forgetting=False))
async def test_redis_store_follows_the_reference_model(
    redis: RedisServer, scenario: tuple[float, list[Check]]
) -> None:
    skew, checks = scenario
    clock = Clock()
    async with open_redis(redis.url) as client:
        # A namespace per example: examples share the server and are not flushed in between.
        store = RedisNonceStore(client, namespace=uuid.uuid4().hex, skew_seconds=skew, clock=clock)
        verdicts = await run_against_model(store, clock, skew, checks, max_entries=None)
        assert store.rejected == rejections(verdicts)
        # One key per distinct accepted (sender, nonce): no two pairs collided on a key.
        pairs = {(c.sender, c.nonce) for c, v in zip(checks, verdicts, strict=True) if v.accepted}
        keys = await client.execute("KEYS", f"mega:nonce:{store.namespace}:*")
        assert isinstance(keys, list)
        assert len(keys) == len(pairs)
