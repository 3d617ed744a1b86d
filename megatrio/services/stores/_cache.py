"""One cache interface over interchangeable drivers (memory, file, Redis).

The :class:`Cache` facade namespaces every key as ``mega:cache:<app>:<key>`` — whatever the
driver, so two apps sharing a Redis or a directory cannot collide — encodes values as JSON,
and collapses concurrent misses of :meth:`Cache.get_or_set` into one computation.

A driver stores bytes under full keys and owns its bound and its cleaning; see
:class:`CacheDriver`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, final, runtime_checkable

import anyio
import anyio.abc
import anyio.lowlevel

from ..._exceptions import SupervisorNotRunning
from ..._policy._checks import check_count, check_seconds
from ..._policy._ttl_lru import TTLLRU
from ..._samples import Sample, counter_sample, gauge_sample
from ...nursery._spec import ChildSpec
from ...nursery._timer import run_every

if TYPE_CHECKING:
    from ..._runtime import Runtime

T = TypeVar("T")

KEY_PREFIX = "mega:cache"

# The cleaner's grace when its cache is closed: a sweep or rescan batch in progress finishes.
_CLEANER_SHUTDOWN_SECONDS: Final = 5.0


class CacheDriver(Protocol):
    """Storage behind a :class:`Cache`: bytes under full (namespaced) keys.

    A driver bounds itself (entries, bytes) and never returns an expired value. Drivers that
    need periodic cleaning expose it as :meth:`serve_cleaner`, run as a supervised child.
    """

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def has(self, key: str) -> bool: ...

    async def serve_cleaner(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Clean expired entries until cancelled or asked to stop (a supervised child)."""
        ...


@runtime_checkable
class CountingDriver(Protocol):
    """A driver that knows what it holds and drops (memory, file); Redis' evictions and
    size are the server's own (``INFO stats``, ``INFO memory``), not per alias."""

    @property
    def drops(self) -> dict[str, int]:
        """Entries removed so far, by reason (``expired``, ``capacity``, ...)."""
        ...

    @property
    def total_bytes(self) -> int: ...

    def __len__(self) -> int: ...


