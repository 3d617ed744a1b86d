"""A WebSocket chat node for the cluster tests: ``megatrio run ws_app:app`` with the Redis
roster and the NATS fan-out from MEGATRIO_REDIS_URL / MEGATRIO_NATS_URL."""

from __future__ import annotations

from typing import Any

import megatrio

app = megatrio.App("wsnodes")
chat = app.ws("/chat/<room>", ping_interval_seconds=0)


@chat.on_connect
async def connect(conn: megatrio.Connection) -> None:
    conn.join(conn.params["room"])


@chat.on_message
async def message(conn: megatrio.Connection, data: Any) -> None:
    if data == "whoami":
        conn.send({"id": conn.id})
    else:
        app.hub.broadcast(conn.params["room"], {"from": conn.id, "data": data})
