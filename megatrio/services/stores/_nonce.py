"""Replay protection for signed messages: has this (sender, nonce) been seen?

Message timestamps come from other machines, so freshness is judged against wall-clock time
(``time.time``), injectable for tests; everything else is the sans-IO :class:`NonceWindow`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, TypeVar, final

import anyio
import anyio.lowlevel

from ..._policy._nonces import NonceStore as NonceStore
from ..._policy._nonces import NonceVerdict, NonceWindow

if TYPE_CHECKING:
    from ..._runtime import Runtime

S = TypeVar("S", bound=NonceStore)

NONCE_PREFIX = "mega:nonce"


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


@contextlib.asynccontextmanager
async def open_nonces(rt: Runtime, store: S) -> AsyncIterator[S]:
    """``async with open_nonces(rt, MemoryNonceStore()) as nonces:`` — *store* as ``rt.nonces``.

    The embedding counterpart of what ``megatrio run`` does with the configured store: on entry
    *store* becomes ``rt.nonces``, on exit (however the block ends) it is removed again. A
    checkpoint on entry. The store needs no child: memory expires by time buckets, Redis by
    itself.

    Raises:
        ValueError: *rt* has a nonce store already.
    """
    await anyio.lowlevel.checkpoint()
    rt.install_nonces(store)
    try:
        yield store
    finally:
        rt.uninstall_nonces(store)
