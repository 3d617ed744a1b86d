"""Replay protection for signed messages: has this (sender, nonce) been seen?

Message timestamps come from other machines, so freshness is judged against wall-clock time
(``time.time``), injectable for tests; everything else is the sans-IO :class:`NonceWindow`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, final

import anyio
import anyio.lowlevel

from ..._policy._nonces import NonceVerdict, NonceWindow

NONCE_PREFIX = "mega:nonce"


class NonceStore(Protocol):
    """Decides whether a message is fresh and new; remembers it when it is."""

    async def check(self, sender: str, nonce: str, timestamp: float) -> NonceVerdict:
        """Accept (and remember) or reject the message (sender, nonce) sent at *timestamp*."""
        ...


@final
class MemoryNonceStore:
    """In-process store: at most *max_entries* remembered nonces, then it fails closed.

    A message is fresh while ``|now - timestamp| <= skew_seconds``; its nonce is remembered
    until ``timestamp + skew_seconds``, after which the message is stale anyway. Expiry is
    O(1) amortised (time buckets), so no sweep is needed and memory stays under the cap.
    """

    def __init__(
        self,
        *,
        skew_seconds: float = 300.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._window = NonceWindow(skew_seconds=skew_seconds, max_entries=max_entries)
        self._clock = clock

    def __len__(self) -> int:
        return len(self._window)

    @property
    def rejected(self) -> dict[str, int]:
        """Rejections so far, by reason (``replay``, ``stale``, ``full``)."""
        return dict(self._window.rejected)

    async def check(self, sender: str, nonce: str, timestamp: float) -> NonceVerdict:
        await anyio.lowlevel.checkpoint()
        return self._window.check(sender, nonce, timestamp, self._clock())
