"""A cache driver that keeps each entry in its own file, in a directory processes may share.

This module is the async driver: locks, shields, cancellation and stop requests around one
worker-thread call per operation (a sweep or rescan: one per batch), never one per system
call. What it builds on, one concern each: the on-disk layout and entry format
(:mod:`._file_format`), the blocking file operations run in worker threads
(:mod:`._file_ops`), and the in-process index with its caps (:mod:`._file_index`).

The index (:mod:`._file_index`) is built by a full scan when the driver opens — explicitly with
:meth:`FileCache.open`, or lazily by the first operation that needs it. Within a process,
writes (``set``, ``delete``, evictions) are serialised by a lock; reads and sweeps run
concurrently with them. Processes may share a root; see :mod:`._file_ops` for why that is
safe and :mod:`._file_index` for how caps then add up.

Cleaning
--------
:meth:`FileCache.serve_cleaner` is a supervised child: every *sweep_interval_seconds* it runs
:meth:`FileCache.sweep`, which pops due entries off the expiry heap and removes their files
in batches — its cost grows with the number of *expired* entries, not the total — and every
*rescan_every_sweeps*-th tick it first runs :meth:`FileCache.rescan`, which walks the shards
a few at a time to adopt other processes' files, forget vanished ones, drop corrupt and
expired ones it finds, and remove temporary files older than *stale_temp_seconds* (counted
as ``"stale_temp"``: writes a crashed process never finished).

Time
----
Expiry is wall-clock epoch seconds from *clock* (``time.time`` by default), not the trio
clock: entry files outlive the process that wrote them and are shared between processes.
Tests pass their own *clock*. The age of a temporary file is *clock* minus the later of its
mtime and ctime.

Deleting the root clears the cache: writes recreate the directories, and the next rescan
forgets every indexed entry.

A little over the house's 400 lines: what is left is one class whose methods each state their
cancellation contract; moving the cleaning out would have it reach into the driver's lock and
counters.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Final, final

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from ..._policy._checks import check_count, check_seconds
from ..._policy._ttl_lru import DROP_EXPIRED
from ...nursery._child import current_child
from ...nursery._timer import run_every
from ._file_format import HEADER_SIZE, entry_path, key_digest
from ._file_index import FileIndex, Victims
from ._file_ops import (
    DROP_CORRUPT,
    DROP_STALE_TEMP,
    Entry,
    Found,
    WriteResult,
    delete_entry,
    list_shards,
    prepare_root,
    read_entry,
    retire_many,
    scan_shards,
    unlink_victims,
    write_entry,
)

# Due entries removed per worker-thread call in a sweep (a few milliseconds of I/O), and
# shard directories listed per call in a rescan: the unit of work between checkpoints.
_SWEEP_BATCH: Final = 256
_SCAN_BATCH: Final = 8
# Forgetting vanished entries after a rescan walks the index in the event loop; this many
# entries between checkpoints keeps each step well under a millisecond.
_FORGET_BATCH: Final = 4096


@final
class FileCache:
    """Cache driver storing one file per entry under *root*; see the module docstring.

    Implements :class:`~megatrio.CacheDriver`. At most *max_entries* entry
    files and *max_bytes* bytes of them (as this process sees the directory); per-entry TTL in
    wall-clock seconds from *clock*; least recently used entries go first, expired ones before
    them. Drops are counted by reason in :attr:`drops`: ``"expired"``, ``"capacity"``,
    ``"corrupt"`` and ``"stale_temp"``.

    Every operation is a checkpoint. It opens the driver first if needed (see :meth:`open`).
    Once its worker thread has started, an operation completes even if cancelled (file I/O
    cannot be interrupted) and the cancellation is delivered at the caller's next checkpoint;
    cancelled before that, it has done nothing. Environmental failures (permissions, a full
    disk, I/O errors) raise ``OSError``; they are never reported as a miss.

    Raises (constructor):
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range (the message names it), or *root* exists and
            is not a directory.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_entries: int = 10_000,
        max_bytes: int | None = 256 * 1024 * 1024,
        sweep_interval_seconds: float = 60.0,
        rescan_every_sweeps: int = 10,
        stale_temp_seconds: float = 3600.0,
        fsync: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f"root must be a path, got {root!r}")
        path = os.fspath(root)
        if not isinstance(path, str) or not path:
            raise ValueError(f"root must be a non-empty str path, got {root!r}")
        # A sync stat at configuration time, so a misconfigured root fails before serving.
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"root {path!r} exists and is not a directory")
        self.max_entries = check_count("max_entries", max_entries, minimum=1)
        self.max_bytes = (
            None if max_bytes is None else check_count("max_bytes", max_bytes, minimum=1)
        )
        self.sweep_interval_seconds = check_seconds(
            "sweep_interval_seconds", sweep_interval_seconds, allow_zero=False
        )
        self.rescan_every_sweeps = check_count(
            "rescan_every_sweeps", rescan_every_sweeps, minimum=1
        )
        self.stale_temp_seconds = check_seconds(
            "stale_temp_seconds", stale_temp_seconds, allow_zero=False
        )
        if not isinstance(fsync, bool):
            raise TypeError(f"fsync must be a bool, got {fsync!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self.root = os.path.abspath(path)
        self.fsync = fsync
        self._clock = clock
        self._index = FileIndex(self.max_entries, self.max_bytes)
        self._scan_id = 0
        self._ticks = 0
        self._opened = False
        self._opening: anyio.Event | None = None
        self._write_lock: anyio.Lock | None = None
        self._drops: Counter[str] = Counter()

    # -- introspection ----------------------------------------------------------------------

    @property
    def drops(self) -> dict[str, int]:
        """Entries this process removed, by reason (a copy)."""
        return dict(self._drops)

    def __len__(self) -> int:
        """Entries in this process's index."""
        return len(self._index)

    @property
    def total_bytes(self) -> int:
        """Sum of the indexed entry file sizes."""
        return self._index.bytes

    def path_for(self, key: str) -> str:
        """Where *key*'s entry file lives (whether or not it exists). Not a checkpoint."""
        return entry_path(self.root, key_digest(key))

    def __repr__(self) -> str:
        return f"<FileCache {self.root!r} {len(self._index)} entries, {self._index.bytes} bytes>"

    # -- the CacheDriver protocol -----------------------------------------------------------

    async def open(self) -> None:
        """Create *root* if needed and build the index by scanning it. Idempotent.

        A checkpoint. Concurrent callers share one scan, which runs to the end even if the
        surrounding child is asked to stop (a partial index would undercount the caps).
        Cancelling the caller that runs the scan leaves the driver unopened: a later call
        scans again, skipping the files already indexed.

        Raises:
            NotADirectoryError: *root* is not a directory (the message names it).
            OSError: *root* cannot be created or listed.
        """
        if self._opened:
            await anyio.lowlevel.checkpoint()
        else:
            await self._ensure_open()

    async def _ensure_open(self) -> None:
        while not self._opened:
            if self._opening is not None:
                await self._opening.wait()
                continue
            self._opening = anyio.Event()
            try:
                await anyio.to_thread.run_sync(prepare_root, self.root)
                await self._rescan(stoppable=False)
                self._opened = True
            finally:
                event, self._opening = self._opening, None
                event.set()

    async def get(self, key: str) -> bytes | None:
        """The live value stored under *key*, or None. Marks it most recently used.

        Expired and corrupt files are removed and counted; a file another process wrote is
        adopted into the index.
        """
        await self._ensure_open()
        key_bytes = key.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(key_bytes).hexdigest()
        before = self._index.get(digest)
        result = await anyio.to_thread.run_sync(
            read_entry, self.root, digest, key_bytes, self._clock()
        )
        if result.outcome in (DROP_EXPIRED, DROP_CORRUPT):
            self._drops[result.outcome] += 1
        self._index.after_read(digest, before, result)
        return result.value

    async def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        """Store *value* under *key* for *ttl_seconds* (None: until evicted).

        Makes room first (expired entries, then least recently used). Writes are serialised
        within the driver; once a write has taken the lock it runs to completion (the planning
        and one worker-thread call, bounded by one file write and the evictions it needs),
        shielded, so the index always matches what was done on disk.

        Raises:
            ValueError: *ttl_seconds* is not positive, or the entry alone exceeds max_bytes.
            OSError: the file could not be written (the previous value, if any, remains).
        """
        if ttl_seconds is not None:
            check_seconds("ttl_seconds", ttl_seconds, allow_zero=False)
        key_bytes = key.encode("utf-8", "surrogatepass")
        size = HEADER_SIZE + len(key_bytes) + len(value)
        if self.max_bytes is not None and size > self.max_bytes:
            raise ValueError(
                f"entry of {size} bytes (value {len(value)}) exceeds "
                f"max_bytes={self.max_bytes} for key {key!r}"
            )
        digest = hashlib.sha256(key_bytes).hexdigest()
        await self._ensure_open()
        async with self._lock():
            with anyio.CancelScope(shield=True):
                now = self._clock()
                expires_at = math.inf if ttl_seconds is None else now + ttl_seconds
                index = self._index
                old = index.get(digest)
                if old is not None:
                    index.forget(digest, old)
                victims = index.make_room(1, size, now)
                pending = Entry(size, expires_at, -1, -1, index.next_stamp(), pending=True)
                index.insert(digest, pending)
                try:
                    result = await self._run_write(
                        victims,
                        write_entry,
                        self.root,
                        digest,
                        key_bytes,
                        value,
                        expires_at,
                        [v for v, _, _ in victims],
                        self.fsync,
                    )
                finally:
                    index.forget(digest, pending)
                if result.stat is not None:
                    st = result.stat
                    final = Entry(size, expires_at, st.st_ino, st.st_mtime_ns, index.next_stamp())
                    index.insert(digest, final)
                elif old is not None:
                    index.insert(digest, old)  # the old file was not replaced
        if result.error is not None:
            raise result.error

    async def delete(self, key: str) -> bool:
        """Remove *key*'s entry; whether a file was there (expired or not)."""
        await self._ensure_open()
        digest = key_digest(key)
        async with self._lock():
            before = self._index.get(digest)
            existed = await anyio.to_thread.run_sync(delete_entry, self.root, digest)
            if before is not None:
                self._index.forget(digest, before)
        return existed

    async def has(self, key: str) -> bool:
        """Whether a live value is stored under *key* (a read: it marks it recently used)."""
        return await self.get(key) is not None

    async def serve_cleaner(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Sweep every *sweep_interval_seconds*, rescanning every *rescan_every_sweeps* ticks.

        Run it as a supervised child. It opens the driver (the initial scan) before reporting
        ready. Asked to stop, it returns at once when waiting, or after the sweep or rescan
        batch in progress; cancelled, it stops at the next batch boundary. An ``OSError``
        from the directory ends it (its supervisor decides about restarting).
        """
        await self._ensure_open()
        await run_every(self.sweep_interval_seconds, None, self._tick, task_status=task_status)

    # -- cleaning ---------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Remove the entries whose expiry is due; how many files went.

        Cost: O(due entries x log n) plus one worker-thread call per batch of due entries;
        entries that are not due are never touched. Each file is renamed aside and judged
        before it is removed (see :func:`._file_ops.retire`), so a fresh entry another process
        wrote meanwhile is kept. Stops between batches when the surrounding supervised child
        is asked to stop; what is left is still due for the next sweep. Cancelled, it stops
        at the next batch boundary (a batch whose worker thread has started completes, and
        its removals are counted).
        """
        await self._ensure_open()
        ctx = current_child()
        removed = 0
        while not (ctx is not None and ctx.stopping):
            now = self._clock()
            batch = self._index.pop_due(now, _SWEEP_BATCH)
            if not batch:
                break
            try:
                outcomes = await anyio.to_thread.run_sync(
                    retire_many, self.root, [d for d, _ in batch], now
                )
            except BaseException:
                # Cancelled before the thread started (or a bug in it): put the batch back
                # so the index keeps tracking these entries.
                self._index.push_due(batch)
                raise
            for (digest, entry), (outcome, found) in zip(batch, outcomes, strict=True):
                if outcome in (DROP_EXPIRED, DROP_CORRUPT):
                    self._drops[outcome] += 1
                    removed += 1
                self._index.after_retire(digest, entry, outcome, found)
        if self._index.over(0, 0):
            await self._trim()
        return removed

    async def rescan(self) -> None:
        """Reconcile the index with the directory, then trim to the caps.

        Walks the shard directories a few at a time (one worker-thread call per batch):
        adopts entry files other processes wrote, forgets files that vanished, removes
        corrupt and expired files it finds (counted) and temporary files older than
        *stale_temp_seconds* (counted as ``"stale_temp"``). Files whose inode, size and mtime
        match the index are not opened. Cost: O(entries) directory entries and stats.
        Stops between batches when the surrounding supervised child is asked to stop.
        """
        await self._ensure_open()
        await self._rescan(stoppable=True)

    async def _tick(self) -> None:
        self._ticks += 1
        if self._ticks % self.rescan_every_sweeps == 0:
            await self._rescan(stoppable=True)
        await self.sweep()

    async def _rescan(self, *, stoppable: bool) -> None:
        ctx = current_child() if stoppable else None
        self._scan_id += 1
        scan_id = self._scan_id
        started_at = self._index.stamp
        shards = await anyio.to_thread.run_sync(list_shards, self.root)
        found: list[tuple[str, Entry | None, Found]] = []
        for i in range(0, len(shards), _SCAN_BATCH):
            if ctx is not None and ctx.stopping:
                return  # incomplete: forgetting unseen entries would be wrong
            now = self._clock()
            result = await anyio.to_thread.run_sync(
                scan_shards,
                self.root,
                shards[i : i + _SCAN_BATCH],
                self._index.get,
                now,
                now - self.stale_temp_seconds,
            )
            if result.stale_temps:
                self._drops[DROP_STALE_TEMP] += result.stale_temps
            self._drops.update(reason for _, _, reason in result.dropped)
            self._index.apply_scan(result, scan_id)
            found.extend(result.found)
        self._index.adopt_found(found)
        digests = list(self._index)
        for i in range(0, len(digests), _FORGET_BATCH):
            self._index.forget_unseen(digests[i : i + _FORGET_BATCH], scan_id, started_at)
            await anyio.lowlevel.checkpoint()
        if self._index.over(0, 0):
            await self._trim()

    async def _trim(self) -> None:
        """Evict (expired first, then LRU) until within the caps."""
        async with self._lock():
            with anyio.CancelScope(shield=True):
                victims = self._index.make_room(0, 0, self._clock())
                if victims:
                    await self._run_write(
                        victims, unlink_victims, self.root, [v for v, _, _ in victims]
                    )

    # -- helpers ----------------------------------------------------------------------------

    def _lock(self) -> anyio.Lock:
        # Created on first use, inside the event loop that will use it.
        if self._write_lock is None:
            self._write_lock = anyio.Lock()
        return self._write_lock

    async def _run_write(
        self,
        victims: Victims,
        fn: Callable[..., WriteResult],
        *args: object,
    ) -> WriteResult:
        """Run *fn* (which removes *victims* first) in a thread; count the removed victims."""
        digests = [v for v, _, _ in victims]
        self._index.evicting.update(digests)
        try:
            result = await anyio.to_thread.run_sync(fn, *args)
        finally:
            self._index.evicting.difference_update(digests)
        for (_, _, reason), removed in zip(victims, result.removed, strict=True):
            if removed:
                self._drops[reason] += 1
        return result
