"""A WebSocket endpoint as an App declares it: its path rule, its limits and its handlers.

``chat = app.ws("/chat/<room>", max_message_bytes=65536)`` declares one; its handlers are
registered with decorators::

    @chat.on_connect
    async def join(conn):                  # before the handshake is answered
        if conn.query.get("token") != "ok":
            raise megatrio.Reject(403, "bad token")
        conn.join(conn.params["room"])

    @chat.on_message
    async def message(conn, data):         # JSON-decoded (json=True, the default)
        conn.hub.broadcast(conn.params["room"], {"from": conn.id, "text": data["text"]})

    @chat.on_disconnect
    async def left(conn, code, reason): ...

Every handler is optional. A path rule is ``/``-separated; a ``<name>`` segment matches one
segment and is given in ``conn.params``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ..._policy._checks import check_count, check_seconds
from ..._policy._send_queue import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES

if TYPE_CHECKING:
    from ._connection import Connection

F = TypeVar("F", bound=Callable[..., Awaitable[object]])

_SEGMENT = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>\Z")


class Reject(Exception):
    """Raised by an ``on_connect`` handler to refuse the handshake with HTTP *status*."""

    def __init__(self, status: int = 403, reason: str = "") -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"a rejection's status must be 4xx or 5xx, got {status}")
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


def _positive_int(name: str) -> Callable[[object, object, int], None]:
    def check(instance: object, attribute: object, value: int) -> None:
        check_count(name, value, minimum=1)

    return check


def _seconds(name: str, *, allow_zero: bool) -> Callable[[object, object, float], None]:
    def check(instance: object, attribute: object, value: float) -> None:
        check_seconds(name, value, allow_zero=allow_zero, allow_inf=False)

    return check


@attrs.frozen(kw_only=True)
class WebSocketSettings:
    """The limits of one endpoint's connections (close codes from RFC 6455)."""

    max_message_bytes: int = attrs.field(
        default=1024 * 1024, validator=_positive_int("max_message_bytes")
    )
    """A received message longer than this closes the connection with 1009."""
    max_buffered_bytes: int = attrs.field(
        default=DEFAULT_MAX_BYTES, validator=_positive_int("max_buffered_bytes")
    )
    """Bytes queued for a slow client; a send that would exceed it closes with 1013."""
    max_queued_messages: int = attrs.field(
        default=DEFAULT_MAX_MESSAGES, validator=_positive_int("max_queued_messages")
    )
    send_timeout_seconds: float = attrs.field(
        default=10.0, validator=_seconds("send_timeout_seconds", allow_zero=False)
    )
    """A single send stalled longer than this closes with 1013."""
    ping_interval_seconds: float = attrs.field(
        default=20.0, validator=_seconds("ping_interval_seconds", allow_zero=True)
    )
    """A ping this often (0: never)."""
    ping_timeout_seconds: float = attrs.field(
        default=20.0, validator=_seconds("ping_timeout_seconds", allow_zero=False)
    )
    """No pong within this closes with 1011."""
    rate_per_second: float = attrs.field(
        default=0.0, validator=_seconds("rate_per_second", allow_zero=True)
    )
    """Inbound messages per second on average (0: no limit); past the burst, close 1008."""
    rate_burst: int = attrs.field(default=0)
    """Messages allowed at once (0: one second's worth, at least 1)."""
    json: bool = True
    """Text messages are JSON both ways; a binary message closes with 1003, bad JSON 1007."""

    @rate_burst.validator
    def _check_burst(self, attribute: object, value: int) -> None:
        check_count("rate_burst", value)

    @property
    def burst(self) -> int:
        return self.rate_burst or max(1, int(self.rate_per_second))


ConnectHandler = Callable[["Connection"], Awaitable[object]]
MessageHandler = Callable[["Connection", Any], Awaitable[object]]
DisconnectHandler = Callable[["Connection", int, str], Awaitable[object]]


class WebSocketEndpoint:
    """One declared endpoint (module docstring)."""

    def __init__(self, rule: str, settings: WebSocketSettings) -> None:
        if not isinstance(rule, str) or not rule.startswith("/"):
            raise ValueError(f"a WebSocket path rule starts with '/', got {rule!r}")
        self.rule = rule
        self.settings = settings
        names: list[str] = []
        pattern = []
        for segment in rule.split("/")[1:]:
            match = _SEGMENT.match(segment)
            if match:
                if match[1] in names:
                    raise ValueError(f"path rule {rule!r} names <{match[1]}> twice")
                names.append(match[1])
                pattern.append(f"(?P<{match[1]}>[^/]+)")
            elif "<" in segment or ">" in segment:
                raise ValueError(
                    f"path rule {rule!r}: segment {segment!r} is neither literal nor <name>"
                )
            else:
                pattern.append(re.escape(segment))
        self._pattern = re.compile("/" + "/".join(pattern) + r"\Z")
        self.connect_handler: ConnectHandler | None = None
        self.message_handler: MessageHandler | None = None
        self.disconnect_handler: DisconnectHandler | None = None

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when *path* is this endpoint's, else None."""
        found = self._pattern.match(path)
        return None if found is None else found.groupdict()

    def on_connect(self, handler: F) -> F:
        """Decorator: ``async def handler(conn)``, before the handshake is answered; raise
        :class:`Reject` to refuse it. Anything else it raises refuses with 500 (logged)."""
        self.connect_handler = handler
        return handler

    def on_message(self, handler: F) -> F:
        """Decorator: ``async def handler(conn, message)``, once per message, in order. What
        it raises closes that connection with 1011 (logged), and only that one."""
        self.message_handler = handler
        return handler

    def on_disconnect(self, handler: F) -> F:
        """Decorator: ``async def handler(conn, code, reason)``, once the connection closed
        (bounded to a few seconds; cancelled when the hub is)."""
        self.disconnect_handler = handler
        return handler

    def __repr__(self) -> str:
        return f"<WebSocketEndpoint {self.rule}>"
