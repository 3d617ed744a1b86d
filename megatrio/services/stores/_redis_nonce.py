"""The Redis nonce store: one atomic ``SET NX PX`` per message, shared by every process."""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Iterator
from typing import final
from urllib.parse import quote

import anyio.lowlevel

from ..._policy._checks import check_seconds
from ..._policy._nonces import NonceVerdict
from ..._samples import Sample
from ._nonce import NONCE_PREFIX, nonce_samples
from ._redis import (
    NonceStoreUnavailable,
    RedisClient,
    is_unavailable,
    raise_unavailable,
    ttl_milliseconds,
)


def _escape(part: str) -> str:
    # Percent-encoding leaves only unreserved characters and %XX, so no ':' survives and the
    # key "<sender>:<nonce>" splits back unambiguously. surrogatepass keeps lone surrogates
    # (valid in JSON strings) encodable instead of raising.
    return quote(part, safe="", errors="surrogatepass")


@final
class RedisNonceStore:
    """:class:`~megatrio.NonceStore` on Redis, shared by every process.

    A message is fresh while ``|now - timestamp| <= skew_seconds`` by *clock* (wall-clock
    time, as message timestamps come from other machines). A fresh message is remembered with
    one atomic ``SET key 1 NX PX <ms until timestamp + skew>`` (at least 1 ms): ACCEPTED if it
    set the key, REPLAY if the key existed. The key is
    ``mega:nonce:<namespace>:<sender>:<nonce>`` with *sender* and *nonce* percent-encoded
    (``quote(..., safe="")``), so a ``:`` inside them is ``%3A`` and two different pairs
    never share a key; *namespace* itself may not contain ``:``.

    Redis expires the keys on its own clock; only the TTL's length comes from *clock*, so the
    two clocks agree as long as both run at the rate of real time. Memory is bounded by the
    message rate times at most ``2 * skew_seconds``; there is no entry cap and never a
    :attr:`~NonceVerdict.FULL` verdict (Redis' ``maxmemory`` is the bound, and a refused
    write fails closed like an outage).

    Fails closed: when Redis cannot answer, :meth:`check` raises
    :class:`NonceStoreUnavailable` and nothing is accepted. A write whose connection broke is
    retried once by the client (see :func:`open_redis`); if the first attempt had reached
    Redis, the retry sees the key and answers REPLAY — a false rejection, never a false
    accept. Rejections are counted in :attr:`rejected`.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        namespace: str,
        skew_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            raise ValueError(f"nonce namespace must be non-empty without ':', got {namespace!r}")
        self.client = client
        self.namespace = namespace
        self.skew_seconds = check_seconds("skew_seconds", skew_seconds, allow_inf=False)
        self._clock = clock
        self._prefix = f"{NONCE_PREFIX}:{namespace}:"
        self._rejected: collections.Counter[str] = collections.Counter()
        self.accepted = 0
        """Messages accepted so far in this process."""

    @property
    def rejected(self) -> dict[str, int]:
        """Rejections so far in this process, by reason (``replay``, ``stale``)."""
        return dict(self._rejected)

    def samples(self) -> Iterator[Sample]:
        """Checks in this process by verdict (a source for ``Runtime.metric_sources``)."""
        return nonce_samples(self.accepted, self._rejected)

    def key(self, sender: str, nonce: str) -> str:
        """The Redis key remembering (*sender*, *nonce*). Not a checkpoint."""
        return f"{self._prefix}{_escape(sender)}:{_escape(nonce)}"

    async def check(self, sender: str, nonce: str, timestamp: float) -> NonceVerdict:
        """Accept (and remember) or reject the message (*sender*, *nonce*) sent at *timestamp*.

        Always a checkpoint. If cancelled while waiting for Redis, the message may or may not
        have been remembered; a retry then answers ACCEPTED or REPLAY accordingly.

        Raises:
            NonceStoreUnavailable: Redis could not answer (the message must be rejected).
        """
        now = self._clock()
        if math.isnan(timestamp) or abs(now - timestamp) > self.skew_seconds:
            await anyio.lowlevel.checkpoint()
            return self._reject(NonceVerdict.STALE)
        px = ttl_milliseconds(timestamp + self.skew_seconds - now)
        key = self.key(sender, nonce)
        try:
            stored = await self.client.set(key, b"1", px=px, nx=True)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            await raise_unavailable(
                NonceStoreUnavailable, f"nonce check of {key!r} failed (rejecting)", exc
            )
        if not stored:
            return self._reject(NonceVerdict.REPLAY)
        self.accepted += 1
        return NonceVerdict.ACCEPTED

    def _reject(self, verdict: NonceVerdict) -> NonceVerdict:
        self._rejected[verdict.value] += 1
        return verdict

    def __repr__(self) -> str:
        return f"<RedisNonceStore {self.namespace!r} {self.client!r}>"
