"""The WebSocket hub's metrics, read from its counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..._samples import Sample, counter_sample, gauge_sample

if TYPE_CHECKING:
    from ._hub import Hub


def hub_samples(hub: Hub) -> Iterator[Sample]:
    """Connections, channels and queued bytes now; handshakes accepted and rejected (by HTTP
    status), closes by code, handler and connection errors, and the cross-node fan-out."""
    yield gauge_sample(
        "megatrio_ws_connections", "WebSocket connections open", len(hub.connections)
    )
    yield gauge_sample("megatrio_ws_channels", "channels with a member here", len(hub.channels()))
    yield gauge_sample(
        "megatrio_ws_queued_bytes", "bytes queued to send, over every connection", hub.queued_bytes
    )
    yield counter_sample("megatrio_ws_accepted", "WebSocket handshakes accepted", hub.accepted)
    for status, count in sorted(hub.rejections.items()):
        yield counter_sample(
            "megatrio_ws_rejected", "handshakes rejected, by status", count, status=str(status)
        )
    for code, count in sorted(hub.closes.items()):
        yield counter_sample(
            "megatrio_ws_closes", "connections closed, by close code", count, code=str(code)
        )
    yield counter_sample(
        "megatrio_ws_handler_errors", "errors raised by handlers", hub.handler_errors
    )
    yield counter_sample(
        "megatrio_ws_connection_errors", "connections lost to an error", hub.connection_errors
    )
    fanout = "broadcasts crossing nodes over the bus, by direction"
    yield counter_sample("megatrio_ws_fanout", fanout, hub.fanout_sent, direction="sent")
    yield counter_sample("megatrio_ws_fanout", fanout, hub.fanout_received, direction="received")
    yield counter_sample("megatrio_ws_fanout", fanout, hub.fanout_dropped, direction="dropped")