def cache_key(namespace: str, key: str) -> str:
    """``mega:cache:<namespace>:<key>``. Raises TypeError/ValueError for a bad *key*."""
    if not isinstance(key, str):
        raise TypeError(f"cache keys are strings, got {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError("cache key must not be empty")
    return f"{KEY_PREFIX}:{namespace}:{key}"


class _Flight:
    __slots__ = ("done", "error", "has_value", "value")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.has_value = False
        self.value: Any = None
        self.error: BaseException | None = None


@final
class Cache:
    """The cache API an application uses. Values are JSON; keys are strings.

    *namespace* is usually the app name; every key is stored as ``mega:cache:<ns>:<key>``.
    """

    def __init__(self, driver: CacheDriver, *, namespace: str, alias: str = "default") -> None:
        if not namespace or ":" in namespace:
            raise ValueError(f"cache namespace must be non-empty without ':', got {namespace!r}")
        self.driver = driver
        self.namespace = namespace
        self.alias = alias
        # Bounded by the number of distinct keys being computed at this moment.
        self._flights: dict[str, _Flight] = {}
        self.hits = 0
        """Lookups (:meth:`get`, and :meth:`get_or_set` before it computes) that found a value."""
        self.misses = 0
        """Lookups that found none (missing or expired)."""

    def samples(self) -> Iterator[Sample]:
        """This cache's metrics (a source for ``Runtime.metric_sources``): lookups by result,
        and for a driver that counts them, drops by reason, entries and bytes."""
        alias = self.alias
        help_requests = "cache lookups, by result"
        yield counter_sample(
            "megatrio_cache_requests", help_requests, self.hits, alias=alias, result="hit"
        )
        yield counter_sample(
            "megatrio_cache_requests", help_requests, self.misses, alias=alias, result="miss"
        )
        driver = self.driver
        if isinstance(driver, CountingDriver):
            for reason, count in sorted(driver.drops.items()):
                yield counter_sample(
                    "megatrio_cache_evictions",
                    "cache entries dropped by the cache itself, by reason",
                    count,
                    alias=alias,
                    reason=reason,
                )
            yield gauge_sample(
                "megatrio_cache_entries", "entries in the cache", len(driver), alias=alias
            )
            yield gauge_sample(
                "megatrio_cache_bytes", "value bytes in the cache", driver.total_bytes, alias=alias
            )

    def full_key(self, key: str) -> str:
        return cache_key(self.namespace, key)

    async def get(self, key: str, default: Any = None) -> Any:
        """The value under *key*, or *default* when missing or expired."""
        raw = await self.driver.get(self.full_key(key))
        if raw is None:
            self.misses += 1
            return default
        self.hits += 1
        return json.loads(raw)

    async def set(self, key: str, value: Any, *, ttl_seconds: float | None = None) -> None:
        """Store *value* (JSON-serialisable) for *ttl_seconds* (``None``: until evicted).

        Raises:
            TypeError: *value* is not JSON-serialisable (the key is named).
            ValueError: *ttl_seconds* is not positive.
        """
        if ttl_seconds is not None:
            check_seconds("ttl_seconds", ttl_seconds, allow_zero=False, allow_inf=False)
        full = self.full_key(key)
        try:
            raw = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"cache value for key {key!r} is not JSON-serialisable: {exc}"
            ) from None
        await self.driver.set(full, raw, ttl_seconds)

    async def delete(self, key: str) -> bool:
        """Remove *key*; whether it was present."""
        return await self.driver.delete(self.full_key(key))

    async def has(self, key: str) -> bool:
        """Whether a live value is stored under *key*."""
        return await self.driver.has(self.full_key(key))

    async def get_or_set(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]],
        *,
        ttl_seconds: float | None = None,
    ) -> T:
        """The cached value, or ``await compute()`` stored for *ttl_seconds*.

        Single-flight within this process: concurrent misses of one key run *compute* once and
        all get its result (or its exception). If the computing caller is cancelled, a waiter
        takes over and computes itself.
        """
        full = self.full_key(key)
        missing = object()
        while True:
            cached = await self.get(key, missing)
            if cached is not missing:
                return cached  # type: ignore[no-any-return]
            flight = self._flights.get(full)
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.has_value:
                return flight.value  # type: ignore[no-any-return]
            # The computing caller was cancelled: try again (maybe compute ourselves).
        flight = self._flights[full] = _Flight()
        try:
            value = await compute()
            await self.set(key, value, ttl_seconds=ttl_seconds)
            flight.value, flight.has_value = value, True
            return value
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[full]
            flight.done.set()


