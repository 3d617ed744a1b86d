"""A file-backed retry queue of JSON lines: bounded, shared by processes, every drop counted.

Layout of the queue's directory::

    queue.jsonl                      where appends go
    claimed-<pid>-<random>.jsonl     files a drain has taken (renamed) from queue.jsonl

One line is one entry::

    {"d":0,"id":"<32 hex>","ts":<enqueue time>,"n":<attempts>,"p":<payload>}

``"d"`` is the *handled* mark. It sits at a fixed byte offset (5) so that a drain records
"this line is done" by overwriting one byte in place: the line stays valid JSON, the mark
travels with the file when it is renamed, and a drain that takes over a dead drainer's file
skips exactly the lines that were already delivered or re-queued.

Cross-process protocol:

- **append** opens ``queue.jsonl`` with ``O_APPEND``, takes ``flock(LOCK_EX)``, checks that the
  locked file is still the one named ``queue.jsonl`` (a drain may have renamed it between
  ``open`` and ``flock``; if so it reopens), then writes the line. The lock is what makes this
  safe, not the atomicity of ``write``: without it an appender that opened the file just
  before a drain renamed it would write into the drain's claimed file, possibly after the
  drain had read it, and the entry would vanish. Holding the lock also makes each line one
  critical section whatever its size (``PIPE_BUF`` is a pipe guarantee, not a regular-file
  one), and lets a short write simply be continued.
- **drain** takes the same lock on ``queue.jsonl``, checks its identity the same way, renames
  it to a fresh ``claimed-<pid>-<random>.jsonl`` and releases the lock. ``rename`` is atomic,
  so two drainers never claim the same file; once renamed no appender can write to it.
- **reclaim**: a drain also takes over ``claimed-*`` files that no live drain owns — the owner
  pid no longer runs, the owner is this process but no drain of it holds the file (a drain
  that was cancelled), or the file has not been written for ``claim_timeout_seconds`` (pid
  reuse, a hung owner). Taking over is again a ``rename``, so exactly one drainer wins.

``flock`` locks are advisory and local: the directory must be on a local filesystem shared by
processes of one host (not NFS, not containers with separate pid namespaces, where the pid
check is meaningless and only the timeout applies). Nothing is fsynced: entries survive the
crash of a process, not the loss of power.

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
import contextlib
import errno
import fcntl
import heapq
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import IO, Any, Final, final

import anyio
import anyio.to_thread
import attrs

from ..._policy._checks import check_count, check_seconds

log = logging.getLogger("megatrio.retry_queue")

QUEUE_FILE: Final = "queue.jsonl"
CLAIM_PREFIX: Final = "claimed-"
CLAIM_SUFFIX: Final = ".jsonl"

DROP_TOO_MANY: Final = "too_many"
"""Dropped because newer entries filled ``max_entries``."""
DROP_TOO_OLD: Final = "too_old"
"""Dropped because it was enqueued more than ``max_age_seconds`` before the drain."""
DROP_CORRUPT: Final = "corrupt"
"""A line that is not a well-formed entry (torn write, foreign data, over-long line)."""
DROP_REASONS: Final = (DROP_TOO_MANY, DROP_TOO_OLD, DROP_CORRUPT)

_PREFIX_PENDING: Final = b'{"d":0,'
_PREFIX_HANDLED: Final = b'{"d":1,'
_MARK_OFFSET: Final = 5
_MARK_HANDLED: Final = b"1"
# The header every line starts with, exactly as _encode writes it: mark, id, time, attempts.
_HEADER: Final = re.compile(
    rb'\{"d":([01]),"id":"[0-9a-f]{32}","ts":(-?[0-9][0-9.eE+-]*),"n":[0-9]+,"p":'
)
_READ_BUFFER_BYTES: Final = 1 << 20
# A batch of lines read for delivery stays under this many bytes (at least one line).
_BATCH_BYTES: Final = 1 << 20

# Claimed files held by a drain running in this process, by absolute path. Shared by every
# RetryQueue of the process (two queues may point at one directory), guarded by a thread lock
# because drains of different event loops may run in different threads.
_active_claims: set[str] = set()
_active_lock = threading.Lock()


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
    ``deliver`` coroutine, re-queuing failures. See the module docstring for the file
    protocol and the exact delivery guarantee (at-least-once).

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
            lines.append(self._encode(entry_id, now, 0, payload))
            ids.append(entry_id)
        if lines:
            async with self._io_lock:
                await anyio.to_thread.run_sync(self._append_lines, b"".join(lines))
        return ids

    def _encode(
        self, entry_id: str, ts: float, attempts: int, payload: Any, *, limit: int | None = None
    ) -> bytes:
        try:
            body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"retry queue payload is not JSON-serialisable: {exc}") from None
        # ensure_ascii (the default) escapes every control character: one entry, one line.
        line = b'%s"id":"%s","ts":%s,"n":%d,"p":%s}\n' % (
            _PREFIX_PENDING,
            entry_id.encode(),
            json.dumps(ts).encode(),
            attempts,
            body.encode(),
        )
        if len(line) > (self.max_entry_bytes if limit is None else limit):
            raise ValueError(
                f"retry queue entry of {len(line)} bytes exceeds "
                f"max_entry_bytes={self.max_entry_bytes}"
            )
        return line

    def _append_lines(self, data: bytes) -> None:
        os.makedirs(self.directory, exist_ok=True)
        with _locked_queue_file(self._path, create=True) as fd:
            assert fd is not None
            size = os.fstat(fd).st_size
            # A writer that died mid-line (or hit ENOSPC) left a tail without a newline; start
            # on a fresh line so only that fragment, not our entry too, counts as corrupt.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            # We hold the lock: continuing a short write cannot interleave with anyone.
            while view:
                written = os.write(fd, view)
                view = view[written:]

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
            claims = await self._run(self._claim_files, now)
            try:
                return await self._drain_claimed(claims, now, deliver)
            finally:
                with _active_lock:
                    _active_claims.difference_update(claims)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._io_lock:
            return await anyio.to_thread.run_sync(fn, *args)

    async def _drain_claimed(self, claims: list[str], now: float, deliver: Deliver) -> DrainSummary:
        if not claims:
            return DrainSummary()
        scan = _Scan(self.max_entries, now - self.max_age_seconds, self._read_limit)
        fds: list[int] = []
        try:
            for index, path in enumerate(claims):
                handle = await self._run(open, path, "rb", _READ_BUFFER_BYTES)
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
                batch = _take_batch(todo, pos)
                raws = await self._run(_read_lines, fds, batch)
                pos += len(batch)
                for (_, _, index, offset, _, _), raw in zip(batch, raws, strict=True):
                    entry = _decode(raw)
                    if entry is None:
                        # A sound header over a broken payload (see _Scan). Marked like a
                        # handled line, so a drain that takes this file over does not count
                        # it a second time.
                        dropped[DROP_CORRUPT] += 1
                        _mark(fds[index], offset)
                        continue
                    if await self._deliver_one(deliver, entry):
                        # Inline, not in a worker thread: this writes one byte into a page
                        # that was read a moment ago (it is in the page cache, so the write
                        # does not wait for the disk), taking about 1 us where a thread round
                        # trip takes 100-250 us (bench/RESULTS.md). Marks batched to amortise
                        # the round trips would widen the window in which a crash repeats
                        # deliveries from one entry to a whole batch.
                        _mark(fds[index], offset)
                        delivered += 1
                    else:
                        retry = self._encode(
                            entry.id,
                            entry.enqueued_at,
                            entry.attempts + 1,
                            entry.payload,
                            limit=self._read_limit,
                        )
                        await self._run(self._append_lines, retry)
                        _mark(fds[index], offset)  # after the copy exists: never lost
                        requeued += 1
            counts = {reason: n for reason, n in dropped.items() if n}
            # Report before deleting: a crash in between makes the next drain count these
            # drops again (over-reported), where the other order could lose the report.
            self._report(counts)
            await self._run(_unlink_all, claims)
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

    def _claim_files(self, now: float) -> list[str]:
        """Rename orphaned claimed files and ``queue.jsonl`` to fresh claims of ours."""
        claims: list[str] = []
        try:
            try:
                names = sorted(os.listdir(self.directory))
            except FileNotFoundError:
                return claims
            for name in names:
                if not (name.startswith(CLAIM_PREFIX) and name.endswith(CLAIM_SUFFIX)):
                    continue
                path = os.path.join(self.directory, name)
                if self._is_orphan(path, name, now):
                    new = self._claim_path(claims)
                    try:
                        os.rename(path, new)
                    except FileNotFoundError:
                        # Another drainer took it first.
                        _release(new, claims)
            new = self._claim_path(claims)
            with _locked_queue_file(self._path, create=False) as fd:
                if fd is None:
                    _release(new, claims)
                else:
                    os.rename(self._path, new)
        except BaseException:
            # Whatever was renamed stays on disk as a claim of ours that no drain holds: the
            # next drain takes it over.
            with _active_lock:
                _active_claims.difference_update(claims)
            raise
        return claims

    def _claim_path(self, claims: list[str]) -> str:
        path = os.path.join(
            self.directory, f"{CLAIM_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{CLAIM_SUFFIX}"
        )
        # Registered before the rename, so a drain of this process listing the directory
        # concurrently never mistakes the new file for an orphan.
        with _active_lock:
            _active_claims.add(path)
        claims.append(path)
        return path

    def _is_orphan(self, path: str, name: str, now: float) -> bool:
        with _active_lock:
            if path in _active_claims:
                return False
        pid = _claim_pid(name)
        if pid == os.getpid() or (pid is not None and not _pid_alive(pid)):
            return True
        try:
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return False
        return now - mtime > self.claim_timeout_seconds

    async def count_pending(self) -> int:
        """Well-formed entries not yet handled, in ``queue.jsonl`` and every claimed file.

        A snapshot that streams the files (O(1) memory); it includes entries the next drain
        will drop under the caps. Runs in a worker thread; a checkpoint.
        """
        return int(await self._run(_count_pending, self.directory, self._read_limit))

    def __repr__(self) -> str:
        return f"<RetryQueue {self.directory!r} max_entries={self.max_entries}>"


# -- the scan (pass one) ----------------------------------------------------------------------

# (enqueued_at, sequence, file index, offset, length, handled): ordered by time, then by
# position, so "newest" is well defined even for equal timestamps.
_Item = tuple[float, int, int, int, int, bool]


class _Scan:
    """Pass one over the claimed files: counts, plus a min-heap of the newest entries.

    A line is judged by its header alone (:data:`_HEADER`, which this module always writes
    first, and a closing ``}``): that is what makes the pass fast (no JSON parsing of
    payloads). The few lines that pass one keeps are parsed in full by pass two; one whose
    payload turns out to be malformed (a torn write cut right after a ``}`` and healed by the
    next append) counts as corrupt then, and the slot it took is not given to an older entry —
    that entry was already counted as too many. Nothing goes uncounted either way.

    Only one worker thread touches it at a time (each batch is one ``run_sync`` call, awaited
    before the next). Memory is the heap: at most *max_entries* items.
    """

    def __init__(self, max_entries: int, cutoff: float, max_line: int) -> None:
        self.max_entries = max_entries
        self.cutoff = cutoff
        self.max_line = max_line
        self.heap: list[_Item] = []
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
                        line = readline(_READ_BUFFER_BYTES)
                        offset += len(line)
                    self.corrupt += 1
                    continue
                if line == b"\n":
                    continue  # a bare newline written after a torn line: not an entry
                header = _HEADER.match(line)
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
                item: _Item = (ts, self.seq, index, start, len(line), handled)
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

    def to_deliver(self) -> list[_Item]:
        """Kept, unhandled entries, oldest first."""
        return sorted(item for item in self.heap if not item[5])


def _finite(text: bytes) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _lines(handle: IO[bytes], max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """``(offset, line)`` for each line of *handle*; ``line`` is None for a corrupt one.

    A line longer than *max_line* is skipped in bounded pieces, never held whole; so is a
    torn tail without a newline at the end of the file. Both count as corrupt.
    """
    offset = 0
    while line := handle.readline(max_line + 1):
        start = offset
        offset += len(line)
        if line.endswith(b"\n"):
            yield start, line
            continue
        while line and not line.endswith(b"\n"):
            line = handle.readline(_READ_BUFFER_BYTES)
            offset += len(line)
        yield start, None


def _take_batch(todo: list[_Item], pos: int) -> list[_Item]:
    size = 0
    end = pos
    while end < len(todo) and (end == pos or size + todo[end][4] <= _BATCH_BYTES):
        size += todo[end][4]
        end += 1
    return todo[pos:end]


def _decode(line: bytes) -> QueuedEntry | None:
    if not (line.startswith(_PREFIX_PENDING) or line.startswith(_PREFIX_HANDLED)):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.keys() != {"d", "id", "ts", "n", "p"}:
        return None
    entry_id, ts, attempts = obj["id"], obj["ts"], obj["n"]
    if not isinstance(entry_id, str) or isinstance(ts, bool) or isinstance(attempts, bool):
        return None
    if not isinstance(ts, int | float) or not math.isfinite(ts) or not isinstance(attempts, int):
        return None
    return QueuedEntry(id=entry_id, payload=obj["p"], enqueued_at=float(ts), attempts=attempts)


# -- file helpers (run in worker threads, except _mark) ---------------------------------------


@contextlib.contextmanager
def _locked_queue_file(path: str, *, create: bool) -> Iterator[int | None]:
    """Yield an fd of ``queue.jsonl`` under ``flock(LOCK_EX)``, verified to still be the file
    at *path*; ``None`` when it does not exist and *create* is false."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            if create:
                raise
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            locked = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (
                locked.st_ino,
                locked.st_dev,
            ):
                yield fd
                return
            # Renamed by a drain between our open and our lock: that file is not the queue
            # any more. Try again with whatever is at *path* now.
        finally:
            os.close(fd)  # closing the fd releases the lock


