"""The retry queue's caps, applied while a drain streams its claimed files.

A drain reads its files twice. Pass one (:class:`Scan`) judges every line by its header and
keeps only the positions of the newest *max_entries* fresh ones, counting what it drops; pass
two reads the kept lines back in batches (:func:`take_batch`, :func:`read_lines`) and delivers
them. Memory is O(max_entries) small tuples plus one batch of lines, whatever the file size.
"""

from __future__ import annotations

import collections
import heapq
import math
import os
from typing import IO, Final

from ._retry_journal import HEADER, READ_BUFFER_BYTES

DROP_TOO_MANY: Final = "too_many"
"""Dropped because newer entries filled ``max_entries``."""
DROP_TOO_OLD: Final = "too_old"
"""Dropped because it was enqueued more than ``max_age_seconds`` before the drain."""
DROP_CORRUPT: Final = "corrupt"
"""A line that is not a well-formed entry (torn write, foreign data, over-long line)."""
DROP_REASONS: Final = (DROP_TOO_MANY, DROP_TOO_OLD, DROP_CORRUPT)

# A batch of lines read for delivery stays under this many bytes (at least one line).
_BATCH_BYTES: Final = 1 << 20

# (enqueued_at, sequence, file index, offset, length, handled): ordered by time, then by
# position, so "newest" is well defined even for equal timestamps.
Item = tuple[float, int, int, int, int, bool]


class Scan:
    """Pass one over the claimed files: counts, plus a min-heap of the newest entries.

    A line is judged by its header alone (:data:`~._retry_journal.HEADER`, which the journal
    always writes first, and a closing ``}``): that is what makes the pass fast (no JSON
    parsing of payloads). The few lines that pass one keeps are parsed in full by pass two; one
    whose payload turns out to be malformed (a torn write cut right after a ``}`` and healed by the
    next append) counts as corrupt then, and the slot it took is not given to an older entry —
    that entry was already counted as too many. Nothing goes uncounted either way.

    Only one worker thread touches it at a time (each batch is one ``run_sync`` call, awaited
    before the next). Memory is the heap: at most *max_entries* items.
    """

    def __init__(self, max_entries: int, cutoff: float, max_line: int) -> None:
        self.max_entries = max_entries
        self.cutoff = cutoff
        self.max_line = max_line
        self.heap: list[Item] = []
        self.seq = 0
        self.index = -1
        self.offset = 0
        self.corrupt = 0
        self.too_old = 0
        self.fresh_pending = 0

    def scan(self, handle: IO[bytes], index: int, count: int) -> bool:
        """Read up to *count* lines of file *index* from *handle*; True at its end."""
        if index != self.index:
            self.index, self.offset = index, 0
        readline, limit, heap = handle.readline, self.max_line + 1, self.heap
        offset = self.offset
        try:
            for _ in range(count):
                line = readline(limit)
                if not line:
                    return True
                start = offset
                offset += len(line)
                if line[-1:] != b"\n":
                    # Over-long (skipped in bounded pieces, never held whole) or a torn tail
                    # at the end of the file.
                    while line and line[-1:] != b"\n":
                        line = readline(READ_BUFFER_BYTES)
                        offset += len(line)
                    self.corrupt += 1
                    continue
                if line == b"\n":
                    continue  # a bare newline written after a torn line: not an entry
                header = HEADER.match(line)
                if header is None or line[-2:] != b"}\n" or (ts := _finite(header[2])) is None:
                    self.corrupt += 1
                    continue
                handled = header[1] == b"1"
                if ts < self.cutoff:
                    # A handled line was delivered or re-queued by an earlier drain: no drop.
                    if not handled:
                        self.too_old += 1
                    continue
                if not handled:
                    self.fresh_pending += 1
                self.seq += 1
                # Handled lines take part in the ranking, so a drain that takes over a dead
                # drainer's file keeps the same newest set that drainer kept.
                item: Item = (ts, self.seq, index, start, len(line), handled)
                if len(heap) < self.max_entries:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)
            return False
        finally:
            self.offset = offset

    def dropped(self) -> collections.Counter[str]:
        kept_pending = sum(1 for item in self.heap if not item[5])
        return collections.Counter(
            {
                DROP_CORRUPT: self.corrupt,
                DROP_TOO_OLD: self.too_old,
                DROP_TOO_MANY: self.fresh_pending - kept_pending,
            }
        )

    def to_deliver(self) -> list[Item]:
        """Kept, unhandled entries, oldest first."""
        return sorted(item for item in self.heap if not item[5])


def _finite(text: bytes) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def take_batch(todo: list[Item], pos: int) -> list[Item]:
    """The items from *pos* whose lines fit in one read (at least one)."""
    size = 0
    end = pos
    while end < len(todo) and (end == pos or size + todo[end][4] <= _BATCH_BYTES):
        size += todo[end][4]
        end += 1
    return todo[pos:end]


def read_lines(fds: list[int], batch: list[Item]) -> list[bytes]:
    """The lines of *batch*, read from the claimed files *fds* by position."""
    return [os.pread(fds[index], length, offset) for _, _, index, offset, length, _ in batch]
