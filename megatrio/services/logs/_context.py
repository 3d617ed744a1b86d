"""Context that every log record carries: the id of the request being handled."""

from __future__ import annotations

import contextvars
from collections.abc import MutableMapping
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "megatrio_request_id", default=None
)
"""The id of the request being handled by this task (and by the tasks it started), or None.
Set by the HTTP front for each request."""


def add_request_id(
    logger: object, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``request_id`` of the request being handled, if any."""
    request_id = REQUEST_ID.get()
    if request_id is not None and "request_id" not in event_dict:
        event_dict["request_id"] = request_id
    return event_dict
