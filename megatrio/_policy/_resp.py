"""RESP2, the Redis wire format, sans-IO: commands to bytes, bytes to replies.

``encode_command(("SET", "k", b"v"))`` is the bytes to write; a :class:`ReplyParser` is fed the
bytes read (in chunks of any size) and hands out complete replies with :meth:`ReplyParser.gets`,
``False`` while none is complete (RESP2 has no boolean, so ``False`` is never a reply). Replies
are ``bytes`` (simple and bulk strings), ``int``, ``None`` (null bulk or array), ``list`` and
:class:`ErrorReply` (an error the server answered with, returned, not raised). The parser has
the interface of ``hiredis.Reader`` (``feed``/``gets``), which the client prefers when it is
installed; this one is the pure-Python fallback and the reference the property tests hold
hiredis to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, final

_CRLF: Final = b"\r\n"


class ErrorReply(Exception):
    """An error reply (``-ERR ...``): the message without the leading ``-``."""


class RespProtocolError(Exception):
    """The bytes read are not RESP2: the connection cannot be trusted any more."""


RespArg = bytes | str | int | float


def _arg_bytes(arg: RespArg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):  # a bool is an int to Python, never what a caller means here
        raise TypeError(f"a Redis command argument cannot be a bool, got {arg!r}")
    if isinstance(arg, int):
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(arg).encode()
    raise TypeError(
        f"a Redis command argument must be bytes, str, int or float, got {type(arg).__name__}"
    )


def encode_command(args: Iterable[RespArg]) -> bytes:
    """One command as a RESP array of bulk strings. Not a checkpoint.

    Raises:
        TypeError: an argument is not bytes, str, int or float (bools are refused).
    """
    parts = [_arg_bytes(arg) for arg in args]
    if not parts:
        raise ValueError("a Redis command needs at least its name")
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Incomplete(Exception):
    pass


_INCOMPLETE: Final = _Incomplete()

Reply = bytes | int | None | list["Reply"] | ErrorReply


@final
class ReplyParser:
    """Incremental RESP2 reply parser: :meth:`feed` bytes, then :meth:`gets` until ``False``.

    Memory is the unparsed tail of what was fed; parsed bytes are released as replies are
    handed out.
    """

    __slots__ = ("_buffer", "_pos")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Append *data* (any chunk of the stream)."""
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def gets(self) -> Reply | bool:
        """The next complete reply, or ``False`` if the bytes fed so far do not hold one.

        Raises:
            RespProtocolError: the stream is not RESP2.
        """
        try:
            reply, self._pos = self._parse(self._pos)
        except _Incomplete:
            return False
        return reply

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buffer.find(_CRLF, pos)
        if end < 0:
            raise _INCOMPLETE
        return bytes(self._buffer[pos:end]), end + 2

    def _parse(self, pos: int) -> tuple[Reply, int]:
        buffer = self._buffer
        if pos >= len(buffer):
            raise _INCOMPLETE
        kind = buffer[pos]
        line, pos = self._line(pos + 1)
        if kind == 0x24:  # $ bulk string
            size = self._int(line)
            if size < 0:
                return None, pos
            end = pos + size
            if len(buffer) < end + 2:
                raise _INCOMPLETE
            if buffer[end : end + 2] != _CRLF:
                raise RespProtocolError("a bulk string is not followed by CRLF")
            return bytes(buffer[pos:end]), end + 2
        if kind == 0x2B:  # + simple string
            return line, pos
        if kind == 0x3A:  # : integer
            return self._int(line), pos
        if kind == 0x2D:  # - error
            return ErrorReply(line.decode(errors="replace")), pos
        if kind == 0x2A:  # * array
            count = self._int(line)
            if count < 0:
                return None, pos
            items: list[Reply] = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise RespProtocolError(f"unknown reply type byte {bytes([kind])!r}")

    @staticmethod
    def _int(line: bytes) -> int:
        try:
            return int(line)
        except ValueError:
            raise RespProtocolError(f"expected an integer, got {line[:40]!r}") from None
