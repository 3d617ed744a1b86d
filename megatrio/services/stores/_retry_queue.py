"""A file-backed retry queue of JSON lines: bounded, shared by processes, every drop counted.

This module is the queue and its drain: appending, claiming, applying the caps, delivering and
re-queuing, with the event loop's locks and cancellation around worker-thread calls. The files
and the cross-process protocol are :mod:`._retry_journal`; the caps, applied while streaming,
are :mod:`._retry_scan`.

Guarantees: every appended entry is eventually delivered, or dropped and counted under a
reason (``"too_many"``, ``"too_old"``, ``"corrupt"``), or still pending. Delivery is
*at-least-once*: a process that dies after ``deliver`` returned but before the one-byte mark
was written has that one entry delivered again by whoever reclaims the file; likewise an entry
re-queued just before such a crash is pending twice. :class:`QueuedEntry.id` is stable across
retries so receivers can deduplicate. Drop counts of a drain whose process dies after reporting
them but before deleting its claimed files are counted again by the next drain (over-counted,
never silent).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, final

import anyio
import anyio.to_thread
import attrs

from ..._policy._checks import check_count, check_seconds
from ._retry_journal import (
    QUEUE_FILE,
    READ_BUFFER_BYTES,
    append_lines,
    claim_files,
    count_pending,
    decode_line,
    encode_line,
    mark,
    release_claims,
    unlink_all,
)
from ._retry_scan import DROP_CORRUPT, Scan, read_lines, take_batch
from ._retry_scan import DROP_REASONS as DROP_REASONS

log = logging.getLogger("megatrio.retry_queue")


@attrs.frozen(kw_only=True)
class QueuedEntry:
    """One entry as :meth:`RetryQueue.drain` hands it to ``deliver``."""

    id: str
    """Assigned at append, kept across retries: receivers deduplicate on it."""
    payload: Any
    """The JSON value given to :meth:`RetryQueue.append`."""
    enqueued_at: float
    """Wall-clock time of the first append (retries keep it, so ``max_age_seconds`` bounds
    how long an entry can be retried)."""
    attempts: int
    """Failed deliveries so far."""


@attrs.frozen(kw_only=True)
class DrainSummary:
    """What one :meth:`RetryQueue.drain` did."""

    delivered: int = 0
    """Entries whose ``deliver`` returned true."""
    requeued: int = 0
    """Entries whose ``deliver`` failed, appended again for the next drain."""
    dropped: Mapping[str, int] = attrs.field(factory=dict)
    """Drops by reason (:data:`DROP_REASONS`); reasons with no drop are absent."""
    files: int = 0
    """Files claimed: ``queue.jsonl`` and any reclaimed ``claimed-*`` files."""

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


Deliver = Callable[[QueuedEntry], Awaitable[bool]]
"""``await deliver(entry)``: true when delivered; false or an exception means "retry later"."""


@final
class RetryQueue:
    """A bounded, file-backed queue of JSON values in *directory*, shared by processes.

    :meth:`append` adds an entry; :meth:`drain` takes everything queued so far (and whatever
    dead drainers left behind), drops what exceeds the caps and hands the rest to a
    ``deliver`` coroutine, re-queuing failures. See :mod:`._retry_journal` for the file
    protocol and the module docstring for the exact delivery guarantee (at-least-once).

    Caps, applied by each drain to everything it claimed: entries older than
    *max_age_seconds* go first (``"too_old"``), then only the newest *max_entries* by enqueue
    time are kept (``"too_many"``); lines that are not entries are skipped (``"corrupt"``).
    Drops are counted in :attr:`drops`, logged at WARNING, and passed to *on_drops* after each
    drain that dropped anything. A drain streams its files: memory is O(max_entries) small
    tuples plus one batch of lines, whatever the file size.

    *clock* gives wall-clock seconds (enqueue times must be comparable between processes and
    across restarts, so this is not the trio clock); it is also compared with file mtimes
    for *claim_timeout_seconds*. *max_entry_bytes* bounds one encoded line.

    Within a process, file operations of one queue are serialized by an anyio lock (so one
    queue never occupies more than one worker thread) and drains of one queue run one at a
    time. File I/O runs in worker threads, in batches, except for the one-byte mark written
    after each delivery (see :meth:`drain`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_entries: int = 5000,
        max_age_seconds: float = 24 * 3600.0,
        on_drops: Callable[[Mapping[str, int]], object] | None = None,
        clock: Callable[[], float] = time.time,
        max_entry_bytes: int = 64 * 1024,
        claim_timeout_seconds: float = 3600.0,
        scan_batch_lines: int = 8192,
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_entries = check_count("max_entries", max_entries, minimum=1)
        self.max_age_seconds = check_seconds("max_age_seconds", max_age_seconds)
        self.max_entry_bytes = check_count("max_entry_bytes", max_entry_bytes, minimum=64)
        self.claim_timeout_seconds = check_seconds(
            "claim_timeout_seconds", claim_timeout_seconds, allow_zero=False
        )
        self.scan_batch_lines = check_count("scan_batch_lines", scan_batch_lines, minimum=1)
        self.on_drops = on_drops
        self._clock = clock
        self._path = os.path.join(self.directory, QUEUE_FILE)
        # Lines up to this long are read as entries. The slack above max_entry_bytes lets a
        # retried entry grow by the digits of its attempt counter without becoming corrupt.
        self._read_limit = self.max_entry_bytes + 32
        self._io_lock = anyio.Lock()
        self._drain_lock = anyio.Lock()
        self._drops: collections.Counter[str] = collections.Counter()

    @property
    def drops(self) -> dict[str, int]:
        """Drops by reason over this object's lifetime (this process's drains only)."""
        return dict(self._drops)

    def _now(self) -> float:
        now = float(self._clock())
        if not math.isfinite(now):
            raise ValueError(f"clock returned {now!r}")
        return now

    # -- appending --------------------------------------------------------------------------

    async def append(self, payload: Any) -> str:
        """Queue *payload* (a JSON value); return the entry's id.

        Creates the directory if needed. Runs in a worker thread; a checkpoint. If cancelled
        while the write is in progress, the call still waits for it to finish, and the entry
        is queued.

        Raises:
            TypeError: *payload* is not JSON-serialisable.
            ValueError: the encoded entry exceeds ``max_entry_bytes``.
            OSError: the file could not be written (nothing, or a torn line that drains will
                count as corrupt, is left behind).
        """
        [entry_id] = await self.append_many([payload])
        return entry_id

    async def append_many(self, payloads: Iterable[Any]) -> list[str]:
        """Queue several payloads with one lock and one write; return their ids in order.

        Same contract as :meth:`append`; all of them are encoded (and validated) before any
        is written.
        """
        now = self._now()
        ids: list[str] = []
        lines: list[bytes] = []
        for payload in payloads:
            entry_id = secrets.token_hex(16)
            lines.append(
                encode_line(entry_id, now, 0, payload, max_entry_bytes=self.max_entry_bytes)
            )
            ids.append(entry_id)
        if lines:
            async with self._io_lock:
                await anyio.to_thread.run_sync(
                    append_lines, self.directory, self._path, b"".join(lines)
                )
        return ids

    # -- draining ---------------------------------------------------------------------------

    async def drain(self, deliver: Deliver) -> DrainSummary:
        """Claim everything queued, apply the caps, and ``await deliver(entry)`` for the rest.

        Entries are delivered oldest first. An entry whose *deliver* returns false or raises an
        ``Exception`` is appended again (same id and enqueue time, ``attempts + 1``) for a later
        drain; entries appended during this drain also wait for a later one. Drops are counted,
        logged and passed to ``on_drops`` (an exception from it is logged, not raised); the
        claimed files are deleted at the end. One drain of this queue runs at a time in this
        process (a second call waits); drains in other processes claim other files.

        Each handled entry is recorded by a one-byte mark written in place as soon as
        *deliver* returns (before the next delivery starts), so a crash repeats at most the one
        delivery whose mark it prevented. That write is the one file operation done on the
        event loop's thread (a page-cache write of about a microsecond, where a worker-thread
        round trip costs a hundred or more); everything else runs in worker threads, in
        batches. A checkpoint.

        Cancellation loses nothing: an entry whose delivery was interrupted, and every entry
        not yet handled, stays in its claimed file, which the next drain (of this process at
        once, of any process once this one has exited) takes over; drop counts of the
        interrupted drain are reported by that drain. The interrupted delivery itself may
        have reached its destination, so it may be delivered again (at-least-once).

        Raises:
            OSError: the directory could not be read or a file written; entries stay where
                they are (claimed files are picked up again by the next drain).
        """
        async with self._drain_lock:
            now = self._now()
            claims = await self._run(
                claim_files, self.directory, self._path, self.claim_timeout_seconds, now
            )
            try:
                return await self._drain_claimed(claims, now, deliver)
            finally:
                release_claims(claims)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._io_lock:
            return await anyio.to_thread.run_sync(fn, *args)

    async def _drain_claimed(self, claims: list[str], now: float, deliver: Deliver) -> DrainSummary:
        if not claims:
            return DrainSummary()
        scan = Scan(self.max_entries, now - self.max_age_seconds, self._read_limit)
        fds: list[int] = []
        try:
            for index, path in enumerate(claims):
                handle = await self._run(open, path, "rb", READ_BUFFER_BYTES)
                try:
                    while not await self._run(scan.scan, handle, index, self.scan_batch_lines):
                        pass
                finally:
                    handle.close()
            dropped = scan.dropped()
            todo = scan.to_deliver()
            delivered = requeued = 0
            for path in claims:
                fds.append(await self._run(os.open, path, os.O_RDWR))
            pos = 0
            while pos < len(todo):
                batch = take_batch(todo, pos)
                raws = await self._run(read_lines, fds, batch)
                pos += len(batch)
                for (_, _, index, offset, _, _), raw in zip(batch, raws, strict=True):
                    decoded = decode_line(raw)
                    if decoded is None:
                        # A sound header over a broken payload (see _Scan). Marked like a
                        # handled line, so a drain that takes this file over does not count
                        # it a second time.
                        dropped[DROP_CORRUPT] += 1
                        mark(fds[index], offset)
                        continue
                    entry_id, payload, enqueued_at, attempts = decoded
                    entry = QueuedEntry(
                        id=entry_id, payload=payload, enqueued_at=enqueued_at, attempts=attempts
                    )
                    if await self._deliver_one(deliver, entry):
                        # Inline, not in a worker thread: this writes one byte into a page
                        # that was read a moment ago (it is in the page cache, so the write
                        # does not wait for the disk), taking about 1 us where a thread round
                        # trip takes 100-250 us (bench/RESULTS.md). Marks batched to amortise
                        # the round trips would widen the window in which a crash repeats
                        # deliveries from one entry to a whole batch.
                        mark(fds[index], offset)
                        delivered += 1
                    else:
                        retry = encode_line(
                            entry.id,
                            entry.enqueued_at,
                            entry.attempts + 1,
                            entry.payload,
                            max_entry_bytes=self.max_entry_bytes,
                            limit=self._read_limit,
                        )
                        await self._run(append_lines, self.directory, self._path, retry)
                        mark(fds[index], offset)  # after the copy exists: never lost
                        requeued += 1
            counts = {reason: n for reason, n in dropped.items() if n}
            # Report before deleting: a crash in between makes the next drain count these
            # drops again (over-reported), where the other order could lose the report.
            self._report(counts)
            await self._run(unlink_all, claims)
            return DrainSummary(
                delivered=delivered, requeued=requeued, dropped=counts, files=len(claims)
            )
        finally:
            for fd in fds:
                os.close(fd)

    async def _deliver_one(self, deliver: Deliver, entry: QueuedEntry) -> bool:
        try:
            return bool(await deliver(entry))
        except Exception as exc:
            # Logged below ERROR on purpose: alert delivery is built on this queue, and an
            # ERROR here would become an alert about failing alerts.
            log.warning(
                "retry queue %s: delivery of entry %s failed: %s: %s",
                self.directory,
                entry.id,
                type(exc).__name__,
                exc,
            )
            return False

    def _report(self, counts: dict[str, int]) -> None:
        if not counts:
            return
        self._drops.update(counts)
        log.warning(
            "retry queue %s: dropped %s",
            self.directory,
            ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())),
        )
        if self.on_drops is not None:
            try:
                self.on_drops(dict(counts))
            except Exception:
                log.warning("retry queue %s: on_drops callback failed", self.directory)

    async def count_pending(self) -> int:
        """Well-formed entries not yet handled, in ``queue.jsonl`` and every claimed file.

        A snapshot that streams the files (O(1) memory); it includes entries the next drain
        will drop under the caps. Runs in a worker thread; a checkpoint.
        """
        return int(await self._run(count_pending, self.directory, self._read_limit))

    def __repr__(self) -> str:
        return f"<RetryQueue {self.directory!r} max_entries={self.max_entries}>"
