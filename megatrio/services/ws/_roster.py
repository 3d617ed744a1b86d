"""The cluster-wide roster of WebSocket channels, in Redis: who is connected where.

One sorted set per channel, ``megatrio:<namespace>:ws:roster:<channel>``, whose members are
connection ids (``<node>:<n>``) scored by the time their entry expires (epoch milliseconds).
Each node keeps its own entries alive: a join or leave is written at once (in the background,
batched with whatever else changed meanwhile), and every ``refresh_seconds`` the node rewrites
all of its entries with a new expiry ``ttl_seconds`` ahead — one ``ZADD`` per channel, all of
them pipelined. A node that dies stops refreshing, so its entries expire by their score: a
lookup reads only entries whose expiry lies ahead (``ZRANGE ... BYSCORE now +inf``), and each
refresh trims the expired ones of the channels it writes (``ZREMRANGEBYSCORE``). The set's own
``PEXPIRE`` is set with every write, so a channel whose every node died disappears too — no
sweeper scans anything. On a graceful stop a node removes its own entries.

:meth:`Roster.lookup` of several channels is one command — a script that reads every set —
so one round trip for any number of channels (the refresh's writes are pipelined instead:
issued concurrently, the Redis client writes them together).

Clocks: expiries are this node's wall clock; nodes whose clocks disagree by more than a small
part of ``ttl_seconds`` see each other's entries expire early or late by that much.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import anyio.abc

from ..._policy._checks import check_seconds
from ...nursery._errors import describe

log = logging.getLogger("megatrio.ws")


class RedisLike(Protocol):
    """What the roster needs of a Redis client (``megatrio``'s ``RedisClient``)."""

    async def execute(self, *args: str | bytes | int | float) -> object: ...


class Roster:
    """This node's entries in the cluster roster (module docstring)."""

    def __init__(
        self,
        client: RedisLike,
        *,
        namespace: str,
        ttl_seconds: float = 30.0,
        refresh_seconds: float = 10.0,
    ) -> None:
        self._client = client
        self._prefix = f"megatrio:{namespace.lower()}:ws:roster:"
        self.ttl_seconds = check_seconds("ttl_seconds", ttl_seconds, allow_zero=False)
        self.refresh_seconds = check_seconds(
            "refresh_seconds", refresh_seconds, allow_zero=False, allow_inf=False
        )
        if self.refresh_seconds >= self.ttl_seconds:
            raise ValueError(
                f"refresh_seconds ({refresh_seconds}) must be below ttl_seconds ({ttl_seconds}): "
                "entries would expire between refreshes"
            )
        # channel -> this node's members there
        self._local: dict[str, set[str]] = collections.defaultdict(set)
        self._joined: dict[str, set[str]] = collections.defaultdict(set)
        self._left: dict[str, set[str]] = collections.defaultdict(set)
        self._dirty = anyio.Event()
        self.writes = 0
        self.failures = 0
        self._failing = False

    def key(self, channel: str) -> str:
        return self._prefix + channel

    # -- the hub's side (not checkpoints) ------------------------------------------------------

    def joined(self, channel: str, conn_id: str) -> None:
        self._local[channel].add(conn_id)
        self._left[channel].discard(conn_id)
        self._joined[channel].add(conn_id)
        self._dirty.set()

    def left(self, channel: str, conn_id: str) -> None:
        members = self._local.get(channel)
        if members is not None:
            members.discard(conn_id)
            if not members:
                del self._local[channel]
        self._joined[channel].discard(conn_id)
        self._left[channel].add(conn_id)
        self._dirty.set()

    # -- lookups -------------------------------------------------------------------------------

    async def lookup(self, channels: Sequence[str]) -> dict[str, list[str]]:
        """The live members of each of *channels* across the cluster: one command, one round
        trip, however many channels (a script that reads every set)."""
        unique = list(dict.fromkeys(channels))
        if not unique:
            return {}
        reply = await self._client.execute(
            "EVAL", _LOOKUP, len(unique), *(self.key(c) for c in unique), _now_ms()
        )
        assert isinstance(reply, list)
        found = {
            channel: sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
            for channel, members in zip(unique, reply, strict=True)
        }
        return {channel: found[channel] for channel in channels}

    # -- the refresher (a task of the hub) ----------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Write changes as they come and refresh everything every ``refresh_seconds``, until
        cancelled; then remove this node's entries (bounded, shielded)."""
        task_status.started()
        try:
            next_refresh = anyio.current_time()
            while True:
                with anyio.move_on_at(next_refresh):
                    await self._dirty.wait()
                self._dirty = anyio.Event()
                if anyio.current_time() >= next_refresh:
                    await self._guarded(self._refresh_all)
                    next_refresh = anyio.current_time() + self.refresh_seconds
                else:
                    await self._guarded(self._write_changes)
        finally:
            with anyio.move_on_after(2.0, shield=True):
                await self._guarded(self._remove_all)

    async def _guarded(self, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except Exception as exc:
            # Redis down: entries are rewritten at the next refresh; lookups fail meanwhile.
            # Logged when the failures begin and when they end, not once per write.
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.warning("ws roster: Redis writes failing: %s", describe(exc))
            return
        if self._failing:
            self._failing = False
            log.warning("ws roster: Redis writes work again (%d failed)", self.failures)

    async def _write_changes(self) -> None:
        joined, self._joined = self._joined, collections.defaultdict(set)
        left, self._left = self._left, collections.defaultdict(set)
        expiry = _now_ms() + int(self.ttl_seconds * 1000)
        commands: list[tuple[str | int, ...]] = []
        for channel, ids in joined.items():
            if ids:
                commands.extend(self._zadd(channel, ids, expiry))
        for channel, ids in left.items():
            if ids:
                commands.append(("ZREM", self.key(channel), *sorted(ids)))
        await self._pipelined(commands)

    async def _refresh_all(self) -> None:
        self._joined.clear()
        left, self._left = self._left, collections.defaultdict(set)
        now = _now_ms()
        expiry = now + int(self.ttl_seconds * 1000)
        commands: list[tuple[str | int, ...]] = []
        for channel, ids in self._local.items():
            commands.extend(self._zadd(channel, ids, expiry))
            commands.append(("ZREMRANGEBYSCORE", self.key(channel), "-inf", now))
        for channel, ids in left.items():
            if ids:
                commands.append(("ZREM", self.key(channel), *sorted(ids)))
        await self._pipelined(commands)

    async def _remove_all(self) -> None:
        mine: dict[str, set[str]] = collections.defaultdict(set)
        for table in (self._local, self._left, self._joined):
            for channel, ids in table.items():
                mine[channel] |= ids
        commands: list[tuple[str | int, ...]] = [
            ("ZREM", self.key(channel), *sorted(ids)) for channel, ids in mine.items() if ids
        ]
        await self._pipelined(commands)

    def _zadd(self, channel: str, ids: set[str], expiry: int) -> list[tuple[str | int, ...]]:
        key = self.key(channel)
        pairs: list[str | int] = []
        for conn_id in sorted(ids):
            pairs += [expiry, conn_id]
        # The set outlives its newest entry by nothing: every writer sets now + ttl, and live
        # nodes write more often than that.
        return [("ZADD", key, *pairs), ("PEXPIRE", key, int(self.ttl_seconds * 1000))]

    async def _pipelined(self, commands: list[tuple[str | int, ...]]) -> None:
        if not commands:
            return

        async def one(command: tuple[str | int, ...]) -> None:
            await self._client.execute(*command)

        async with anyio.create_task_group() as tg:
            for command in commands:
                tg.start_soon(one, command)
        self.writes += 1


# KEYS: the channels' sets; ARGV[1]: now (ms). One array of live members per set.
_LOOKUP = """
local found = {}
for i, key in ipairs(KEYS) do
    found[i] = redis.call('ZRANGE', key, ARGV[1], '+inf', 'BYSCORE')
end
return found
"""


def _now_ms() -> int:
    return int(time.time() * 1000)
