"""WebSocket frames written by megatrio itself: a broadcast is framed once for every member.

A server's frames are not masked (RFC 6455 5.1), so a message's frame is the same bytes for
every connection: :func:`encode_frame` builds it once, and each connection's writer sends the
frames queued for it with one write. trio-websocket (through wsproto) would build the frame
again per connection, and write each message on its own. The handshake, pings, the close and
everything received stay trio-websocket's; what megatrio needs of its internals to share its
stream is here and only here.
"""

from __future__ import annotations

import trio
import trio_websocket

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82

REQUIRED = ("_stream", "_stream_lock", "_close_reason", "_abort_web_socket")
"""The WebSocketConnection internals :func:`send_frames` uses."""


def encode_frame(message: str | bytes) -> bytes:
    """One complete, unmasked frame: text for a str, binary for bytes (no extension is ever
    negotiated: trio-websocket's server offers none)."""
    if isinstance(message, str):
        payload, first = message.encode(), _FIN_TEXT
    else:
        payload, first = message, _FIN_BINARY
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 1 << 16:
        header = bytes((first, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + size.to_bytes(8, "big")
    return header + payload


def check_internals(ws: trio_websocket.WebSocketConnection) -> None:
    """Raises RuntimeError naming what this trio-websocket lacks of :data:`REQUIRED`."""
    missing = [name for name in REQUIRED if not hasattr(ws, name)]
    if missing:
        raise RuntimeError(
            f"this trio-websocket ({trio_websocket.__name__}) lacks {', '.join(missing)}, "
            "which megatrio's WebSocket writer needs; install trio-websocket 0.12"
        )


async def send_frames(ws: trio_websocket.WebSocketConnection, data: bytes) -> None:
    """Write complete frames *data* on *ws*'s stream, in turn with trio-websocket's own sends
    (its lock). Raises ConnectionClosed as ``send_message`` does."""
    if ws._close_reason:
        raise trio_websocket.ConnectionClosed(ws._close_reason)
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await ws._abort_web_socket()
            assert ws._close_reason is not None
            raise trio_websocket.ConnectionClosed(ws._close_reason) from None