def _read_lines(fds: list[int], batch: list[_Item]) -> list[bytes]:
    return [os.pread(fds[index], length, offset) for _, _, index, offset, length, _ in batch]


def _mark(fd: int, offset: int) -> None:
    if os.pwrite(fd, _MARK_HANDLED, offset + _MARK_OFFSET) != 1:
        raise OSError(errno.EIO, "short write marking a retry queue entry")


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _release(path: str, claims: list[str]) -> None:
    claims.remove(path)
    with _active_lock:
        _active_claims.discard(path)


def _claim_pid(name: str) -> int | None:
    pid, _, _ = name[len(CLAIM_PREFIX) :].partition("-")
    return int(pid) if pid.isdigit() else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _count_pending(directory: str, max_line: int) -> int:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    count = 0
    for name in names:
        if name != QUEUE_FILE and not (
            name.startswith(CLAIM_PREFIX) and name.endswith(CLAIM_SUFFIX)
        ):
            continue
        path = os.path.join(directory, name)
        # A file can be claimed or deleted between listdir and open: it is simply not counted.
        with (
            contextlib.suppress(FileNotFoundError),
            open(path, "rb", buffering=_READ_BUFFER_BYTES) as handle,
        ):
            for _, line in _lines(handle, max_line):
                if line is not None and line.startswith(_PREFIX_PENDING) and _decode(line):
                    count += 1
    return count
