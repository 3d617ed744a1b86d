"""The WebSocket hub: every connection of this process, its channels, and the supervised child
their task trees live under.

:meth:`Hub.run` is the child (``ws`` in the tree). A listener that has a WebSocket handshake
hands the connection over with :meth:`Hub.serve`, which runs the connection's task tree in the
hub's task group and waits for it there: the tree is the hub's, and cancelling the listener's
task (its graceful deadline) cancels the tree and waits for it. A connection's failure —
whatever a handler or a peer does — is contained to it: logged once, counted, never the hub's
crash.

**Channels.** :meth:`Hub.broadcast` encodes a message once and only *offers* it to each
member's send queue: it never awaits a socket, so one stalled client cannot slow the others
(its queue fills and it is closed with 1013, or, on a ``drop_oldest`` channel, its oldest
messages of that channel are dropped). Membership is local to this process.

**Cross-node fan-out.** With a bus (core NATS), a broadcast is also published once on
``megatrio.<namespace>.ws.<channel>`` (the channel's name base64url-encoded into one subject
token), with this node's id in a header; every node's hub subscribes to
``megatrio.<namespace>.ws.>`` and offers what other nodes published to its own members, and
skips its own (delivered locally already): each member gets a broadcast exactly once while
the bus delivers it (the bus is at-most-once: a node disconnected from NATS misses what is
published meanwhile). A broadcast never waits for the bus either: when the bus's outbox is
full the remote copy is dropped and counted (``fanout_dropped``). One wildcard subscription per
node, rather than one per channel, keeps joins free of NATS round trips; every node then
receives every channel's broadcasts and drops those it has no member for.

**Stopping.** The hub stops after the HTTP listener that feeds it began its graceful stop
(every connection has been sent 1001 by then, through its stop watcher); what is still open
when the hub itself is asked to stop is closed with 1001 the same way, and the hub returns once
every connection has ended (its deadline cancels the rest).
"""

from __future__ import annotations

import base64
import binascii
import collections
import itertools
import logging
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import anyio.abc
import trio
import trio_websocket

from ..._policy._throttle import TokenBucket
from ..._samples import Sample
from ...nursery._child import ChildContext, current_child
from ...nursery._errors import containing, describe, log_exception
from ..logs._redact import Redactor
from ._connection import GOING_AWAY, Connection, encode
from ._endpoint import WebSocketEndpoint
from ._frames import encode_frame
from ._roster import Roster
from ._stats import hub_samples

if TYPE_CHECKING:
    from ..nats._bus import Bus

log = logging.getLogger("megatrio.ws")

_ORIGIN = "Megatrio-Origin"
_FRAME = "Megatrio-Frame"
_EXCLUDE = "Megatrio-Exclude"
_FANOUT_PENDING = 10_000
# Normal, going away, no status, abnormal (the peer vanished): not worth a log line.
_ORDINARY_CLOSES = frozenset({1000, 1001, 1005, 1006})
_CLOSE_LOGS_PER_MINUTE = 10
_hubs = itertools.count(1)

_ANNOTATE_SECONDS = 1.0
_HANDSHAKE_SECONDS = 10.0


