"""Building the configured stores (caches, nonce store) for a served App."""

from __future__ import annotations

from pathlib import Path

from ._config import CacheConfig, CacheDriverKind, Config, NonceDriverKind
from ._runtime import Runtime
from .services._cache import CacheDriver, MemoryCache, open_cache
from .services._file_cache import FileCache
from .services._nonce import MemoryNonceStore
from .services._redis import RedisCache, RedisClient, RedisNonceStore, open_redis


async def open_stores(rt: Runtime, config: Config, *, directory: Path | None = None) -> None:
    """Open Redis (if ``redis_url``), every ``[cache.ALIAS]`` and the nonce store on *rt*.

    Redis is a runtime resource (closed after every child has stopped); each cache's cleaner
    is the supervised child ``cache-ALIAS``. File caches without a ``path`` live in
    ``.megatrio/cache/ALIAS`` under *directory* (default: the current directory).

    Raises:
        CacheUnavailable / OSError: Redis or a cache directory cannot be opened.
    """
    client: RedisClient | None = None
    if config.redis_url:
        client = await rt.enter_async_context(open_redis(config.redis_url))
    base = Path.cwd() if directory is None else directory
    for alias, cache_config in config.cache.items():
        driver = await _driver(alias, cache_config, client, base)
        await open_cache(rt, alias, driver)
    if config.nonce_driver is NonceDriverKind.REDIS:
        assert client is not None  # Config refuses a redis nonce store without redis_url
        rt.nonces = RedisNonceStore(
            client, namespace=rt.name, skew_seconds=config.nonce_skew_seconds
        )
    else:
        rt.nonces = MemoryNonceStore(
            skew_seconds=config.nonce_skew_seconds, max_entries=config.nonce_max_entries
        )


async def _driver(
    alias: str, config: CacheConfig, client: RedisClient | None, base: Path
) -> CacheDriver:
    max_bytes = config.max_bytes or None
    if config.driver is CacheDriverKind.REDIS:
        assert client is not None  # Config refuses a redis cache without redis_url
        return RedisCache(client)
    if config.driver is CacheDriverKind.FILE:
        root = Path(config.path) if config.path else base / ".megatrio" / "cache" / alias
        driver = FileCache(
            root,
            max_entries=config.max_entries,
            max_bytes=max_bytes,
            sweep_interval_seconds=config.sweep_interval_seconds,
        )
        await driver.open()
        return driver
    return MemoryCache(
        max_entries=config.max_entries,
        max_bytes=max_bytes,
        sweep_interval_seconds=config.sweep_interval_seconds,
    )
