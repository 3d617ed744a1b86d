"""Redis-backed stores on coredis: a client for the runtime, a cache driver, a nonce store.

coredis is anyio-native, so the client runs inside the trio (or asyncio) tree with ordinary
cancellation. ``async with client:`` enters its connection pool, which opens a task group in
the entering task; each connection is a reader and a writer task in that group, and commands
from any task are multiplexed over the pooled connections, replies matched to requests in
FIFO order. A command cancelled while it waits for its reply stays queued on its connection
and its late reply is consumed and dropped, so cancelling a command never desynchronises a
connection. Enter the client once and share it; the tasks that use it never enter it again.

Errors are mapped at one boundary: a Redis that cannot be reached, drops the connection, does
not answer within the client's timeouts or refuses a command (out of memory, read-only
replica) raises :class:`BackendUnavailable` — from the stores, its subclass
:class:`CacheUnavailable` or :class:`NonceStoreUnavailable` — with the coredis error as
``__cause__``: never a silent miss, never a silent accept.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, final
from urllib.parse import quote, unquote, urlsplit

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import coredis
import coredis.exceptions
from coredis.connection import BaseConnection, TCPConnection, UnixDomainSocketConnection
from coredis.pool import ConnectionPool
from coredis.retry import ConstantRetryPolicy
from coredis.tokens import PureToken

from ..._exceptions import MegatrioError
from ..._policy._checks import check_seconds
from ..._policy._nonces import NonceVerdict
from ...nursery._child import current_child
from ...nursery._errors import describe, unwrap_group
from ._nonce import NONCE_PREFIX

log = logging.getLogger("megatrio.redis")

RedisClient = coredis.Redis[bytes]
"""The client type :func:`open_redis` yields: replies are bytes, never decoded."""

# -- errors ---------------------------------------------------------------------------------


class BackendUnavailable(MegatrioError):
    """A backing service (Redis) could not be reached, or did not answer in time.

    Raised by :func:`open_redis` when the first PING fails; its subclasses are raised by the
    stores built on the client. The backend's own error is the ``__cause__``.
    """


class CacheUnavailable(BackendUnavailable):
    """A cache operation could not be completed because its backend is unavailable.

    Raised by :class:`RedisCache` (so by :class:`~megatrio.Cache` methods) when
    Redis refuses the connection, drops it, does not reply within the stream timeout, or
    refuses the command (``OOM`` with ``maxmemory-policy noeviction``, a read-only replica).
    A cache never reports such a failure as a miss: the caller decides whether to serve
    without the cache or to fail the request.
    """


class NonceStoreUnavailable(BackendUnavailable):
    """The nonce store could not decide because its backend is unavailable.

    Raised by :class:`RedisNonceStore`. The store fails closed: the message was not
    remembered, and the caller must reject it (typically as a temporary failure, 503, rather
    than as a replay).
    """


# Errors that mean "the backend cannot serve this now", as opposed to a wrong command.
# TimeoutError is the builtin that coredis raises when a reply misses the stream timeout and
# that anyio's fail_after raises when the pool cannot hand out a connection in time.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.ReadOnlyError,
    TimeoutError,
)


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    # Over maxmemory with maxmemory-policy noeviction, writes fail with an "OOM ..." error.
    return isinstance(exc, coredis.exceptions.ResponseError) and str(exc).startswith("OOM")


async def _raise_unavailable(
    error: type[BackendUnavailable], message: str, exc: BaseException
) -> NoReturn:
    # coredis turns a cancellation that arrives while it sets up a connection into a
    # ConnectionError. If our own scope was cancelled, let the cancellation through instead of
    # reporting an outage that did not happen.
    await anyio.lowlevel.checkpoint_if_cancelled()
    raise error(f"{message}: {describe(exc)}") from exc


# -- the client -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RedisTarget:
    """Where :func:`open_redis` connects, parsed from a URL. :attr:`redacted` is safe to log."""

    host: str | None = None
    port: int = 6379
    unix_path: str | None = None
    db: int = 0
    username: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    redacted: str


def parse_redis_url(url: str) -> RedisTarget:
    """Parse ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS) or
    ``unix://[[user]:password@]/path/to/socket[?db=N]``. Port 6379 and db 0 by default;
    user and password are percent-decoded.

    Raises:
        ValueError: the URL is malformed or has parts this parser does not understand; the
            message names the URL with its password masked.
    """
    if not isinstance(url, str):
        raise TypeError(f"Redis URL must be a string, got {type(url).__name__}")
    redacted = _redact_url(url)

    def bad(reason: str) -> ValueError:
        return ValueError(f"invalid Redis URL {redacted!r}: {reason}")

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # urllib's message may quote the netloc: a password would show
        raise bad("the host or port is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise bad("expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH?db=N")
    if parts.fragment:
        raise bad("a fragment (#...) is not allowed")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    query = parts.query
    if scheme == "unix":
        if parts.hostname or port is not None:
            raise bad("a unix:// URL names a socket path, not a host (unix:///path/to/sock)")
        if not parts.path:
            raise bad("missing the socket path")
        db = 0
        if query:
            key, sep, value = query.partition("=")
            if key != "db" or not sep or "&" in value:
                raise bad("the only query parameter allowed is db=N")
            db = _parse_db(value, bad)
        return RedisTarget(
            unix_path=unquote(parts.path),
            db=db,
            username=username,
            password=password,
            redacted=redacted,
        )
    if query:
        raise bad("query parameters are not allowed (pass options to open_redis instead)")
    if not parts.hostname:
        raise bad("missing the host")
    path = parts.path.removeprefix("/")
    db = _parse_db(path, bad) if path else 0
    return RedisTarget(
        host=parts.hostname,
        port=6379 if port is None else port,
        db=db,
        username=username,
        password=password,
        tls=scheme == "rediss",
        redacted=redacted,
    )


def _parse_db(text: str, bad: Callable[[str], ValueError]) -> int:
    if not text.isascii() or not text.isdigit():
        raise bad(f"the database must be a number >= 0, got {text!r}")
    return int(text)


def _redact_url(url: str) -> str:
    """*url* with its password, query values (but ``db``) and fragment masked as ``***``.

    Conservative on purpose, for malformed URLs too: everything up to the last ``@`` is user
    information, so a password with an unencoded ``/`` or ``?`` is still masked.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    userinfo, at, location = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}{':***' if colon else ''}@{location}"
    rest, hash_sign, _ = rest.partition("#")
    rest, question, query = rest.partition("?")
    if question:
        params = []
        for param in query.split("&"):
            name, equals, _ = param.partition("=")
            params.append(param if name == "db" or not equals else f"{name}=***")
        rest = f"{rest}?{'&'.join(params)}"
    return f"{scheme}://{rest}{'#***' if hash_sign else ''}"