@final
class MemoryCache:
    """In-process driver: at most *max_entries* (LRU) and *max_bytes*, per-entry TTL.

    Its cleaner sweeps expired entries every *sweep_interval_seconds*; a ``get`` never returns
    an expired value even between sweeps. Drops are counted in :attr:`drops`.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int | None = None,
        sweep_interval_seconds: float = 60.0,
    ) -> None:
        check_count("max_entries", max_entries, minimum=1)
        self.sweep_interval_seconds = check_seconds(
            "sweep_interval_seconds", sweep_interval_seconds, allow_zero=False
        )
        self._store = TTLLRU(max_entries, max_bytes)

    @property
    def drops(self) -> dict[str, int]:
        return dict(self._store.drops)

    def __len__(self) -> int:
        return len(self._store)

    @property
    def total_bytes(self) -> int:
        """Sum of the stored values' sizes."""
        return self._store.total_bytes

    async def get(self, key: str) -> bytes | None:
        await anyio.lowlevel.checkpoint()
        return self._store.get(key, anyio.current_time())

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        await anyio.lowlevel.checkpoint()
        self._store.set(key, value, anyio.current_time(), ttl_seconds)

    async def delete(self, key: str) -> bool:
        await anyio.lowlevel.checkpoint()
        return self._store.delete(key)

    async def has(self, key: str) -> bool:
        return await self.get(key) is not None

    async def serve_cleaner(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await run_every(self.sweep_interval_seconds, None, self.sweep, task_status=task_status)

    async def sweep(self) -> int:
        """Remove every expired entry now; how many went."""
        await anyio.lowlevel.checkpoint()
        return self._store.sweep(anyio.current_time())


def open_cache(
    rt: Runtime, alias: str, driver: CacheDriver
) -> contextlib.AbstractAsyncContextManager[Cache]:
    """``async with open_cache(rt, alias, driver) as cache:`` — *driver* as the cache *alias*.

    On entry it registers the :class:`Cache` in ``rt.caches``, so ``rt.cache(alias)`` finds it,
    and starts the driver's cleaner as the supervised child ``cache-<alias>`` (returning once
    it is ready). On exit — normal, by an error, or cancelled — it stops that child and
    unregisters the cache; the stop is shielded and bounded by the child's
    ``shutdown_seconds``. If the runtime is already stopping, its own shutdown stops the child.
    The facade's namespace is the runtime's name, so keys are ``mega:cache:<rt.name>:<key>``.

    The alias map is the runtime's generic :class:`~megatrio._registry.Registry`, not a cache
    type the runtime knows: the runtime sits below the stores and imports nothing of them.

    Awaiting the result instead, ``cache = await open_cache(rt, alias, driver)``, opens the cache
    for the rest of the runtime's life: it is closed with the runtime's resources
    (:meth:`Runtime.enter_async_context`), after every child has stopped.

    Raises:
        ValueError: *alias* is already registered.
        StartupFailed / SupervisorNotRunning: the cleaner could not be started (the cache is
            unregistered again).
    """
    return _CacheOpening(rt, _opened_cache(rt, alias, driver))


@final
class _CacheOpening(contextlib.AbstractAsyncContextManager["Cache"]):
    """What :func:`open_cache` returns: a context manager, or awaited, a runtime resource."""

    __slots__ = ("_manager", "_rt")

    def __init__(self, rt: Runtime, manager: contextlib.AbstractAsyncContextManager[Cache]) -> None:
        self._rt = rt
        self._manager = manager

    async def __aenter__(self) -> Cache:
        return await self._manager.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._manager.__aexit__(*exc_info)

    def __await__(self) -> Generator[Any, None, Cache]:
        return self._rt.enter_async_context(self._manager).__await__()


@contextlib.asynccontextmanager
async def _opened_cache(rt: Runtime, alias: str, driver: CacheDriver) -> AsyncIterator[Cache]:
    cache = Cache(driver, namespace=rt.name, alias=alias)
    # Registered before the start (a checkpoint), so that a concurrent open of the same alias
    # fails instead of starting a second child of the same name.
    rt.caches.add(alias, cache)
    # One bound method, so that the discard below finds the very object it added.
    source, samples = f"cache:{alias}", cache.samples
    rt.metric_sources.add(source, samples)
    try:
        spec = ChildSpec(
            f"cache-{alias}", driver.serve_cleaner, shutdown_seconds=_CLEANER_SHUTDOWN_SECONDS
        )
        await rt.start_child(spec)
        try:
            yield cache
        finally:
            # The child stops within its shutdown_seconds (the supervisor sets that deadline),
            # so the shield is bounded by the same time.
            # Not found or not running: gone already, or the runtime's shutdown is stopping it.
            with (
                anyio.move_on_after(_CLEANER_SHUTDOWN_SECONDS, shield=True),
                contextlib.suppress(LookupError, SupervisorNotRunning),
            ):
                await rt.stop_child(spec.name)
    finally:
        rt.metric_sources.discard(source, samples)
        rt.caches.discard(alias, cache)
