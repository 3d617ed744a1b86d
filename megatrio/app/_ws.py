"""Wiring a served App's WebSocket endpoints: the hub child, and its way onto the HTTP port."""

from __future__ import annotations

import trio

from ..services.http._upgrade import RequestHead, UpgradeHandler, UpgradeRouter
from ..services.ws._hub import Hub


def upgrade_router(hub: Hub) -> UpgradeRouter:
    """The HTTP listener's router for *hub*: a WebSocket handshake on one of its endpoints'
    paths goes to the hub; everything else (Quart's own ``websocket`` routes included) stays
    with hypercorn."""

    def route(head: RequestHead) -> UpgradeHandler | None:
        if not head.is_websocket_upgrade():
            return None
        found = hub.match(head.path)
        if found is None:
            return None
        endpoint, params = found

        async def handler(stream: trio.abc.Stream, peer: str, stopping: trio.Event) -> None:
            await hub.serve(endpoint, params, stream, peer, stopping)

        return handler

    return route
