"""``GET /`` as a raw ASGI callable: ``hypercorn --worker-class trio bench.http_apps.asgi_app:app``.

The same response Quart sends for the shared handler (status, headers, body), and the full
lifespan protocol; no framework at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import BODY_BYTES

Message = MutableMapping[str, Any]

_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/html; charset=utf-8"),  # what Quart sends for a str
        (b"content-length", str(len(BODY_BYTES)).encode()),
    ],
}
_BODY = {"type": "http.response.body", "body": BODY_BYTES}


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send(dict(_START))
        await send(dict(_BODY))
    else:
        raise RuntimeError(f"unsupported scope type {scope['type']!r}")
