"""TTLLRU (the memory cache's store) against a list-based reference model.

Invariants: entry count and bytes never exceed the caps; ``get`` never returns an expired
value; what ``get`` returns is the last value set for that key; eviction is least recently
used, expired entries are never counted as capacity drops.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from megatrio._policy._ttl_lru import TTLLRU

keys = st.sampled_from([f"k{i}" for i in range(8)])
values = st.binary(min_size=0, max_size=12)
ttls = st.none() | st.sampled_from([0.5, 1.0, 2.0, 5.0])


class TTLLRUMachine(RuleBasedStateMachine):
    @initialize(max_entries=st.integers(1, 5), max_bytes=st.none() | st.integers(12, 40))
    def setup(self, max_entries: int, max_bytes: int | None) -> None:
        self.store = TTLLRU(max_entries, max_bytes)
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.now = 0.0
        # Reference: recency-ordered list of [key, value, expires_at], oldest first.
        self.model: list[list[object]] = []
        self.capacity_drops = 0
        self.expired_drops = 0

    def _find(self, key: str) -> int | None:
        for index, (k, _, _) in enumerate(self.model):
            if k == key:
                return index
        return None

    @rule(key=keys, value=values, ttl=ttls)
    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if self.max_bytes is not None and len(value) > self.max_bytes:
            return
        self.store.set(key, value, self.now, ttl)
        index = self._find(key)
        if index is not None:
            del self.model[index]
        expires = float("inf") if ttl is None else self.now + ttl
        self.model.append([key, value, expires])
        while len(self.model) > self.max_entries or (
            self.max_bytes is not None and sum(len(v) for _, v, _ in self.model) > self.max_bytes  # type: ignore[arg-type]
        ):
            self.model.pop(0)
            self.capacity_drops += 1

    @rule(key=keys)
    def get(self, key: str) -> None:
        got = self.store.get(key, self.now)
        index = self._find(key)
        if index is None:
            assert got is None
            return
        _, value, expires = self.model[index]
        if expires <= self.now:  # type: ignore[operator]
            assert got is None, "an expired value was returned"
            del self.model[index]
            self.expired_drops += 1
        else:
            assert got == value
            self.model.append(self.model.pop(index))

    @rule(key=keys)
    def delete(self, key: str) -> None:
        index = self._find(key)
        assert self.store.delete(key) is (index is not None)
        if index is not None:
            del self.model[index]

    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def sweep(self) -> None:
        expired = [e for e in self.model if e[2] <= self.now]  # type: ignore[operator]
        assert self.store.sweep(self.now) == len(expired)
        self.model = [e for e in self.model if e not in expired]
        self.expired_drops += len(expired)

    @invariant()
    def within_caps_and_like_the_model(self) -> None:
        assert len(self.store) <= self.max_entries
        if self.max_bytes is not None:
            assert self.store.total_bytes <= self.max_bytes
        assert len(self.store) == len(self.model)
        assert self.store.drops["capacity"] == self.capacity_drops
        assert self.store.drops["expired"] == self.expired_drops


TestTTLLRU = TTLLRUMachine.TestCase
