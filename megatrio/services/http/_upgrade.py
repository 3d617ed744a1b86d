"""Handing a connection to another server by its first request: the WebSocket hub's way onto
the HTTP port.

When an :data:`UpgradeRouter` is set, the listener reads a connection's first request head
(up to :data:`MAX_HEAD_BYTES`, within the keep-alive timeout) before hypercorn sees it, and
asks the router whether it wants the connection: a router that returns a handler gets the
connection — with the bytes already read replayed first (:class:`ReplayStream`) — and
hypercorn never sees it; otherwise hypercorn serves it as usual, from the same replay. Only the
first request of a connection is looked at: a WebSocket client opens a connection for its
handshake. What the router is given is parsed leniently (it only decides); whoever gets the
connection parses the request itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import attrs
import trio

MAX_HEAD_BYTES = 16 * 1024
"""A first request head longer than this is not looked at: hypercorn gets it (and its limits)."""


@attrs.frozen
class RequestHead:
    """A connection's first request line and headers (names lower-cased; the last of a
    repeated header wins)."""

    method: str
    target: str
    headers: Mapping[str, str]

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def is_websocket_upgrade(self) -> bool:
        return (
            self.method == "GET"
            and self.headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in self.headers.get("connection", "").lower()
        )


UpgradeHandler = Callable[[trio.abc.Stream, str, trio.Event], Awaitable[None]]
"""``handler(stream, peer, stopping)``: serves the connection until it ends; *stopping* is set
when the listener begins its graceful stop. The listener closes the transport afterwards."""

UpgradeRouter = Callable[[RequestHead], UpgradeHandler | None]
"""Decides, from a connection's first request head, who serves it (None: hypercorn)."""


def parse_head(head: bytes) -> RequestHead | None:
    """The request line and headers of *head* (ending with the blank line), or None when it
    is not a request head."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        name, colon, value = line.partition(":")
        if not colon:
            return None
        headers[name.strip().lower()] = value.strip()
    return RequestHead(parts[0], parts[1], headers)


async def read_head(stream: trio.abc.Stream, timeout_seconds: float) -> tuple[bytes, bool]:
    """What the peer sent up to the end of its first request head: ``(data, complete)``.

    Incomplete when the peer closed, stayed silent past *timeout_seconds*, or sent more than
    :data:`MAX_HEAD_BYTES` without a blank line; *data* is all that was read either way.
    """
    data = b""
    with trio.move_on_after(timeout_seconds):
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_HEAD_BYTES:
                return data, False
            chunk = await stream.receive_some(MAX_HEAD_BYTES)
            if not chunk:
                return data, False
            data += chunk
        return data, True
    return data, False


class ReplayStream(trio.abc.HalfCloseableStream):
    """*stream* with *prefix* (bytes already read from it) received first. Other attributes
    (``socket``; an ``SSLStream``'s ``transport_stream``, ``selected_alpn_protocol``...) are
    the wrapped stream's: hypercorn reads them."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()
        else:
            await self._stream.aclose()

    async def aclose(self) -> None:
        await self._stream.aclose()
