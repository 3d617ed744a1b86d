"""A token bucket: at most *capacity* at once, refilled continuously. Sans-IO."""

from __future__ import annotations

import math
from typing import final

from ._checks import check_count, check_seconds

# Refills accumulate float rounding (20/60 per second, times 3 s, is not exactly 1.0): a token
# that is whole up to this much counts as whole.
_EPSILON = 1e-9


@final
class TokenBucket:
    """Admits at most *capacity* events at once and, over time, *rate_per_second* on average.

    The bucket starts full. Each admitted event takes one token; tokens come back continuously
    at *rate_per_second*, up to *capacity*. Every method takes ``now`` (any monotonic clock, in
    seconds); a ``now`` earlier than one seen before is treated as no time passing, so a
    clock that steps back can never mint tokens. Refused events are counted in
    :attr:`denied`. O(1) time and memory.
    """

    __slots__ = ("_last", "_tokens", "capacity", "denied", "rate_per_second")

    def __init__(self, *, capacity: int, rate_per_second: float) -> None:
        self.capacity = check_count("capacity", capacity, minimum=1)
        self.rate_per_second = check_seconds("rate_per_second", rate_per_second, allow_inf=False)
        self._tokens = float(capacity)
        self._last: float | None = None
        self.denied = 0
        """Events refused since creation."""

    @classmethod
    def per_period(cls, count: int, period_seconds: float) -> TokenBucket:
        """*count* events per *period_seconds* on average, all of them allowed in a burst.

        ``TokenBucket.per_period(20, 60)`` is "20 alerts per minute".
        """
        check_count("count", count, minimum=1)
        period = check_seconds("period_seconds", period_seconds, allow_zero=False, allow_inf=False)
        return cls(capacity=count, rate_per_second=count / period)

    def _refill(self, now: float) -> None:
        if math.isnan(now):
            raise ValueError("now must not be NaN")
        if self._last is not None and now > self._last:
            self._tokens = min(
                float(self.capacity), self._tokens + (now - self._last) * self.rate_per_second
            )
        if self._last is None or now > self._last:
            self._last = now

    def tokens(self, now: float) -> float:
        """Tokens available at *now* (fractional between refills)."""
        self._refill(now)
        return self._tokens

    def try_acquire(self, now: float) -> bool:
        """Take one token if one is available at *now*; count a refusal otherwise."""
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        self.denied += 1
        return False

    def seconds_until_available(self, now: float) -> float:
        """Seconds from *now* until one token is available: 0.0 if one is, ``inf`` never."""
        self._refill(now)
        missing = 1.0 - self._tokens
        if missing <= _EPSILON:
            return 0.0
        if self.rate_per_second == 0:
            return math.inf
        return missing / self.rate_per_second
