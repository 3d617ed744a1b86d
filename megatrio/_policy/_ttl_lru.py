"""A bounded key/value store with per-entry expiry and LRU eviction. Sans-IO."""

from __future__ import annotations

import collections
import math
from typing import Final, final

from ._checks import check_count

DROP_EXPIRED: Final = "expired"
DROP_CAPACITY: Final = "capacity"


@final
class TTLLRU:
    """At most *max_entries* entries and *max_bytes* value bytes; the least recently used go.

    Every method that depends on time takes ``now``. An entry with ``expires_at <= now`` is
    never returned. Drops are counted by reason in :attr:`drops` (``"expired"``,
    ``"capacity"``). Memory is O(max_entries).
    """

    __slots__ = ("_bytes", "_entries", "drops", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int | None = None) -> None:
        self.max_entries = check_count("max_entries", max_entries, minimum=1)
        self.max_bytes = (
            None if max_bytes is None else check_count("max_bytes", max_bytes, minimum=1)
        )
        # key -> (value, expires_at); order = recency, oldest first.
        self._entries: collections.OrderedDict[str, tuple[bytes, float]] = collections.OrderedDict()
        self._bytes = 0
        self.drops: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def get(self, key: str, now: float) -> bytes | None:
        """The live value of *key*, marking it most recently used; expired entries go."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at <= now:
            self._remove(key)
            self.drops[DROP_EXPIRED] += 1
            return None
        self._entries.move_to_end(key)
        return value

    def set(self, key: str, value: bytes, now: float, ttl_seconds: float | None) -> None:
        """Store *value* for *ttl_seconds* (``None``: no expiry), evicting LRU entries.

        Raises:
            ValueError: *ttl_seconds* is not positive, or the value alone exceeds max_bytes.
        """
        if ttl_seconds is not None and not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be > 0 or None, got {ttl_seconds!r}")
        if self.max_bytes is not None and len(value) > self.max_bytes:
            raise ValueError(
                f"value of {len(value)} bytes exceeds max_bytes={self.max_bytes} for key {key!r}"
            )
        expires_at = math.inf if ttl_seconds is None else now + ttl_seconds
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (value, expires_at)
        self._bytes += len(value)
        while len(self._entries) > self.max_entries or (
            self.max_bytes is not None and self._bytes > self.max_bytes
        ):
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.drops[DROP_CAPACITY] += 1

    def delete(self, key: str) -> bool:
        """Remove *key*; whether it was present (expired or not)."""
        if key not in self._entries:
            return False
        self._remove(key)
        return True

    def sweep(self, now: float) -> int:
        """Remove every expired entry; how many went. O(entries)."""
        expired = [k for k, (_, expires_at) in self._entries.items() if expires_at <= now]
        for key in expired:
            self._remove(key)
        self.drops[DROP_EXPIRED] += len(expired)
        return len(expired)

    def _remove(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(value)
