"""The Redis cache driver: the facade's bytes as Redis strings, expired by Redis itself."""

from __future__ import annotations

from typing import final

import anyio
import anyio.abc

from ...nursery._child import current_child
from ._redis import (
    CacheUnavailable,
    RedisClient,
    is_unavailable,
    raise_unavailable,
    ttl_milliseconds,
)


@final
class RedisCache:
    """:class:`~megatrio.CacheDriver` on Redis: GET, SET PX, DEL, EXISTS.

    Keys are the facade's full keys (``mega:cache:<app>:<key>``) and values its bytes, stored
    as Redis strings; a TTL becomes ``PX`` (rounded up to whole milliseconds) and ``None``
    means no expiry. Redis expires keys itself — lazily on access and by its own active
    expiry cycle — so :meth:`serve_cleaner` has nothing to sweep.

    **Bound.** This driver does not cap entries per app: on a Redis shared by several apps and
    processes, a per-namespace count would need a SCAN or a per-app index updated atomically
    on every write, and it would still race across processes. The bound is Redis' own
    ``maxmemory`` with its ``maxmemory-policy``: use ``allkeys-lru`` or ``volatile-lru`` (or
    the ``lfu`` variants) for caching, and evictions are Redis' and counted in its
    ``INFO stats`` (``evicted_keys``). With ``noeviction`` a write over the limit fails and
    raises :class:`CacheUnavailable`; with ``maxmemory 0`` Redis is unbounded and entries
    without a TTL stay until deleted. Nothing is dropped or capped silently by this driver.

    Every method is a checkpoint and raises :class:`CacheUnavailable` when Redis cannot serve
    (see the module docstring); cancelling one cancels only the wait for its reply. Errors
    that are not about availability — say, ``WRONGTYPE`` because something else wrote a list
    under the cache's prefix — are bugs, not outages, and propagate as the client raised them
    (coredis' exception classes).
    """

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def get(self, key: str) -> bytes | None:
        try:
            return await self.client.get(key)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            await raise_unavailable(CacheUnavailable, f"cache GET {key!r} failed", exc)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        px = None if ttl_seconds is None else ttl_milliseconds(ttl_seconds)
        try:
            await self.client.set(key, value, px=px)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            await raise_unavailable(CacheUnavailable, f"cache SET {key!r} failed", exc)

    async def delete(self, key: str) -> bool:
        try:
            return await self.client.delete(key) == 1
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            await raise_unavailable(CacheUnavailable, f"cache DEL {key!r} failed", exc)

    async def has(self, key: str) -> bool:
        try:
            return await self.client.exists(key) == 1
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            await raise_unavailable(CacheUnavailable, f"cache EXISTS {key!r} failed", exc)

    async def serve_cleaner(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Report started, then wait for the child's stop request (or cancellation).

        Redis expires keys itself, so there is nothing to clean; the child exists so that
        every driver has the same supervised shape. Outside a supervised child it waits until
        cancelled.
        """
        task_status.started()
        ctx = current_child()
        if ctx is None:
            await anyio.sleep_forever()
        else:
            await ctx.wait_stopping()

    def __repr__(self) -> str:
        return f"<RedisCache {self.client!r}>"
