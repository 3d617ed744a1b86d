"""The Redis client: opening it, parsing its URL, and mapping its errors.

:func:`open_redis` opens a task group in the entering task and yields a
:class:`~._redis_client.RedisClient`: a bounded pool of connections on anyio streams (so it
runs inside the trio or asyncio tree with ordinary cancellation), auto-pipelined by default.
Replies are matched to commands in FIFO order; a command cancelled after it was written stays
queued on its connection and its late reply is read and dropped, so cancelling a command never
desynchronises a connection (see :mod:`._redis_conn`). Enter the client once and share it; the
tasks that use it never enter it again.

Errors are mapped at one boundary: a Redis that cannot be reached, drops the connection, does
not answer within the client's timeouts or refuses a command (out of memory, read-only
replica) raises :class:`BackendUnavailable` — from the stores, its subclass
:class:`CacheUnavailable` or :class:`NonceStoreUnavailable` — with the client's error (a
``coredis.exceptions`` class, or :class:`TimeoutError`) as ``__cause__``: never a silent
miss, never a silent accept.

The stores built on the client are :class:`~._redis_cache.RedisCache` and
:class:`~._redis_nonce.RedisNonceStore`; every use of coredis' internals is in
:mod:`._coredis`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import anyio
import anyio.lowlevel
import attrs
import coredis.exceptions

from ..._exceptions import BackendUnavailable as BackendUnavailable
from ..._policy._checks import check_count, check_seconds
from ...nursery._errors import describe, unwrapped_groups
from ._coredis import check_internals
from ._redis_client import RedisClient as RedisClient

log = logging.getLogger("megatrio.redis")

# -- errors ---------------------------------------------------------------------------------


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


def is_unavailable(exc: BaseException) -> bool:
    """Whether *exc* means "the backend cannot serve this now" (not a wrong command)."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    # Over maxmemory with maxmemory-policy noeviction, writes fail with an "OOM ..." error.
    return isinstance(exc, coredis.exceptions.ResponseError) and str(exc).startswith("OOM")


async def raise_unavailable(
    error: type[BackendUnavailable], message: str, exc: BaseException
) -> NoReturn:
    """Raise *error* for the coredis error *exc*, or the pending cancellation if any."""
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


# Options a coredis client took that the URL or the arguments decide here: named in the error.
_DECIDED_ELSEWHERE = frozenset(
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

DEFAULT_MAX_CONNECTIONS = 2
"""Connections :func:`open_redis` opens at most by default (``redis_max_connections``).

Few on purpose: with auto-pipelining the client, not the round trips, is the limit, and each
more connection splits the same commands into smaller writes and reads (measured at 64 tasks on
2 cores, cache GETs/s: 1 connection ~63k, 2 ~56k, 4 ~54k, 8 ~48k). Two keep one slow reply from
holding up every caller. Raise it for ``auto_pipeline=False``, where each connection carries one
command at a time."""


@contextlib.asynccontextmanager
async def open_redis(
    url: str,
    *,
    connect_timeout_seconds: float = 2.0,
    stream_timeout_seconds: float = 2.0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    auto_pipeline: bool = True,
    client_name: str | None = None,
    **options: Any,
) -> AsyncIterator[RedisClient]:
    """Open a :class:`RedisClient` for *url*, check it with PING, and close it on exit.

    ``async with open_redis("redis://127.0.0.1:6379/0") as client:`` yields a pool of at most
    *max_connections* connections (replies are never decoded). With *auto_pipeline* (the
    default) the commands of concurrent tasks share connections and go out together, their
    replies matched in order, and the pool grows while every connection is busy; with
    ``auto_pipeline=False`` each connection carries one command at a time. *client_name* is
    set on every connection (``CLIENT SETNAME``).

    Every command is bounded: connecting (with the handshake) by *connect_timeout_seconds*,
    each reply by *stream_timeout_seconds*, and waiting for a free connection by their sum, so
    a dead or frozen server raises instead of hanging. A command whose connection broke (say,
    Redis restarted since its last use) is retried once on a new connection; a timed-out
    command is not retried.

    The pool's task group is opened in the entering task and lives until the block exits, so
    enter it once and share the client: as a runtime resource,
    ``client = await rt.enter_async_context(open_redis(url))`` (held open by a task of its
    own and closed after every child has stopped), or with ``async with`` around the code
    that uses it. Exiting cancels and closes every connection. Errors from the body come out
    as they were raised (not wrapped in an exception group).

    Raises:
        ValueError: *url* is malformed (the message masks its password), a timeout is not
            positive or *max_connections* is below 1.
        TypeError: an argument has the wrong type, or *options* names an argument this
            function does not take (those the URL decides are named as such).
        BackendUnavailable: the first PING failed (refused, timed out, authentication).
        RuntimeError: the installed coredis lacks an internal megatrio relies on (named).
    """
    target = parse_redis_url(url)
    connect = check_seconds(
        "connect_timeout_seconds", connect_timeout_seconds, allow_zero=False, allow_inf=False
    )
    stream = check_seconds(
        "stream_timeout_seconds", stream_timeout_seconds, allow_zero=False, allow_inf=False
    )
    max_connections = check_count("max_connections", max_connections, minimum=1)
    if not isinstance(auto_pipeline, bool):
        raise TypeError(f"auto_pipeline must be a bool, got {auto_pipeline!r}")
    if client_name is not None and not isinstance(client_name, str):
        raise TypeError(f"client_name must be a string or None, got {client_name!r}")
    check_internals()
    decided = sorted(_DECIDED_ELSEWHERE.intersection(options))
    if decided:
        raise TypeError(
            f"open_redis() sets {', '.join(decided)} itself (from the URL or the "
            f"*_seconds arguments); do not pass them as options"
        )
    if options:
        raise TypeError(f"open_redis() got unexpected options: {', '.join(sorted(options))}")
    # The task group wraps whatever leaves the block; show the real error.
    with unwrapped_groups():
        async with anyio.create_task_group() as tg:
            client = RedisClient(
                target,
                tg,
                connect_timeout=connect,
                stream_timeout=stream,
                max_connections=max_connections,
                auto_pipeline=auto_pipeline,
                client_name=client_name,
            )
            try:
                await client.ping()
            except (coredis.exceptions.RedisError, TimeoutError) as exc:
                await raise_unavailable(
                    BackendUnavailable, f"cannot reach Redis at {target.redacted}", exc
                )
            log.info("redis %s: connected", target.redacted)
            try:
                yield client
            finally:
                log.debug("redis %s: closing", target.redacted)
                tg.cancel_scope.cancel()


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
