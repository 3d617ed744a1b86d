"""Building the configured stores (caches, nonce store) for a served App."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .._config import CacheConfig, CacheDriverKind, Config, NonceDriverKind
from .._policy._throttle import TokenBucket
from .._runtime import Runtime
from .._samples import SampleSource
from ..services.logs._redact import Redactor
from ..services.stores._cache import CacheDriver, MemoryCache, open_cache
from ..services.stores._file_cache import FileCache
from ..services.stores._nonce import MemoryNonceStore, NonceStore, open_nonces
from ..services.stores._retry_queue import RetryQueue
from ..supervisor import ChildSpec

if TYPE_CHECKING:
    from ..services.alerts._alert import AlertSender
    from ..services.stores._redis import RedisClient


async def start_stores(
    rt: Runtime, config: Config, *, directory: Path | None = None
) -> RedisClient | None:
    """Open Redis (if ``redis_url``), every ``[cache.ALIAS]``, the nonce store and alerts, for
    the rest of the runtime's life.

    Not a context manager: everything is a runtime resource or child, closed when the runtime
    stops. Redis, the caches (:func:`open_cache`) and the nonce store (:func:`open_nonces`) are
    entered with ``rt.enter_async_context``, so they close after every child has stopped, in
    reverse order (``on_stop`` hooks registered later still find them); each cache's cleaner
    is the supervised child ``cache-ALIAS``. File caches without a ``path`` live in
    ``.megatrio/cache/ALIAS`` under *directory* (default: the current directory). With an
    alert destination configured, ERROR records are sent there by the supervised child
    ``alerts`` (throttled, redacted, failed sends kept in a retry queue under
    ``.megatrio/alerts`` and re-sent).

    Returns the Redis client (None without ``redis_url``), for the other services that use it.

    Raises:
        BackendUnavailable / OSError: Redis or a cache directory cannot be opened.
    """
    # coredis and httpx are imported only by a process that uses them.
    client: RedisClient | None = None
    if config.redis_url:
        from ..services.stores._redis import open_redis

        client = await rt.enter_async_context(
            open_redis(config.redis_url, max_connections=config.redis_max_connections)
        )
    base = Path.cwd() if directory is None else directory
    for alias, cache_config in config.cache.items():
        driver = await _driver(alias, cache_config, client, base)
        await rt.enter_async_context(open_cache(rt, alias, driver))
    nonces: NonceStore
    if config.nonce_driver is NonceDriverKind.REDIS:
        from ..services.stores._redis_nonce import RedisNonceStore

        assert client is not None  # Config refuses a redis nonce store without redis_url
        nonces = RedisNonceStore(client, namespace=rt.name, skew_seconds=config.nonce_skew_seconds)
    else:
        nonces = MemoryNonceStore(
            skew_seconds=config.nonce_skew_seconds, max_entries=config.nonce_max_entries
        )
    await rt.enter_async_context(open_nonces(rt, nonces))
    await _open_alerts(rt, config, base)
    return client


async def _open_alerts(rt: Runtime, config: Config, base: Path) -> None:
    if not (config.alerts_telegram_bot_token or config.alerts_webhook_url):
        return
    from ..services.alerts._dispatcher import AlertDispatcher, serve_dispatcher
    from ..services.alerts._handler import AlertHandler
    from ..services.alerts._senders import TelegramSender, WebhookSender

    sender: AlertSender
    if config.alerts_telegram_bot_token:
        sender = TelegramSender(config.alerts_telegram_bot_token, config.alerts_telegram_chat_id)
    else:
        sender = WebhookSender(config.alerts_webhook_url)
    queue_dir = config.alerts_queue_dir or base / ".megatrio" / "alerts"
    queue = RetryQueue(Path(queue_dir))
    handler = AlertHandler(redactor=Redactor(config.redact_keys))
    root = logging.getLogger()
    root.addHandler(handler)
    # The handler goes when the runtime stops (LIFO: after the dispatcher's last round).
    rt.push_async_callback(_remove_handler, root, handler)
    dispatcher = AlertDispatcher(
        handler,
        sender,
        queue=queue,
        throttle=TokenBucket.per_period(config.alerts_per_minute, 60.0),
        name=rt.name,
    )
    samples = dispatcher.samples
    rt.metric_sources.add("alerts", samples)
    rt.push_async_callback(_discard_source, rt, "alerts", samples)
    # Enough grace for the last round of sends on a graceful stop.
    child = functools.partial(serve_dispatcher, dispatcher)
    await rt.start_child(ChildSpec("alerts", child, shutdown_seconds=15.0))


async def _discard_source(rt: Runtime, name: str, source: SampleSource) -> None:
    rt.metric_sources.discard(name, source)


async def _remove_handler(root: logging.Logger, handler: logging.Handler) -> None:
    root.removeHandler(handler)


async def _driver(
    alias: str, config: CacheConfig, client: RedisClient | None, base: Path
) -> CacheDriver:
    max_bytes = config.max_bytes or None
    if config.driver is CacheDriverKind.REDIS:
        from ..services.stores._redis_cache import RedisCache

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
