"""One Redis connection on an anyio byte stream: a writer, a reader and a deadline watcher.

``await task_group.start(connection.run)`` connects, runs the handshake (AUTH, SELECT,
CLIENT SETNAME as configured) and returns once the connection is usable; the connection then
serves in that task until it breaks or :meth:`RedisConnection.close` is called.
:meth:`RedisConnection.request` queues one encoded command and waits for its reply: commands
of many tasks queued while the writer is busy go out in one write, and replies are matched to
commands by the sans-IO :class:`~megatrio._policy._pipeline.InFlight` FIFO.

Cancellation: a caller cancelled before its command was written withdraws it (never sent);
after, its slot is abandoned and the reply read and dropped, so the connection stays in sync.
A command not answered within the stream timeout raises :class:`TimeoutError` the same way
(its late reply is dropped). When the connection breaks, every waiting caller gets
``coredis.exceptions.ConnectionError`` and the pool forgets the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
import anyio.lowlevel
from coredis.exceptions import ConnectionError as RedisConnectionError

from ..._policy._pipeline import InFlight, Slot
from ..._policy._resp import ErrorReply, Reply, ReplyParser, RespProtocolError, encode_command
from ...nursery._errors import describe
from ._coredis import error_from_reply

if TYPE_CHECKING:
    from ._redis import RedisTarget

log = logging.getLogger("megatrio.redis")

try:  # the C parser when installed: the same interface, a few microseconds less per reply
    import hiredis

    def _new_parser() -> _Parser:
        reader: _Parser = hiredis.Reader(replyError=ErrorReply, protocolError=RespProtocolError)
        return reader

    PARSER = "hiredis"
except ImportError:  # pragma: no cover - the test extra installs hiredis

    def _new_parser() -> _Parser:
        return ReplyParser()

    PARSER = "python"


class _Parser(Protocol):
    def feed(self, data: bytes, /) -> None: ...
    def gets(self) -> Any: ...


_READ_SIZE = 65536


def _command_name(payload: bytes) -> str:
    # payload is b"*N\r\n$L\r\nNAME\r\n...": the name is the third CRLF-separated field.
    return payload.split(b"\r\n", 3)[2].decode(errors="replace")


class RedisConnection:
    """A connection to *target*; see the module docstring. Built and run by the pool."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        connect_timeout: float,
        stream_timeout: float,
        client_name: str | None,
        on_ready: Callable[[RedisConnection], None],
        on_closed: Callable[[RedisConnection], None],
        on_idle: Callable[[], None],
        parser: Callable[[], _Parser] = _new_parser,
    ) -> None:
        self.target = target
        self.inflight = InFlight()
        self.usable = False
        self.was_ready = False
        self.writes = 0
        """Writes to the socket so far: with pipelining, far fewer than commands."""
        self._connect_timeout = connect_timeout
        self._stream_timeout = stream_timeout
        self._client_name = client_name
        self._on_ready = on_ready
        self._on_closed = on_closed
        self._on_idle = on_idle
        self._parser = parser()
        self._stream: anyio.abc.ByteStream | None = None
        self._scope: anyio.CancelScope | None = None
        # Set once the connection breaks or closes; from then on nothing new is issued on it.
        self._error: BaseException | None = None
        # Set while the writer / the watcher wait for work; whoever gives them work sets it.
        self._writer_idle: anyio.Event | None = None
        self._watcher_idle: anyio.Event | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[RedisConnection] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect and handshake within the connect timeout, report started, then serve until
        the connection breaks or is closed (then return: the pool has forgotten it).

        Raises (only before started):
            coredis.exceptions.ConnectionError: connecting failed or timed out.
            coredis.exceptions.ResponseError: the server refused the handshake (wrong password,
                unknown database); the subclass coredis would raise.
        """
        ready = False
        try:
            try:
                with anyio.fail_after(self._connect_timeout):
                    self._stream = await self._open_stream()
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(
                    f"cannot connect to Redis at {self.target.redacted}: {describe(exc)}"
                ) from exc
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                tg.start_soon(self._read_loop)
                tg.start_soon(self._write_loop)
                tg.start_soon(self._watch_loop)
                await self._handshake()
                if self._error is None:
                    ready = self.usable = self.was_ready = True
                    self._on_ready(self)
                    task_status.started(self)
        finally:
            self.usable = False
            if self._error is None:  # closed from outside (the pool's task group exited)
                self._error = RedisConnectionError("the connection was closed by the client")
            if self._stream is not None:
                await anyio.aclose_forcefully(self._stream)
            self._fail_waiting()
            self._on_closed(self)
        if not ready and self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop using the connection now; its waiting callers get ConnectionError. Not a
        checkpoint; idempotent."""
        self._break(RedisConnectionError("the connection was closed by the client"))

    def _break(self, error: BaseException) -> None:
        self.usable = False
        if self._error is None:
            self._error = error
        if self._scope is not None:
            self._scope.cancel()

    def _fail_waiting(self) -> None:
        cause = self._error
        for slot in self.inflight.fail_all():
            error = RedisConnectionError(
                f"connection to Redis at {self.target.redacted} lost"
                + (f": {describe(cause)}" if cause is not None else "")
            )
            error.__cause__ = cause
            slot.outcome = error
            slot.waiter.set()

    async def _open_stream(self) -> anyio.abc.ByteStream:
        target = self.target
        if target.unix_path is not None:
            return await anyio.connect_unix(target.unix_path)
        assert target.host is not None
        if target.tls:
            return await anyio.connect_tcp(target.host, target.port, tls=True)
        return await anyio.connect_tcp(target.host, target.port)

    async def _handshake(self) -> None:
        commands: list[tuple[bytes | str | int, ...]] = []
        target = self.target
        if target.password is not None:
            if target.username:
                commands.append(("AUTH", target.username, target.password))
            else:
                commands.append(("AUTH", target.password))
        if target.db:
            commands.append(("SELECT", target.db))
        if self._client_name is not None:
            commands.append(("CLIENT", "SETNAME", self._client_name))
        try:
            for command in commands:
                await self.request(encode_command(command), within=self._connect_timeout)
        except TimeoutError as exc:
            self._break(
                RedisConnectionError(
                    f"cannot connect to Redis at {target.redacted}: the handshake timed out"
                )
            )
            assert self._error is not None
            self._error.__cause__ = exc
        except Exception as exc:
            self._break(exc)

    # -- requests ---------------------------------------------------------------------------

    async def request(self, payload: bytes, *, within: float | None = None) -> Reply:
        """Queue the encoded command *payload* and return its reply. Always a checkpoint.

        Raises:
            TimeoutError: no reply within the stream timeout (or *within* seconds).
            coredis.exceptions.ConnectionError: the connection broke or was closed.
            coredis.exceptions.ResponseError: the server answered with an error (its subclass).
        """
        # A caller cancelled already never issues: the writer, woken by the issue, could run
        # before the cancellation is delivered at the wait below, and send the command.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._error is not None and self.was_ready:
            # Broken, not yet forgotten by the pool: a command issued now might never be
            # failed by the closing connection; the client retries it on another.
            raise RedisConnectionError(
                f"connection to Redis at {self.target.redacted} lost: {describe(self._error)}"
            ) from self._error
        event = anyio.Event()
        deadline = anyio.current_time() + (self._stream_timeout if within is None else within)
        slot = self.inflight.issue(payload, deadline, event)
        writer = self._writer_idle
        if writer is not None:
            self._writer_idle = None
            writer.set()
        watcher = self._watcher_idle
        if watcher is not None:
            self._watcher_idle = None
            watcher.set()
        try:
            await event.wait()
        except BaseException:
            self.inflight.cancel(slot)
            if not self.inflight.outstanding:
                self._on_idle()
            raise
        outcome = slot.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    # -- the connection's tasks -------------------------------------------------------------

    async def _write_loop(self) -> None:
        stream = self._stream
        assert stream is not None
        inflight = self.inflight
        try:
            while True:
                if not inflight.has_unsent:
                    idle = self._writer_idle = anyio.Event()
                    await idle.wait()
                    continue
                self.writes += 1
                await stream.send(b"".join(inflight.take_writes()))
        except Exception as exc:
            self._break(exc)

    async def _read_loop(self) -> None:
        stream = self._stream
        assert stream is not None
        inflight, parser = self.inflight, self._parser
        try:
            while True:
                try:
                    data = await stream.receive(_READ_SIZE)
                except anyio.EndOfStream:
                    raise RedisConnectionError("the server closed the connection") from None
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    slot = inflight.reply(reply)
                    if slot is not None:
                        if isinstance(reply, ErrorReply):
                            slot.outcome = error_from_reply(str(reply))
                        slot.waiter.set()
                if not inflight.outstanding:
                    self._on_idle()
        except Exception as exc:
            self._break(exc)

    async def _watch_loop(self) -> None:
        inflight = self.inflight
        while True:
            deadline = inflight.next_deadline()
            if deadline is None:
                idle = self._watcher_idle = anyio.Event()
                await idle.wait()
                continue
            await anyio.sleep_until(deadline)
            for slot in inflight.expire(anyio.current_time()):
                _time_out(slot)
            if not inflight.outstanding:
                self._on_idle()

    def __repr__(self) -> str:
        state = "usable" if self.usable else "closed" if self._error else "connecting"
        return f"<RedisConnection {self.target.redacted} {state} {self.inflight.outstanding}>"


def _time_out(slot: Slot) -> None:
    slot.outcome = TimeoutError(f"{_command_name(slot.payload)} timed out")
    slot.waiter.set()
