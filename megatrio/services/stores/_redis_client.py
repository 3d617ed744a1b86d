"""The Redis client the stores use: a bounded pool of auto-pipelined connections.

Built by :func:`~._redis.open_redis`, which owns the task group the connections run in. Each
command goes to a connection chosen by :func:`~megatrio._policy._pipeline.choose_connection`:

- **auto-pipelined** (the default): to the least loaded open connection, whatever it has in
  flight; commands queued while its writer is busy go out in one write and their replies are
  matched in order. When even the least loaded one is busy, one more connection is opened in
  the background, up to ``max_connections``.
- **not pipelined** (``auto_pipeline=False``): one command at a time per connection, as a
  classic pool: an idle connection, else a new one up to ``max_connections``, else wait.

A command whose connection broke is retried once on another (a connection refused or lost,
not a timeout or an error reply). Waiting for a connection is bounded by the pool timeout.
Every method is a checkpoint; cancelling one cancels only its wait (see :mod:`._redis_conn`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

import anyio
import anyio.abc
from coredis.exceptions import ConnectionError as RedisConnectionError

from ..._policy._pipeline import Connect, choose_connection
from ..._policy._resp import Reply, RespArg, encode_command
from ._redis_conn import RedisConnection

if TYPE_CHECKING:
    from ._redis import RedisTarget

log = logging.getLogger("megatrio.redis")

# A retried command waits this long first, so that a server that just closed every connection
# (a restart) has a moment to accept again.
_RETRY_DELAY_SECONDS = 0.01


@final
class RedisClient:
    """A pool of connections to one Redis; yielded by :func:`~megatrio.open_redis`.

    Replies are undecoded: ``bytes`` for strings, ``int``, ``None``, ``list``. Errors are
    coredis' exception classes (``coredis.exceptions``): ``ConnectionError`` when Redis cannot
    be reached or the connection broke, :class:`TimeoutError` when a reply misses the stream
    timeout or no connection is free within the pool timeout, ``ResponseError`` subclasses for
    error replies (``WrongTypeError``, ``ReadOnlyError``, ...).
    """

    def __init__(
        self,
        target: RedisTarget,
        task_group: anyio.abc.TaskGroup,
        *,
        connect_timeout: float,
        stream_timeout: float,
        max_connections: int,
        auto_pipeline: bool,
        client_name: str | None,
    ) -> None:
        self.target = target
        self.max_connections = max_connections
        self.auto_pipeline = auto_pipeline
        self.client_name = client_name
        self._tg = task_group
        self._connect_timeout = connect_timeout
        self._stream_timeout = stream_timeout
        self._pool_timeout = connect_timeout + stream_timeout
        self._connections: list[RedisConnection] = []
        self._connecting = 0
        self._opened = 0
        self._changed: anyio.Event | None = None

    # -- commands ---------------------------------------------------------------------------

    async def execute(self, *args: RespArg) -> Reply:
        """Send one command (``execute("HSET", "h", "f", b"v")``) and return its raw reply."""
        payload = encode_command(args)
        try:
            return await self._request(payload)
        except RedisConnectionError:
            await anyio.sleep(_RETRY_DELAY_SECONDS)
            return await self._request(payload)

    async def ping(self) -> bytes:
        reply = await self.execute("PING")
        assert isinstance(reply, bytes)
        return reply

    async def get(self, key: str | bytes) -> bytes | None:
        """The value of *key*, or None if it does not exist."""
        reply = await self.execute("GET", key)
        assert reply is None or isinstance(reply, bytes)
        return reply

    async def set(
        self, key: str | bytes, value: bytes, *, px: int | None = None, nx: bool = False
    ) -> bool:
        """SET *key* to *value*, expiring after *px* milliseconds if given; with *nx* only if
        the key does not exist. True if it was set."""
        if px is None:
            reply = await (
                self.execute("SET", key, value, "NX") if nx else self.execute("SET", key, value)
            )
        elif nx:
            reply = await self.execute("SET", key, value, "PX", px, "NX")
        else:
            reply = await self.execute("SET", key, value, "PX", px)
        return reply is not None

    async def delete(self, *keys: str | bytes) -> int:
        """Delete *keys*; the number that existed."""
        reply = await self.execute("DEL", *keys)
        assert isinstance(reply, int)
        return reply

    async def exists(self, *keys: str | bytes) -> int:
        """How many of *keys* exist (a key named twice counts twice)."""
        reply = await self.execute("EXISTS", *keys)
        assert isinstance(reply, int)
        return reply

    # -- the pool ---------------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Connections open now (not counting those being opened)."""
        return len(self._connections)

    @property
    def connections_opened(self) -> int:
        """Connections opened successfully since the client was opened."""
        return self._opened

    @property
    def writes(self) -> int:
        """Socket writes by the connections open now (each carries one or more commands)."""
        return sum(connection.writes for connection in self._connections)

    def disconnect(self) -> None:
        """Close every open connection now; the next command opens a new one. Commands in
        flight on them fail with ConnectionError (and are retried once). Not a checkpoint."""
        for connection in list(self._connections):
            connection.close()
        self._connections.clear()
        self._notify()

    async def _request(self, payload: bytes) -> Reply:
        connections = self._connections
        index, connect = choose_connection(
            [c.inflight.outstanding for c in connections],
            self._connecting,
            self.max_connections,
            pipelined=self.auto_pipeline,
        )
        if index is not None:
            if connect is Connect.BACKGROUND:
                self._connecting += 1
                self._tg.start_soon(self._open_in_background)
            return await connections[index].request(payload)
        connection = await self._wait_for_connection(connect)
        return await connection.request(payload)

    async def _wait_for_connection(self, connect: Connect) -> RedisConnection:
        try:
            with anyio.fail_after(self._pool_timeout):
                while True:
                    if connect is Connect.HERE:
                        self._connecting += 1
                        connection: RedisConnection = await self._tg.start(self._open)
                        return connection
                    changed = self._changed
                    if changed is None:
                        changed = self._changed = anyio.Event()
                    await changed.wait()
                    index, connect = choose_connection(
                        [c.inflight.outstanding for c in self._connections],
                        self._connecting,
                        self.max_connections,
                        pipelined=self.auto_pipeline,
                    )
                    if index is not None:
                        return self._connections[index]
        except TimeoutError:
            raise TimeoutError(
                f"no Redis connection free within {self._pool_timeout} s "
                f"({len(self._connections)} of {self.max_connections} open, all busy)"
            ) from None

    def _new_connection(self) -> RedisConnection:
        return RedisConnection(
            self.target,
            connect_timeout=self._connect_timeout,
            stream_timeout=self._stream_timeout,
            client_name=self.client_name,
            on_ready=self._ready,
            on_closed=self._closed,
            on_idle=self._notify,
        )

    async def _open(
        self, *, task_status: anyio.abc.TaskStatus[RedisConnection] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        # The caller counted this connection in _connecting; _ready or _closed uncounts it.
        await self._new_connection().run(task_status=task_status)

    async def _open_in_background(self) -> None:
        try:
            await self._new_connection().run()
        except Exception as exc:  # the commands go on over the connections already open
            log.debug("redis %s: opening another connection failed: %s", self.target.redacted, exc)

    def _ready(self, connection: RedisConnection) -> None:
        self._connecting -= 1
        self._opened += 1
        self._connections.append(connection)
        self._notify()

    def _closed(self, connection: RedisConnection) -> None:
        if not connection.was_ready:
            self._connecting -= 1
        elif connection in self._connections:
            self._connections.remove(connection)
        self._notify()

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    def __repr__(self) -> str:
        mode = "pipelined" if self.auto_pipeline else "one command per connection"
        return (
            f"<RedisClient {self.target.redacted} {len(self._connections)}/"
            f"{self.max_connections} connections, {mode}>"
        )