def _close_buffers(connection: BaseConnection) -> None:
    # coredis closes a connection's memory streams only once the socket is open; after a
    # failed connect they would stay open and warn (ResourceWarning) when collected.
    for stream in (
        connection._write_buffer_in,
        connection._write_buffer_out,
        connection._push_message_buffer_in,
        connection._push_message_buffer_out,
        connection._streamed_message_buffer_in,
        connection._streamed_message_buffer_out,
    ):
        stream.close()


class _TCPConnection(TCPConnection):
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            _close_buffers(self)


class _UnixConnection(UnixDomainSocketConnection):
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            _close_buffers(self)


_CONNECTION_CLASSES: dict[type[BaseConnection], type[BaseConnection]] = {
    TCPConnection: _TCPConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


class _ConnectionPool(ConnectionPool[Any]):
    """coredis' pool with connections that release their buffers even when connecting fails."""

    def __init__(self, *, connection_class: type[BaseConnection], **kwargs: Any) -> None:
        connection_class = _CONNECTION_CLASSES.get(connection_class, connection_class)
        super().__init__(connection_class=connection_class, **kwargs)


_RESERVED_OPTIONS = frozenset(
    {
        "host",
        "port",
        "db",
        "username",
        "password",
        "unix_socket_path",
        "ssl",
        "decode_responses",
        "connect_timeout",
        "stream_timeout",
        "pool_timeout",
        "connection_pool",
        "connection_pool_cls",
    }
)


@contextlib.asynccontextmanager
async def open_redis(
    url: str,
    *,
    connect_timeout_seconds: float = 2.0,
    stream_timeout_seconds: float = 2.0,
    **options: Any,
) -> AsyncIterator[RedisClient]:
    """Open a coredis client for *url*, check it with PING, and close it on exit.

    ``async with open_redis("redis://127.0.0.1:6379/0") as client:`` yields a
    ``coredis.Redis[bytes]`` (replies are never decoded). Every command is bounded:
    connecting by *connect_timeout_seconds*, each reply by *stream_timeout_seconds*, and
    waiting for a pooled connection by their sum, so a dead or frozen server raises instead of
    hanging. A command whose connection broke (say, Redis restarted since its last use) is
    retried once on a new connection; a timed-out command is not retried. Other keyword
    *options* go to ``coredis.Redis`` (``max_connections``, ``client_name``,
    ``retry_policy``, ...); the ones the URL or the arguments above decide are refused.

    The pool's task group is opened in the entering task and lives until the block exits, so
    enter it once and share the client: as a runtime resource,
    ``client = await rt.enter_async_context(open_redis(url))`` (held open by a task of its
    own and closed after every child has stopped), or with ``async with`` around the code
    that uses it. Exiting cancels and closes every connection. Errors from the body come out
    as they were raised (not wrapped in an exception group).

    Raises:
        ValueError: *url* is malformed (the message masks its password) or a timeout is not
            positive.
        TypeError: *options* names an argument that the URL or a timeout argument decides.
        BackendUnavailable: the first PING failed (refused, timed out, authentication).
    """
    target = parse_redis_url(url)
    connect = check_seconds(
        "connect_timeout_seconds", connect_timeout_seconds, allow_zero=False, allow_inf=False
    )
    stream = check_seconds(
        "stream_timeout_seconds", stream_timeout_seconds, allow_zero=False, allow_inf=False
    )
    reserved = sorted(_RESERVED_OPTIONS.intersection(options))
    if reserved:
        raise TypeError(
            f"open_redis() sets {', '.join(reserved)} itself (from the URL or the "
            f"*_seconds arguments); do not pass them as options"
        )
    options.setdefault(
        "retry_policy",
        ConstantRetryPolicy((coredis.exceptions.ConnectionError,), retries=1, delay=0.01),
    )
    client: RedisClient = coredis.Redis(
        host=target.host,
        port=target.port,
        db=target.db,
        username=target.username,
        password=target.password,
        unix_socket_path=target.unix_path,
        ssl=target.tls,
        decode_responses=False,
        connect_timeout=connect,
        stream_timeout=stream,
        pool_timeout=connect + stream,
        connection_pool_cls=_ConnectionPool,
        **options,
    )
    try:
        async with client:
            try:
                await client.ping()
            except (coredis.exceptions.RedisError, TimeoutError) as exc:
                await _raise_unavailable(
                    BackendUnavailable, f"cannot reach Redis at {target.redacted}", exc
                )
            log.info("redis %s: connected", target.redacted)
            try:
                yield client
            finally:
                log.debug("redis %s: closing", target.redacted)
    except BaseExceptionGroup as group:
        # The pool's task group wraps whatever leaves the block; show the real error.
        leaf = unwrap_group(group)
        if leaf is group:
            raise
        raise leaf  # noqa: B904 -- the group stays reachable as __context__


# -- the cache driver -----------------------------------------------------------------------

# Redis refuses expiries that overflow its millisecond clock; 2**53 ms is ~285,000 years.
_MAX_TTL_MS = 2**53


def ttl_milliseconds(seconds: float) -> int:
    """*seconds* (>= 0) as a Redis ``PX`` argument: whole milliseconds rounded up, at least 1
    and at most 2**53. Not a checkpoint; on every SET's path, hence the plain arithmetic."""
    ms = seconds * 1000.0
    whole = int(ms)
    # Round up, except float noise: 1.1 s is 1100.0000000000002 ms, which is 1100 ms.
    if ms - whole > 1e-6:
        whole += 1
    return 1 if whole < 1 else whole if whole < _MAX_TTL_MS else _MAX_TTL_MS


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
    under the cache's prefix — are bugs, not outages, and propagate as coredis raised them.
    """

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def get(self, key: str) -> bytes | None:
        try:
            return await self.client.get(key)
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            await _raise_unavailable(CacheUnavailable, f"cache GET {key!r} failed", exc)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        px = None if ttl_seconds is None else ttl_milliseconds(ttl_seconds)
        try:
            await self.client.set(key, value, px=px)
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            await _raise_unavailable(CacheUnavailable, f"cache SET {key!r} failed", exc)

    async def delete(self, key: str) -> bool:
        try:
            # coredis takes a list of keys; a bare string would be read as its characters.
            return await self.client.delete([key]) == 1
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            await _raise_unavailable(CacheUnavailable, f"cache DEL {key!r} failed", exc)

    async def has(self, key: str) -> bool:
        try:
            return await self.client.exists([key]) == 1
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            await _raise_unavailable(CacheUnavailable, f"cache EXISTS {key!r} failed", exc)

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


# -- the nonce store ------------------------------------------------------------------------


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

    @property
    def rejected(self) -> dict[str, int]:
        """Rejections so far in this process, by reason (``replay``, ``stale``)."""
        return dict(self._rejected)

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
            stored = await self.client.set(key, b"1", condition=PureToken.NX, px=px)
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            await _raise_unavailable(
                NonceStoreUnavailable, f"nonce check of {key!r} failed (rejecting)", exc
            )
        return NonceVerdict.ACCEPTED if stored else self._reject(NonceVerdict.REPLAY)

    def _reject(self, verdict: NonceVerdict) -> NonceVerdict:
        self._rejected[verdict.value] += 1
        return verdict

    def __repr__(self) -> str:
        return f"<RedisNonceStore {self.namespace!r} {self.client!r}>"
