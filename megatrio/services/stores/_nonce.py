"""Replay protection for signed messages: has this (sender, nonce) been seen?

Message timestamps come from other machines, so freshness is judged against wall-clock time
(``time.time``), injectable for tests; everything else is the sans-IO :class:`NonceWindow`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar, final

import anyio
import anyio.lowlevel

from ..._policy._nonces import NonceStore as NonceStore
from ..._policy._nonces import NonceVerdict, NonceWindow
from ..._samples import Sample, counter_sample

if TYPE_CHECKING:
    from ..._runtime import Runtime

S = TypeVar("S", bound=NonceStore)

NONCE_PREFIX = "mega:nonce"

_CHECKS_HELP = "nonce checks, by verdict (full: rejected at the store's cap)"


def nonce_samples(accepted: int, rejected: Mapping[str, int]) -> Iterator[Sample]:
    """A nonce store's metrics: every verdict, zero included, so each series exists at once."""
    yield counter_sample("megatrio_nonce_checks", _CHECKS_HELP, accepted, verdict="accepted")
    for verdict in (NonceVerdict.REPLAY, NonceVerdict.STALE, NonceVerdict.FULL):
        count = rejected.get(verdict.value, 0)
        yield counter_sample("megatrio_nonce_checks", _CHECKS_HELP, count, verdict=verdict.value)


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

    @property
    def accepted(self) -> int:
        """Messages accepted so far."""
        return self._window.accepted

    def samples(self) -> Iterator[Sample]:
        """Checks by verdict (a source for ``Runtime.metric_sources``)."""
        return nonce_samples(self._window.accepted, self._window.rejected)

    async def check(self, sender: str, nonce: str, timestamp: float) -> NonceVerdict:
        await anyio.lowlevel.checkpoint()
        return self._window.check(sender, nonce, timestamp, self._clock())


@contextlib.asynccontextmanager
async def open_nonces(rt: Runtime, store: S) -> AsyncIterator[S]:
    """``async with open_nonces(rt, MemoryNonceStore()) as nonces:`` — *store* as ``rt.nonces``.

    The embedding counterpart of what ``megatrio run`` does with the configured store: on entry
    *store* becomes ``rt.nonces``, on exit (however the block ends) it is removed again. A
    checkpoint on entry. A store with a ``samples()`` method (both of megatrio's) is also
    registered in ``rt.metric_sources`` as ``nonces``, for ``/metrics``.

    The store needs no child: memory expires by time buckets, Redis by itself.

    Raises:
        ValueError: *rt* has a nonce store already.
    """
    await anyio.lowlevel.checkpoint()
    rt.install_nonces(store)
    # A store of the application's own need not count anything.
    samples = getattr(store, "samples", None)
    if callable(samples):
        rt.metric_sources.add("nonces", samples)
    try:
        yield store
    finally:
        if callable(samples):
            rt.metric_sources.discard("nonces", samples)
        rt.uninstall_nonces(store)
