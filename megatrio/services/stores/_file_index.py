"""The file cache's in-process index: LRU order, byte total, expiry heap, eviction. Sans-IO.

Each driver keeps an index: digest -> :class:`~._file_ops.Entry` (file size, expiry, inode,
mtime), in LRU order, plus a heap of (expiry, digest) so a sweep pops only what is due. It is
built by a full scan when the driver opens, and entries found then are ordered by file
modification time, so LRU order starts as write order. Only the event loop changes it: worker
threads report what they found or did (the ``after_*``, ``apply_*`` and ``adopt*`` methods
here take those reports), and each report is applied only after checking that the entry
concerned is still the one the thread saw.

Caps
----
*max_entries* bounds the number of entry files and *max_bytes* the sum of their sizes (whole
files: header + key + value, what the directory really holds; filesystem block rounding, the
directories and in-flight temporary files are not counted). A write that would exceed a cap
first removes expired entries (``"expired"``), then least-recently-used ones (``"capacity"``),
in O(log n) per removed entry, before it writes. A single entry larger than *max_bytes* is
refused with ``ValueError`` by the driver, as :class:`~megatrio.MemoryCache` does.

LRU order is per process (reads do not touch files), and caps are enforced by each process
against its own view: a process counts the entries it wrote or has seen, so N processes
sharing a root may together hold up to N times a cap until a rescan (every
*rescan_every_sweeps* sweeps, and on open) adopts the others' files and trims back to the
caps. Capacity eviction does not re-check a victim on disk: an entry another process just
rewrote may be evicted, which loses a cache entry and nothing else.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import final

from ..._policy._ttl_lru import DROP_CAPACITY, DROP_EXPIRED
from ._file_ops import LIVE, Entry, Found, ReadResult, ScanResult

Victims = list[tuple[str, Entry, str]]
"""(digest, entry, drop reason) of entries forgotten to make room; their files must go."""


@final
class FileIndex:
    """What one driver knows of its directory. Not thread-safe: the event loop owns it."""

    def __init__(self, max_entries: int, max_bytes: int | None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # digest -> entry, least recently used first. Invariant: bytes is the sum of sizes.
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.bytes = 0
        # (expires_at, digest) for entries with a finite expiry. Lazy deletion: an item is
        # valid only while the digest's entry has that expiry; the heap is rebuilt when stale
        # items outnumber live entries, so it stays O(entries).
        self.heap: list[tuple[float, str]] = []
        # Digests whose files a write is removing right now: a concurrent read must not
        # adopt them back into the index.
        self.evicting: set[str] = set()
        self.stamp = 0
        """The latest creation stamp handed out (see :meth:`next_stamp`)."""

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def get(self, digest: str) -> Entry | None:
        """The entry of *digest*. A plain ``dict.get``: atomic, so a worker thread may call it."""
        return self.entries.get(digest)

    def next_stamp(self) -> int:
        self.stamp += 1
        return self.stamp

    def over(self, adding: int, size: int) -> bool:
        """Whether *adding* entries of *size* bytes in all would exceed a cap."""
        return len(self.entries) + adding > self.max_entries or (
            self.max_bytes is not None and self.bytes + size > self.max_bytes
        )

    def make_room(self, adding: int, size: int, now: float) -> Victims:
        """Forget entries until *adding* entries of *size* bytes fit; the victims, with why.

        Expired entries go first (popped off the heap), then the least recently used. Called
        under the driver's write lock, so no other write's pending entry exists.
        """
        victims: Victims = []
        while self.over(adding, size) and self.entries:
            due = self.pop_due(now, 1)
            if due:
                digest, entry = due[0]
                reason = DROP_EXPIRED
            else:
                digest, entry = next(iter(self.entries.items()))
                reason = DROP_CAPACITY
            self.forget(digest, entry)
            victims.append((digest, entry, reason))
        return victims

    def pop_due(self, now: float, limit: int) -> list[tuple[str, Entry]]:
        """Up to *limit* distinct indexed entries with ``expires_at <= now``, off the heap."""
        heap = self.heap
        due: list[tuple[str, Entry]] = []
        seen: set[str] = set()
        while heap and len(due) < limit and heap[0][0] <= now:
            expires_at, digest = heapq.heappop(heap)
            entry = self.entries.get(digest)
            if (
                entry is not None
                and entry.expires_at == expires_at
                and not entry.pending
                and digest not in seen
            ):
                seen.add(digest)
                due.append((digest, entry))
        return due

    def push_due(self, due: list[tuple[str, Entry]]) -> None:
        """Put entries :meth:`pop_due` returned back on the heap (their removal did not run)."""
        for digest, entry in due:
            heapq.heappush(self.heap, (entry.expires_at, digest))

    def insert(self, digest: str, entry: Entry) -> None:
        assert digest not in self.entries
        self.entries[digest] = entry
        self.bytes += entry.size
        if not math.isinf(entry.expires_at):
            heapq.heappush(self.heap, (entry.expires_at, digest))
            if len(self.heap) > 2 * len(self.entries) + 64:
                self.heap = [
                    (e.expires_at, d)
                    for d, e in self.entries.items()
                    if not math.isinf(e.expires_at)
                ]
                heapq.heapify(self.heap)

    def forget(self, digest: str, entry: Entry) -> None:
        """Drop *digest* from the index if *entry* is still its entry."""
        if self.entries.get(digest) is entry:
            del self.entries[digest]
            self.bytes -= entry.size

    def adopt(self, digest: str, current: Entry | None, found: Found) -> None:
        """Index a live file seen on disk, replacing *current*, as most recently used."""
        if current is not None:
            self.forget(digest, current)
        entry = Entry(found.size, found.expires_at, found.ino, found.mtime_ns, self.next_stamp())
        self.insert(digest, entry)

    # -- applying what a worker thread reported ---------------------------------------------

    def after_read(self, digest: str, before: Entry | None, result: ReadResult) -> None:
        """Apply a read of *digest*'s file; *before* is its entry when the read began."""
        current = self.entries.get(digest)
        # Act only if nothing changed the entry while the thread read: otherwise what it read
        # may be older than what the index now knows.
        if current is not before or (current is not None and current.pending):
            return
        found = result.found
        if found is not None:
            if current is not None and current.describes(found.ino, found.size, found.mtime_ns):
                self.entries.move_to_end(digest)
            elif current is not None or digest not in self.evicting:
                self.adopt(digest, current, found)
        elif current is not None and result.outcome != LIVE:
            self.forget(digest, current)

    def after_retire(self, digest: str, entry: Entry, outcome: str, found: Found | None) -> None:
        """Apply a sweep's retirement of *entry*'s file (see :func:`._file_ops.retire`)."""
        if self.entries.get(digest) is entry:
            if found is not None:
                self.adopt(digest, entry, found)
            elif outcome != LIVE:
                self.forget(digest, entry)

    def apply_scan(self, result: ScanResult, scan_id: int) -> None:
        """Apply one rescan batch, except the files it found (:meth:`adopt_found`, at the end)."""
        for digest in result.unchanged:
            entry = self.entries.get(digest)
            if entry is not None:
                entry.mark = max(entry.mark, scan_id)
        for digest, known, _ in result.dropped:
            if known is not None and self.entries.get(digest) is known:
                self.forget(digest, known)
        for digest, known in result.vanished:
            if known is not None and self.entries.get(digest) is known:
                self.forget(digest, known)

    def adopt_found(self, found: list[tuple[str, Entry | None, Found]]) -> None:
        """Adopt the live files a whole rescan found, oldest write first, so that the LRU
        order of adopted entries is their write order."""
        found.sort(key=lambda item: item[2].mtime_ns)
        for digest, known, info in found:
            current = self.entries.get(digest)
            # A pending entry belongs to a write in flight: its writer replaces it.
            in_flight = current is not None and current.pending
            if current is known and not in_flight and digest not in self.evicting:
                self.adopt(digest, known, info)

    def forget_unseen(self, digests: list[str], scan_id: int, started_at: int) -> None:
        """Forget those of *digests* whose files neither rescan *scan_id* nor a later,
        concurrent one saw, and only those created before it began (stamp <= *started_at*:
        their files existed before their shard was listed)."""
        for digest in digests:
            entry = self.entries.get(digest)
            if (
                entry is not None
                and not entry.pending
                and entry.mark < scan_id
                and entry.stamp <= started_at
            ):
                self.forget(digest, entry)
