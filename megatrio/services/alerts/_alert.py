"""The vocabulary the alert path shares: :class:`Alert` (what the handler buffers),
:func:`truncate`, and the sender contract (:class:`AlertSender`, :class:`SendResult`).

No I/O and no heavy import (no httpx): the face exports :class:`AlertSender` and
:class:`SendResult` eagerly, so a custom sender can be written without loading the HTTP ones.
"""

from __future__ import annotations

from typing import Final, Protocol

import attrs

_TRUNCATED: Final = "\n…[truncated]"


@attrs.frozen(kw_only=True)
class Alert:
    """One redacted, formatted record waiting to be sent."""

    text: str
    level: str
    logger: str
    created: float
    """The record's wall-clock creation time."""


def truncate(text: str, max_chars: int) -> str:
    """*text* cut to at most *max_chars* characters, marked when cut."""
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - len(_TRUNCATED))] + _TRUNCATED


@attrs.frozen(kw_only=True)
class SendResult:
    """The outcome of one :meth:`AlertSender.send`. Safe to log: it never holds a secret."""

    ok: bool
    status: int | None = None
    """The HTTP status, when a response arrived."""
    retry_after_seconds: float | None = None
    """How long the destination asked us to wait (429/503 ``Retry-After``), if it did."""
    error: str | None = None
    """What went wrong, with secrets masked."""


class AlertSender(Protocol):
    """Delivers one alert text to one destination.

    :meth:`send` never raises for a delivery failure (it returns a :class:`SendResult`) and
    never lets a secret reach an exception or a log; cancellation propagates.
    """

    @property
    def destination(self) -> str:
        """A description of the destination that is safe to log."""
        ...

    async def send(self, text: str) -> SendResult: ...

    async def aclose(self) -> None: ...
