"""One WebSocket connection's outgoing queue: bounded in bytes and messages. Sans-IO.

A sender never waits for a slow peer: :meth:`SendQueue.offer` only decides, at once, what
happens to a message, and the connection's writer takes messages out with :meth:`take` as
fast as the peer reads them. The decision, for a message of *size* bytes:

- it fits (queued bytes + size <= ``max_bytes`` and queued messages < ``max_messages``):
  ``QUEUED``;
- it does not fit and was offered with ``drop_oldest`` (ephemeral data, such as a position
  that the next one replaces): the oldest ``drop_oldest`` messages are dropped until it fits
  (``DROPPED``, with how many went); if it cannot fit even then, the new message itself is
  dropped (``DROPPED_NEW``) — ephemeral data never closes a connection;
- otherwise the queue **overflows**: it closes (``OVERFLOW``) and keeps nothing new; the
  connection is to be closed with 1013 ("Try Again Later");
- after a close (overflow or :meth:`close`), every offer is ``CLOSED`` and changes nothing.

Invariants: ``0 <= queued_bytes <= max_bytes`` and ``0 <= len(queue) <= max_messages``; a
message is queued at most once and taken at most once, in offer order; nothing is queued
after the close. Messages already queued at the close stay takeable (a graceful close may
still flush them; an overflow close discards them with :meth:`clear`).
"""

from __future__ import annotations

import collections
import enum
from typing import Generic, TypeVar, final

import attrs

from ._checks import check_count

T = TypeVar("T")

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_MESSAGES = 10_000


class Offered(enum.Enum):
    QUEUED = "queued"
    DROPPED = "dropped"
    """Queued, after dropping older ``drop_oldest`` messages (see :attr:`Offer.dropped`)."""
    DROPPED_NEW = "dropped_new"
    """Not queued: a ``drop_oldest`` message that cannot fit even alone among the others."""
    OVERFLOW = "overflow"
    """Not queued, and the queue is closed now: close the connection with 1013."""
    CLOSED = "closed"
    """Not queued: the queue was closed before."""


@attrs.frozen
class Offer:
    outcome: Offered
    dropped: int = 0
    """Older messages dropped to make room (``DROPPED``)."""


_QUEUED = Offer(Offered.QUEUED)
_DROPPED_NEW = Offer(Offered.DROPPED_NEW)
_OVERFLOW = Offer(Offered.OVERFLOW)
_CLOSED = Offer(Offered.CLOSED)


@final
class SendQueue(Generic[T]):
    """A FIFO of ``(item, size)`` bounded by *max_bytes* and *max_messages* (module docs)."""

    __slots__ = (
        "_bytes",
        "_closed",
        "_items",
        "dropped",
        "max_bytes",
        "max_messages",
        "overflowed",
    )

    def __init__(
        self, *, max_bytes: int = DEFAULT_MAX_BYTES, max_messages: int = DEFAULT_MAX_MESSAGES
    ) -> None:
        self.max_bytes = check_count("max_bytes", max_bytes, minimum=1)
        self.max_messages = check_count("max_messages", max_messages, minimum=1)
        self._items: collections.deque[tuple[T, int, bool]] = collections.deque()
        self._bytes = 0
        self._closed = False
        self.dropped = 0
        """``drop_oldest`` messages dropped so far (old ones evicted and new ones refused)."""
        self.overflowed = False
        """Whether the queue closed because an offer did not fit."""

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, item: T, size: int, *, drop_oldest: bool = False) -> Offer:
        """Decide *item*'s fate (module docstring); *size* is its encoded length in bytes.

        Raises:
            ValueError: *size* is negative.
        """
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if self._closed:
            return _CLOSED
        if self._fits(size):
            self._push(item, size, drop_oldest)
            return _QUEUED
        if not drop_oldest:
            self._closed = True
            self.overflowed = True
            return _OVERFLOW
        dropped = self._make_room(size)
        if not self._fits(size):
            self.dropped += 1
            return _DROPPED_NEW
        self._push(item, size, drop_oldest)
        return Offer(Offered.DROPPED, dropped) if dropped else _QUEUED

    def take(self) -> tuple[T, int] | None:
        """The oldest queued message and its size, or None when empty."""
        if not self._items:
            return None
        item, size, _ = self._items.popleft()
        self._bytes -= size
        return item, size

    def close(self) -> None:
        """Refuse every later offer (``CLOSED``); what is queued stays takeable."""
        self._closed = True

    def clear(self) -> int:
        """Discard everything queued; how many messages went."""
        count = len(self._items)
        self._items.clear()
        self._bytes = 0
        return count

    def _fits(self, size: int) -> bool:
        return self._bytes + size <= self.max_bytes and len(self._items) < self.max_messages

    def _push(self, item: T, size: int, drop_oldest: bool) -> None:
        self._items.append((item, size, drop_oldest))
        self._bytes += size

    def _make_room(self, size: int) -> int:
        """Drop the oldest ``drop_oldest`` messages until *size* fits; how many went.

        Drops nothing when dropping every one of them would still not make room: then the new
        message is the one refused and the queued ones are kept.
        """
        droppable = [s for _, s, drop in self._items if drop]
        need_bytes = self._bytes + size - self.max_bytes
        need_count = len(self._items) + 1 - self.max_messages
        if need_bytes > sum(droppable) or need_count > len(droppable):
            return 0
        kept: collections.deque[tuple[T, int, bool]] = collections.deque()
        dropped = 0
        for entry in self._items:
            if entry[2] and (need_bytes > 0 or need_count > 0):
                need_bytes -= entry[1]
                need_count -= 1
                self._bytes -= entry[1]
                dropped += 1
            else:
                kept.append(entry)
        self._items = kept
        self.dropped += dropped
        return dropped
