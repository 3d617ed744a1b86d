"""Replay protection: remember (sender, nonce) until its message could no longer be accepted.

Sans-IO: every method takes ``now``. :class:`NonceStore` is the contract of every store built
on these verdicts; it is defined here, below the runtime, so that ``Runtime.nonces`` is typed
without the runtime importing the stores layer (a Protocol imports no event loop).
"""

from __future__ import annotations

import collections
import enum
import heapq
import math
from typing import Protocol, final

from ._checks import check_count, check_seconds


class NonceVerdict(enum.Enum):
    """What :meth:`NonceWindow.check` decided."""

    ACCEPTED = "accepted"
    """First time seen within its lifetime: the message may be processed."""
    REPLAY = "replay"
    """Seen before and still remembered: reject."""
    STALE = "stale"
    """Its timestamp is outside ``now ± skew``: reject (it could be an old replay)."""
    FULL = "full"
    """The store is at its cap: reject (fail closed) rather than forget or grow."""

    @property
    def accepted(self) -> bool:
        return self is NonceVerdict.ACCEPTED


class NonceStore(Protocol):
    """Decides whether a message is fresh and new; remembers it when it is."""

    async def check(self, sender: str, nonce: str, timestamp: float) -> NonceVerdict:
        """Accept (and remember) or reject the message (sender, nonce) sent at *timestamp*."""
        ...


@final
class NonceWindow:
    """Remembers each accepted (sender, nonce) until ``timestamp + skew_seconds``.

    A message is fresh when ``|now - timestamp| <= skew_seconds``; after
    ``timestamp + skew_seconds`` it would be rejected as stale anyway, so its nonce can be
    forgotten. Expiry is O(1) amortised: entries live in buckets of *bucket_seconds* by expiry
    time, and whole buckets are dropped once they are past. At most *max_entries* are kept;
    beyond that new messages are rejected (:attr:`NonceVerdict.FULL`).
    """

    __slots__ = (
        "_bucket_heap",
        "_buckets",
        "_expiry",
        "accepted",
        "bucket_seconds",
        "max_entries",
        "rejected",
        "skew_seconds",
    )

    def __init__(
        self, *, skew_seconds: float, max_entries: int, bucket_seconds: float = 1.0
    ) -> None:
        self.skew_seconds = check_seconds("skew_seconds", skew_seconds, allow_inf=False)
        self.max_entries = check_count("max_entries", max_entries, minimum=1)
        self.bucket_seconds = check_seconds(
            "bucket_seconds", bucket_seconds, allow_zero=False, allow_inf=False
        )
        self._expiry: dict[tuple[str, str], float] = {}
        self._buckets: dict[int, list[tuple[str, str]]] = {}
        self._bucket_heap: list[int] = []
        self.rejected: collections.Counter[str] = collections.Counter()
        self.accepted = 0

    def __len__(self) -> int:
        return len(self._expiry)

    def check(self, sender: str, nonce: str, timestamp: float, now: float) -> NonceVerdict:
        """Decide on a message and remember it when accepted."""
        if math.isnan(timestamp) or abs(now - timestamp) > self.skew_seconds:
            return self._reject(NonceVerdict.STALE)
        self._expire(now)
        key = (sender, nonce)
        known = self._expiry.get(key)
        # Fresh means |now - timestamp| <= skew, so a nonce must be remembered while
        # now <= timestamp + skew: equality included.
        if known is not None and known >= now:
            return self._reject(NonceVerdict.REPLAY)
        if known is None and len(self._expiry) >= self.max_entries:
            return self._reject(NonceVerdict.FULL)
        expires_at = timestamp + self.skew_seconds
        self._expiry[key] = expires_at
        bucket = math.floor(expires_at / self.bucket_seconds)
        keys = self._buckets.get(bucket)
        if keys is None:
            keys = self._buckets[bucket] = []
            heapq.heappush(self._bucket_heap, bucket)
        keys.append(key)
        self.accepted += 1
        return NonceVerdict.ACCEPTED

    def _reject(self, verdict: NonceVerdict) -> NonceVerdict:
        self.rejected[verdict.value] += 1
        return verdict

    def _expire(self, now: float) -> None:
        # A bucket b holds expiries in [b*s, (b+1)*s): all strictly past once (b+1)*s <= now.
        heap = self._bucket_heap
        while heap and (heap[0] + 1) * self.bucket_seconds <= now:
            for key in self._buckets.pop(heapq.heappop(heap)):
                expiry = self._expiry.get(key)
                if expiry is not None and expiry < now:
                    del self._expiry[key]
