"""The OTP restart-intensity rule as a sans-IO sliding window."""

from __future__ import annotations

import collections
import math
from typing import final

from ._checks import check_count, check_seconds


@final
class RestartWindow:
    """Decide whether one more restart is allowed: at most *max_restarts* within *period_seconds*.

    Call :meth:`allow_restart` once per crash, with the current time of a monotonic clock. A
    crash *counts* when *min_uptime_seconds* is ``None`` or the crashed child was up for less than
    that (the rapid-crash rule: a child that ran for a while before dying is not a crash loop).
    A counted crash at time ``t`` stays in the window while ``now - t < period_seconds``.

    The counted crash that would make ``max_restarts + 1`` counted crashes within the window
    returns ``False``: the caller must give up. Uncounted crashes return ``True`` and never touch
    the window, and nothing but time removes a counted crash from it — in particular no other
    child's exit resets it.

    Memory is O(*max_restarts*): the window keeps only the newest ``max_restarts + 1`` counted
    crashes, which is all the decision ever needs.

    Raises:
        ValueError: an argument is negative or NaN, or *period_seconds* is zero.
        TypeError: an argument has the wrong type.
    """

    __slots__ = ("_crashes", "max_restarts", "min_uptime_seconds", "period_seconds")

    def __init__(
        self,
        max_restarts: int,
        period_seconds: float,
        min_uptime_seconds: float | None = None,
    ) -> None:
        self.max_restarts = check_count("max_restarts", max_restarts)
        self.period_seconds = check_seconds("period_seconds", period_seconds, allow_zero=False)
        self.min_uptime_seconds = (
            None
            if min_uptime_seconds is None
            else check_seconds("min_uptime_seconds", min_uptime_seconds)
        )
        # Invariant: timestamps are non-decreasing, oldest on the left.
        self._crashes: collections.deque[float] = collections.deque(maxlen=self.max_restarts + 1)

    def counts(self, uptime_seconds: float) -> bool:
        """Whether a crash after *uptime_seconds* of uptime counts toward the window."""
        return self.min_uptime_seconds is None or uptime_seconds < self.min_uptime_seconds

    def allow_restart(self, now: float, uptime_seconds: float) -> bool:
        """Record a crash at *now* after *uptime_seconds* of uptime; return whether to restart.

        Raises:
            ValueError: *now* is NaN or earlier than a crash already recorded, or
                *uptime_seconds* is negative or NaN.
        """
        if math.isnan(now):
            raise ValueError("now must not be NaN")
        uptime = check_seconds("uptime_seconds", uptime_seconds)
        if not self.counts(uptime):
            return True
        if self._crashes and now < self._crashes[-1]:
            raise ValueError(f"now went backwards: {now!r} < {self._crashes[-1]!r}")
        self._crashes.append(now)
        self._expire(now)
        return len(self._crashes) <= self.max_restarts

    def in_window(self, now: float) -> int:
        """How many counted crashes are still in the window at *now* (at most max_restarts+1)."""
        self._expire(now)
        return len(self._crashes)

    def reset(self) -> None:
        """Forget every recorded crash (a fresh supervisor incarnation)."""
        self._crashes.clear()

    def _expire(self, now: float) -> None:
        crashes = self._crashes
        while crashes and now - crashes[0] >= self.period_seconds:
            crashes.popleft()

    def __repr__(self) -> str:
        return (
            f"RestartWindow(max_restarts={self.max_restarts}, "
            f"period_seconds={self.period_seconds}, "
            f"min_uptime_seconds={self.min_uptime_seconds})"
        )