class Hub:
    """The WebSocket endpoints *endpoints* of this process (module docstring). *node* names
    this process in connection ids (default: host and pid)."""

    def __init__(
        self,
        endpoints: Sequence[WebSocketEndpoint],
        *,
        node: str | None = None,
        redactor: Redactor | None = None,
        bus: Bus | None = None,
        roster: Roster | None = None,
        namespace: str = "app",
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.node = node or f"{socket.gethostname()}-{os.getpid()}-{next(_hubs)}"
        self._bus = bus
        self.roster = roster
        self._prefix = f"megatrio.{namespace.lower()}.ws."
        self.fanout_sent = 0
        self.fanout_received = 0
        self.fanout_dropped = 0
        self._redactor = redactor or Redactor()
        self._ids = itertools.count(1)
        self.connections: dict[str, Connection] = {}
        self._channels: dict[str, set[Connection]] = collections.defaultdict(set)
        self._drop_oldest: set[str] = set()
        self._presence: set[str] = set()
        self._group: trio.Nursery | None = None
        self._ctx: ChildContext | None = None
        self._idle = trio.Event()
        self._idle.set()
        self.closes: collections.Counter[int] = collections.Counter()
        self._close_logs = TokenBucket.per_period(_CLOSE_LOGS_PER_MINUTE, 60.0)
        self.rejections: collections.Counter[int] = collections.Counter()
        self.handler_errors = 0
        self.connection_errors = 0
        self.accepted = 0

    # -- routing ------------------------------------------------------------------------------

    def match(self, path: str) -> tuple[WebSocketEndpoint, dict[str, str]] | None:
        for endpoint in self.endpoints:
            params = endpoint.match(path)
            if params is not None:
                return endpoint, params
        return None

    # -- channels -----------------------------------------------------------------------------

    def configure_channel(
        self, channel: str, *, drop_oldest: bool | None = None, presence: bool | None = None
    ) -> None:
        """Settings of *channel* (None leaves one as it is).

        *drop_oldest*: a member whose queue is full loses the oldest messages queued with that
        setting (ephemeral data) instead of being closed. *presence*: members get
        ``{"presence": "join" | "leave", "channel": ..., "id": ...}`` when another member
        joins or leaves, on any node (configure it on every node).
        """
        for enabled, names in ((drop_oldest, self._drop_oldest), (presence, self._presence)):
            if enabled is True:
                names.add(channel)
            elif enabled is False:
                names.discard(channel)

    def join(self, conn: Connection, channel: str) -> None:
        if conn.conn_state.value == "closed":
            return
        members = self._channels[channel]
        if conn not in members:
            members.add(conn)
            conn.channels.add(channel)
            if self.roster is not None:
                self.roster.joined(channel, conn.id)
            if channel in self._presence:
                self._announce(channel, "join", conn.id)

    def leave(self, conn: Connection, channel: str) -> None:
        members = self._channels.get(channel)
        if members is None or conn not in members:
            return
        members.discard(conn)
        if not members:
            del self._channels[channel]
        conn.channels.discard(channel)
        if self.roster is not None:
            self.roster.left(channel, conn.id)
        if channel in self._presence:
            self._announce(channel, "leave", conn.id)

    def _announce(self, channel: str, event: str, conn_id: str) -> None:
        self.broadcast(
            channel, {"presence": event, "channel": channel, "id": conn_id}, exclude=(conn_id,)
        )

    def members(self, channel: str) -> list[str]:
        """The ids of this process's connections in *channel*."""
        return [conn.id for conn in self._channels.get(channel, ())]

    async def lookup(self, channels: Sequence[str]) -> dict[str, list[str]]:
        """The members of each of *channels* on every node (from the Redis roster, in one
        pipelined round trip), or on this node alone when there is no roster.

        Raises:
            megatrio.BackendUnavailable and the like: Redis cannot be reached.
        """
        if self.roster is None:
            return {channel: sorted(self.members(channel)) for channel in channels}
        return await self.roster.lookup(channels)

    def samples(self) -> Iterator[Sample]:
        """The hub's metrics (a source for ``Runtime.metric_sources``; ``megatrio run``
        registers it as ``ws``): see :func:`._stats.hub_samples`."""
        return hub_samples(self)

    def channels(self) -> dict[str, int]:
        """Every channel with members here, and how many."""
        return {name: len(members) for name, members in self._channels.items()}

    def broadcast(self, channel: str, message: object, *, exclude: Iterable[str] = ()) -> int:
        """Offer *message* (encoded once) to every member of *channel* but those in
        *exclude*; how many queued it. Not a checkpoint: it never waits."""
        members = self._channels.get(channel)
        if not members and self._bus is None:
            return 0
        message_frame = encode(message)
        skip = set(exclude)
        if self._bus is not None:
            self._publish(channel, message_frame, skip)
        return self._offer(channel, message_frame, skip)

    def _offer(self, channel: str, message: str | bytes, skip: set[str]) -> int:
        members = self._channels.get(channel)
        if not members:
            return 0
        # Framed once, the same bytes for every member (a server's frames are not masked).
        frame = encode_frame(message)
        size = len(frame)
        drop_oldest = channel in self._drop_oldest
        queued = 0
        # A copy: a member that overflows leaves the channel as its connection closes.
        for conn in list(members):
            if conn.id not in skip and conn.offer(frame, size, drop_oldest=drop_oldest):
                queued += 1
        return queued

    def _publish(self, channel: str, frame: str | bytes, skip: set[str]) -> None:
        assert self._bus is not None
        token = base64.urlsafe_b64encode(channel.encode()).rstrip(b"=").decode()
        headers = {_ORIGIN: self.node, _FRAME: "binary" if isinstance(frame, bytes) else "text"}
        if skip:
            headers[_EXCLUDE] = ",".join(sorted(skip))
        data = frame if isinstance(frame, bytes) else frame.encode()
        try:
            published = self._bus.publish_nowait(self._prefix + token, data, headers=headers)
        except anyio.ClosedResourceError:
            published = False
        if published:
            self.fanout_sent += 1
        else:
            self.fanout_dropped += 1

    async def _receive_remote(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        assert self._bus is not None
        async with self._bus.subscribe(
            self._prefix + ">", max_pending=_FANOUT_PENDING, when_full="drop"
        ) as subscription:
            task_status.started()
            async for msg in subscription:
                headers = msg.headers or {}
                if headers.get(_ORIGIN) == self.node:
                    continue  # delivered here when it was broadcast
                token = msg.subject.removeprefix(self._prefix)
                try:
                    padded = token + "=" * (-len(token) % 4)
                    channel = base64.urlsafe_b64decode(padded).decode()
                except (binascii.Error, UnicodeDecodeError):
                    continue  # not a channel of ours
                data = msg.data
                frame: str | bytes = data if headers.get(_FRAME) == "binary" else data.decode()
                skip = set(filter(None, headers.get(_EXCLUDE, "").split(",")))
                self.fanout_received += 1
                self._offer(channel, frame, skip)

    def send_to(self, conn_id: str, message: object) -> bool:
        """Offer *message* to connection *conn_id* of this process; False if there is none
        (or its queue refused it)."""
        conn = self.connections.get(conn_id)
        return conn is not None and conn.send(message)

    @property
    def queued_bytes(self) -> int:
        return sum(conn.queued_bytes for conn in self.connections.values())

    # -- the child ----------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the hub until stopped: reports started once connections can be handed over."""
        self._ctx = current_child()
        async with trio.open_nursery() as group:
            self._group = group
            group.start_soon(self._annotate_every_second)
            if self._bus is not None:
                await group.start(self._receive_remote)
            if self.roster is not None:
                await group.start(self.roster.run)
            task_status.started()
            if self._ctx is None:
                await trio.sleep_forever()
            await self._ctx.wait_stopping()
            for conn in list(self.connections.values()):
                conn.close(GOING_AWAY, "server going away")
            await self._idle.wait()
            group.cancel_scope.cancel()
        self._group = None
        self._annotate()

    async def serve(
        self,
        endpoint: WebSocketEndpoint,
        params: dict[str, str],
        stream: trio.abc.Stream,
        peer: str,
        stopping: trio.Event,
    ) -> None:
        """Serve the WebSocket handshake waiting on *stream* with *endpoint*, as a task tree
        of the hub; return when it has ended. Cancelled, it cancels that tree and waits."""
        done = trio.Event()
        scope = trio.CancelScope()
        group = self._group
        if group is None:
            await _refuse(stream)
            return
        group.start_soon(self._contained, endpoint, params, stream, peer, stopping, scope, done)
        try:
            await done.wait()
        except trio.Cancelled:
            scope.cancel()
            with trio.CancelScope(shield=True):
                await done.wait()
            raise

    async def _contained(
        self,
        endpoint: WebSocketEndpoint,
        params: dict[str, str],
        stream: trio.abc.Stream,
        peer: str,
        stopping: trio.Event,
        scope: trio.CancelScope,
        done: trio.Event,
    ) -> None:
        try:
            with scope, containing(lambda error: self._connection_failed(error, peer)):
                async with trio.open_nursery() as protocol:
                    with trio.move_on_after(_HANDSHAKE_SECONDS) as handshake:
                        request = await trio_websocket.wrap_server_stream(
                            protocol,
                            stream,
                            max_message_size=endpoint.settings.max_message_bytes,
                        )
                    if handshake.cancelled_caught:
                        protocol.cancel_scope.cancel()
                        return
                    conn = Connection(
                        self, endpoint, f"{self.node}:{next(self._ids)}", request, params, peer
                    )
                    await conn.run(request, stopping)
                    protocol.cancel_scope.cancel()
        finally:
            done.set()

    # -- what connections report ------------------------------------------------------------

    def opened(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self.accepted += 1
        self._idle = trio.Event()

    def closed(self, conn: Connection) -> None:
        for channel in list(conn.channels):
            self.leave(conn, channel)
        if self.connections.pop(conn.id, None) is not None:
            code = conn.close_code or 1006
            self.closes[code] += 1
            if code not in _ORDINARY_CLOSES:
                self._log_close(conn, code)
        if not self.connections:
            self._idle.set()

    def _log_close(self, conn: Connection, code: int) -> None:
        # Once per connection, and at most a burst per minute: a peer that sends bad frames
        # on many connections cannot flood the log (the counts are in the tree).
        if self._close_logs.try_acquire(trio.current_time()):
            log.info(
                "ws %s: connection %s from %s closed %d (%s)",
                conn.endpoint.rule,
                conn.id,
                conn.remote,
                code,
                self._redactor.scrub(conn.close_reason or "no reason"),
            )

    def rejected(self, conn: Connection, status: int) -> None:
        self.rejections[status] += 1

    def handler_failed(self, conn: Connection, handler: str, error: Exception) -> None:
        self.handler_errors += 1
        log_exception(
            log,
            logging.ERROR,
            error,
            "ws %s: %s of connection %s failed: %s",
            conn.endpoint.rule,
            handler,
            conn.id,
            self._redactor.scrub(describe(error)),
        )

    def _connection_failed(self, error: Exception, peer: str) -> None:
        self.connection_errors += 1
        log.warning(
            "ws: connection from %s failed and was closed: %s",
            peer,
            self._redactor.scrub(describe(error)),
        )

    # -- reporting ------------------------------------------------------------------------------

    async def _annotate_every_second(self) -> None:
        while True:
            self._annotate()
            await trio.sleep(_ANNOTATE_SECONDS)

    def _annotate(self) -> None:
        if self._ctx is not None:
            self._ctx.annotate(
                connections=len(self.connections),
                channels=len(self._channels),
                queued_bytes=self.queued_bytes,
                accepted=self.accepted,
                closes={str(code): n for code, n in sorted(self.closes.items())},
                rejected={str(code): n for code, n in sorted(self.rejections.items())},
                handler_errors=self.handler_errors,
                connection_errors=self.connection_errors,
                node=self.node,
                fanout=self._bus is not None,
                fanout_sent=self.fanout_sent,
                fanout_received=self.fanout_received,
                fanout_dropped=self.fanout_dropped,
                roster=self.roster is not None,
                roster_failures=self.roster.failures if self.roster is not None else 0,
            )


async def _refuse(stream: trio.abc.Stream) -> None:
    # No hub running (starting or stopped): the client may retry elsewhere.
    with trio.move_on_after(1):
        await stream.send_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
