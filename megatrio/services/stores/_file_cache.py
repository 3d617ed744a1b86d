"""A cache driver that keeps each entry in its own file, in a directory processes may share.

Layout
------
``<root>/<h[0:2]>/<h>``, where ``h`` is the SHA-256 hex digest (lower case) of the full key
(``mega:cache:<app>:<key>``) encoded as UTF-8 with ``surrogatepass``. One level of 256 shard
directories, as git does for loose objects: two levels (``ab/cd/``) would create up to 65,536
directories — a 4 KiB block each on ext4 and one more listing each in every rescan — while 256
directories still hold under 4,000 entries each at a million entries, which hashed directory
indexes (ext4, xfs, btrfs, tmpfs) handle without trouble. Shard directories are created on
demand with mode ``0o700``, entry files with ``0o600``: a cache often holds session data.

Entry file format (version 1), all integers big-endian::

    offset  size  field
    0       4     magic  b"MGC\\x01"  (the last byte is the format version)
    4       4     crc32  zlib.crc32 of every byte from offset 8 to the end of the file
    8       8     expires_at  IEEE-754 float64, wall-clock epoch seconds; +inf = no expiry
    16      4     key_len  K  (uint32)
    20      8     value_len  V  (uint64)
    28      K     the full key, UTF-8 (surrogatepass)
    28+K    V     the value

The file is exactly ``28 + K + V`` bytes. A file that is shorter or longer, has another magic,
a checksum mismatch, a NaN expiry, or holds a key whose digest is not its name is *corrupt*:
reading it is a miss, the file is removed and the drop is counted as ``"corrupt"`` — never an
exception to the caller. (A key that differs from the requested one but has the same digest
would be a SHA-256 collision: that is a miss and the other key's file is left alone.)

Writes
------
A write goes to ``<root>/<h[0:2]>/.tmp-<h>-<pid>-<8 random hex>`` (created exclusively), is
flushed, and is renamed over the entry with ``os.replace``, which is atomic on POSIX: a reader
sees the old entry or the new one, never a mix, and a process killed mid-write leaves only a
dot-file that is never read as an entry. ``fsync`` is off by default because a cache does not
need durability: after a power loss a renamed file may be empty or hold stale blocks, and the
length fields and checksum turn that into a counted ``"corrupt"`` miss, not a wrong value.
Pass ``fsync=True`` to make entries survive power loss (one ``fsync`` of the file per write;
the directory is not synced, so the newest entry may still be lost).

All file I/O runs in worker threads (``anyio.to_thread.run_sync``), one thread hop per
operation (a sweep or rescan: one per batch), never one per system call.

Index and caps
--------------
Each driver keeps an in-process index: digest -> (file size, expiry, inode, mtime), in LRU
order, plus a heap of (expiry, digest) so a sweep pops only what is due. It is built by a full
scan when the driver opens — explicitly with :meth:`FileCache.open`, or lazily by the first
operation that needs it — and entries found then are ordered by file modification time, so
LRU order starts as write order. Only the event loop changes the index (a rescan's worker
thread reads it): worker threads report what they found or did, and the loop applies it after
checking that the entry concerned is still the one the thread saw. Within a process, writes
(``set``, ``delete``, evictions) are serialised by a lock; reads and sweeps run concurrently
with them.

*max_entries* bounds the number of entry files and *max_bytes* the sum of their sizes (whole
files: header + key + value, what the directory really holds; filesystem block rounding, the
directories and in-flight temporary files are not counted). A write that would exceed a cap
first removes expired entries (``"expired"``), then least-recently-used ones (``"capacity"``),
in O(log n) per removed entry, before it writes. A single entry larger than *max_bytes* is
refused with ``ValueError``, as :class:`~megatrio.MemoryCache` does.

Several processes
-----------------
Processes (the workers of one app) may share a root. Correctness does not depend on the
index: every ``get`` reads the file and checks its header, so no process ever returns a
partial, corrupt, expired or superseded value, and a file vanishing between index and read
is just a miss. Files are removed as expired or corrupt only after being renamed aside and
judged again (see :func:`_retire`), so a fresh entry another process wrote in between is put
back, not lost. LRU order is per process (reads do not touch files). Caps are enforced by
each process against its own view: a process counts the entries it wrote or has seen, so N
processes may together hold up to N times a cap until a rescan (every *rescan_every_sweeps*
sweeps, and on open) adopts the others' files and trims back to the caps. Capacity eviction
does not re-check a victim on disk: an entry another process just rewrote may be evicted,
which loses a cache entry and nothing else.

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
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import math
import os
import re
import secrets
import stat
import struct
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Final, NamedTuple, final

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from ..._policy._checks import check_count, check_seconds
from ..._policy._ttl_lru import DROP_CAPACITY, DROP_EXPIRED
from ...nursery._child import current_child
from ...nursery._timer import run_every

DROP_CORRUPT: Final = "corrupt"
DROP_STALE_TEMP: Final = "stale_temp"

_MAGIC: Final = b"MGC\x01"
_HEADER: Final = struct.Struct(">4sIdIQ")  # magic, crc32, expires_at, key_len, value_len
_CHECKED: Final = struct.Struct(">dIQ")  # the header fields the checksum covers
_HEADER_SIZE: Final = _HEADER.size  # 28
_CRC_FROM: Final = 8

_TEMP_PREFIX: Final = ".tmp-"
_GRAVE_PREFIX: Final = ".del-"
_HASH_NAME = re.compile(r"[0-9a-f]{64}")
_SHARD_NAME = re.compile(r"[0-9a-f]{2}")
_TEMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)

# Due entries removed per worker-thread call in a sweep (a few milliseconds of I/O), and
# shard directories listed per call in a rescan: the unit of work between checkpoints.
_SWEEP_BATCH: Final = 256
_SCAN_BATCH: Final = 8
# Forgetting vanished entries after a rescan walks the index in the event loop; this many
# entries between checkpoints keeps each step well under a millisecond.
_FORGET_BATCH: Final = 4096

# Outcomes of reading or retiring one entry file.
_HIT: Final = "hit"
_MISSING: Final = "missing"
_LIVE: Final = "live"


def _key_digest(key: str) -> str:
    """The file name of *key*'s entry: SHA-256 hex of its UTF-8 (surrogatepass) bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


# -- the entry format (sans-IO) -------------------------------------------------------------


class _Corrupt(Exception):
    """An entry file that does not decode; never leaves this module."""


def _encode_header(key: bytes, value: bytes, expires_at: float) -> bytes:
    """The 28-byte header of an entry holding *key* and *value* (see the module docstring)."""
    checked = _CHECKED.pack(expires_at, len(key), len(value))
    crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(checked)))
    return _HEADER.pack(_MAGIC, crc, expires_at, len(key), len(value))


def _decode_entry(data: bytes) -> tuple[bytes, bytes, float]:
    """``(key, value, expires_at)`` from a whole entry file. Raises ``_Corrupt``."""
    if len(data) < _HEADER_SIZE:
        raise _Corrupt("truncated header")
    magic, crc, expires_at, key_len, value_len = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise _Corrupt("bad magic")
    if _HEADER_SIZE + key_len + value_len != len(data):
        raise _Corrupt("length mismatch")
    view = memoryview(data)
    if zlib.crc32(view[_CRC_FROM:]) != crc:
        raise _Corrupt("checksum mismatch")
    if math.isnan(expires_at):
        raise _Corrupt("NaN expiry")
    key_end = _HEADER_SIZE + key_len
    return bytes(view[_HEADER_SIZE:key_end]), bytes(view[key_end:]), expires_at


@final
class _Entry:
    """What the index knows about one entry file.

    Every field but ``mark`` is set at creation and never changed (worker threads read them);
    an entry is replaced, not updated. ``pending`` marks the entry of a write in flight, whose
    file may not exist yet; ``stamp`` orders creations; ``mark`` is the latest rescan that saw
    the file.
    """

    __slots__ = ("expires_at", "ino", "mark", "mtime_ns", "pending", "size", "stamp")

    def __init__(
        self,
        size: int,
        expires_at: float,
        ino: int,
        mtime_ns: int,
        stamp: int,
        *,
        pending: bool = False,
    ) -> None:
        self.size = size
        self.expires_at = expires_at
        # With size, the file's identity: every write makes a new inode (os.replace), so a
        # file whose inode, size and mtime match is the file this entry describes. (A freed
        # inode number reused for a same-size file within one mtime tick would fool it; the
        # cost is a stale expiry or size in the index until the next read of that key, since
        # reads and removals always judge the file itself.)
        self.ino = ino
        self.mtime_ns = mtime_ns
        self.stamp = stamp
        self.pending = pending
        self.mark = 0

    def describes(self, ino: int, size: int, mtime_ns: int) -> bool:
        return self.ino == ino and self.size == size and self.mtime_ns == mtime_ns


# -- worker-thread side: plain blocking file operations --------------------------------------


class _Found(NamedTuple):
    """A live entry file as seen on disk: its size, expiry and identity."""

    size: int
    expires_at: float
    ino: int
    mtime_ns: int


class _WriteResult(NamedTuple):
    removed: list[bool]
    stat: os.stat_result | None
    error: OSError | None


class _ReadResult(NamedTuple):
    outcome: str  # _HIT, _MISSING, _LIVE, DROP_EXPIRED or DROP_CORRUPT
    value: bytes | None
    found: _Found | None


class _ScanResult(NamedTuple):
    unchanged: list[str]
    found: list[tuple[str, _Entry | None, _Found]]
    dropped: list[tuple[str, _Entry | None, str]]
    vanished: list[tuple[str, _Entry | None]]
    stale_temps: int


def _entry_path(root: str, digest: str) -> str:
    return os.path.join(root, digest[:2], digest)


def _aside_path(root: str, digest: str, prefix: str) -> str:
    name = f"{prefix}{digest}-{os.getpid()}-{secrets.token_hex(4)}"
    return os.path.join(root, digest[:2], name)


def _found(st: os.stat_result, expires_at: float) -> _Found:
    return _Found(st.st_size, expires_at, st.st_ino, st.st_mtime_ns)


def _read_file(path: str) -> tuple[bytes, os.stat_result] | None:
    """The bytes and stat of the file at *path*, or None if there is none (or a directory)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None
    return data, st


def _judge(data: bytes, st: os.stat_result, digest: str, now: float) -> str | _Found:
    """DROP_CORRUPT, DROP_EXPIRED, or the live entry's :class:`_Found`."""
    try:
        if len(data) != st.st_size:
            raise _Corrupt("modified while read")
        key, _, expires_at = _decode_entry(data)
    except _Corrupt:
        return DROP_CORRUPT
    if hashlib.sha256(key).hexdigest() != digest:
        return DROP_CORRUPT  # a valid entry under the wrong name: nothing will look it up
    if expires_at <= now:
        return DROP_EXPIRED
    return _found(st, expires_at)


def _unlink(path: str) -> bool:
    """Remove *path*; whether this call removed it. Failures other than absence count as no."""
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def _retire(root: str, digest: str, now: float) -> tuple[str, _Found | None]:
    """Remove the entry file of *digest* if it is dead (corrupt or expired at *now*).

    The file is first renamed aside (atomic), then judged again from the renamed copy, so what
    is removed is exactly what was judged: if another process replaced the entry after our
    caller last read it, the fresh file is what got renamed, it is judged live and is linked
    back — unless an even newer one already took its place, which then wins. Returns
    ``(DROP_CORRUPT | DROP_EXPIRED, None)`` when a file was removed, ``(_MISSING, None)`` when
    there was none, ``(_LIVE, found)`` when a live file was put back (``found`` is None if a
    newer one had replaced it).
    """
    path = _entry_path(root, digest)
    aside = _aside_path(root, digest, _GRAVE_PREFIX)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return _MISSING, None
    try:
        got = _read_file(aside)
        verdict: str | _Found = DROP_CORRUPT if got is None else _judge(*got, digest, now)
    except OSError:
        verdict = DROP_CORRUPT  # unreadable: as good as corrupt
    if isinstance(verdict, str):
        _unlink(aside)
        return verdict, None
    restored: _Found | None = verdict
    try:
        os.link(aside, path)
    except FileExistsError:
        restored = None  # a newer entry is in place; ours is superseded
    except OSError:
        # No hard links on this filesystem: rename back. This can overwrite an entry written
        # in the last microseconds, which loses a cache entry, never shows a wrong one.
        with contextlib.suppress(OSError):
            os.rename(aside, path)
    _unlink(aside)
    return _LIVE, restored


def _write_entry(
    root: str,
    digest: str,
    key: bytes,
    value: bytes,
    expires_at: float,
    victims: list[str],
    fsync: bool,
) -> _WriteResult:
    """Remove *victims*, then write the entry atomically. Never raises ``OSError``."""
    removed = [_unlink(_entry_path(root, v)) for v in victims]
    shard = os.path.join(root, digest[:2])
    tmp = _aside_path(root, digest, _TEMP_PREFIX)
    try:
        try:
            fd = os.open(tmp, _TEMP_FLAGS, 0o600)
        except FileNotFoundError:
            os.makedirs(shard, mode=0o700, exist_ok=True)
            fd = os.open(tmp, _TEMP_FLAGS, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_encode_header(key, value, expires_at))
                f.write(key)
                f.write(value)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
                # After the last write: the replace below keeps inode, size and mtime.
                st = os.fstat(f.fileno())
            os.replace(tmp, _entry_path(root, digest))
        except BaseException:
            _unlink(tmp)
            raise
    except OSError as exc:
        return _WriteResult(removed, None, exc)
    return _WriteResult(removed, st, None)


def _read_entry(root: str, digest: str, key: bytes, now: float) -> _ReadResult:
    """Read *key*'s entry; retire it if it is dead. Raises OSError only for I/O failures."""
    got = _read_file(_entry_path(root, digest))
    if got is None:
        return _ReadResult(_MISSING, None, None)
    data, st = got
    try:
        if len(data) != st.st_size:
            raise _Corrupt("modified while read")
        stored_key, value, expires_at = _decode_entry(data)
    except _Corrupt:
        stored_key, value, expires_at = b"", b"", math.nan
    if stored_key == key and expires_at > now:
        return _ReadResult(_HIT, value, _found(st, expires_at))
    if stored_key and stored_key != key and hashlib.sha256(stored_key).hexdigest() == digest:
        return _ReadResult(_MISSING, None, None)  # a SHA-256 collision: the other key's entry
    outcome, found = _retire(root, digest, now)
    return _ReadResult(outcome, None, found)


def _delete_entry(root: str, digest: str) -> bool:
    try:
        os.unlink(_entry_path(root, digest))
    except FileNotFoundError:
        return False
    return True


def _prepare_root(root: str) -> None:
    with contextlib.suppress(FileExistsError):  # not a directory: reported just below
        os.makedirs(root, mode=0o700, exist_ok=True)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"file cache root {root!r} exists and is not a directory")


def _list_shards(root: str) -> list[str]:
    try:
        it = os.scandir(root)
    except FileNotFoundError:
        return []  # the root was removed (a way to clear the cache): every entry vanished
    with it:
        return sorted(
            d.name for d in it if _SHARD_NAME.fullmatch(d.name) and d.is_dir(follow_symlinks=False)
        )


def _scan_shards(
    root: str,
    shards: list[str],
    lookup: Callable[[str], _Entry | None],
    now: float,
    stale_before: float,
) -> _ScanResult:
    """Compare the entry files of *shards* with the index (*lookup*) and retire dead ones.

    Files whose identity (inode, size, mtime) matches their index entry are not opened. The
    index is only read here, through ``dict.get`` (atomic under the GIL), and every
    :class:`_Entry` field this reads is set once at creation; the event loop re-checks each
    captured entry's identity before acting on it.
    """
    result = _ScanResult([], [], [], [], 0)
    stale = 0
    for shard in shards:
        try:
            it = os.scandir(os.path.join(root, shard))
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for de in it:
                name = de.name
                if name.startswith((_TEMP_PREFIX, _GRAVE_PREFIX)):
                    # ctime too: a rename aside keeps the entry's old mtime but sets ctime.
                    with contextlib.suppress(OSError):
                        st = de.stat(follow_symlinks=False)
                        if max(st.st_mtime, st.st_ctime) < stale_before and _unlink(de.path):
                            stale += 1
                    continue
                if not (_HASH_NAME.fullmatch(name) and name.startswith(shard)):
                    continue  # not ours: never touched
                known = lookup(name)
                try:
                    st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    result.vanished.append((name, known))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if known is not None and known.describes(st.st_ino, st.st_size, st.st_mtime_ns):
                    result.unchanged.append(name)
                    continue
                got = _read_file(de.path)
                verdict: str | _Found | None = None if got is None else _judge(*got, name, now)
                if isinstance(verdict, str):
                    verdict, restored = _retire(root, name, now)
                    if verdict == _LIVE:
                        # Replaced meanwhile by a live entry: adopt it, or (superseded again)
                        # keep the index entry for the next read or scan to correct.
                        if restored is None:
                            result.unchanged.append(name)
                        else:
                            result.found.append((name, known, restored))
                        continue
                if verdict is None or verdict == _MISSING:
                    result.vanished.append((name, known))
                elif isinstance(verdict, str):
                    result.dropped.append((name, known, verdict))
                else:
                    result.found.append((name, known, verdict))
    return result._replace(stale_temps=stale)


# -- the driver -----------------------------------------------------------------------------


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
        # digest -> entry, least recently used first. Invariant: _bytes is the sum of sizes.
        self._index: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        # (expires_at, digest) for entries with a finite expiry. Lazy deletion: an item is
        # valid only while the digest's entry has that expiry; the heap is rebuilt when stale
        # items outnumber live entries, so it stays O(entries).
        self._heap: list[tuple[float, str]] = []
        # Digests whose files a write is removing right now: a concurrent read must not
        # adopt them back into the index.
        self._evicting: set[str] = set()
        self._stamp = 0
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
        return self._bytes

    def path_for(self, key: str) -> str:
        """Where *key*'s entry file lives (whether or not it exists). Not a checkpoint."""
        return _entry_path(self.root, _key_digest(key))

    def __repr__(self) -> str:
        return f"<FileCache {self.root!r} {len(self._index)} entries, {self._bytes} bytes>"

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
                await anyio.to_thread.run_sync(_prepare_root, self.root)
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
            _read_entry, self.root, digest, key_bytes, self._clock()
        )
        if result.outcome in (DROP_EXPIRED, DROP_CORRUPT):
            self._drops[result.outcome] += 1
        current = self._index.get(digest)
        # Act on the index only if nothing changed it while we read: otherwise what we read
        # may be older than what it now knows.
        if current is before and not (current is not None and current.pending):
            if result.found is not None:
                found = result.found
                if current is not None and current.describes(found.ino, found.size, found.mtime_ns):
                    self._index.move_to_end(digest)
                elif current is not None or digest not in self._evicting:
                    self._adopt(digest, current, result.found)
            elif current is not None and result.outcome != _LIVE:
                self._forget(digest, current)
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
        size = _HEADER_SIZE + len(key_bytes) + len(value)
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
                old = self._index.get(digest)
                if old is not None:
                    self._forget(digest, old)
                victims = self._make_room(1, size, now)
                pending = _Entry(size, expires_at, -1, -1, self._next_stamp(), pending=True)
                self._insert(digest, pending)
                try:
                    result = await self._run_write(
                        victims,
                        _write_entry,
                        self.root,
                        digest,
                        key_bytes,
                        value,
                        expires_at,
                        [v for v, _, _ in victims],
                        self.fsync,
                    )
                finally:
                    self._forget(digest, pending)
                if result.stat is not None:
                    st = result.stat
                    final = _Entry(size, expires_at, st.st_ino, st.st_mtime_ns, self._next_stamp())
                    self._insert(digest, final)
                elif old is not None:
                    self._insert(digest, old)  # the old file was not replaced
        if result.error is not None:
            raise result.error

    async def delete(self, key: str) -> bool:
        """Remove *key*'s entry; whether a file was there (expired or not)."""
        await self._ensure_open()
        digest = _key_digest(key)
        async with self._lock():
            before = self._index.get(digest)
            existed = await anyio.to_thread.run_sync(_delete_entry, self.root, digest)
            if before is not None:
                self._forget(digest, before)
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
        before it is removed (see the module docstring), so a fresh entry another process
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
            batch = self._pop_due(now, _SWEEP_BATCH)
            if not batch:
                break
            try:
                outcomes = await anyio.to_thread.run_sync(
                    _retire_many, self.root, [d for d, _ in batch], now
                )
            except BaseException:
                # Cancelled before the thread started (or a bug in it): put the batch back
                # so the index keeps tracking these entries.
                for digest, entry in batch:
                    heapq.heappush(self._heap, (entry.expires_at, digest))
                raise
            for (digest, entry), (outcome, found) in zip(batch, outcomes, strict=True):
                if outcome in (DROP_EXPIRED, DROP_CORRUPT):
                    self._drops[outcome] += 1
                    removed += 1
                if self._index.get(digest) is entry:
                    if found is not None:
                        self._adopt(digest, entry, found)
                    elif outcome != _LIVE:
                        self._forget(digest, entry)
        if self._over(0, 0):
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
        started_at = self._stamp
        shards = await anyio.to_thread.run_sync(_list_shards, self.root)
        found: list[tuple[str, _Entry | None, _Found]] = []
        for i in range(0, len(shards), _SCAN_BATCH):
            if ctx is not None and ctx.stopping:
                return  # incomplete: forgetting unseen entries would be wrong
            now = self._clock()
            result = await anyio.to_thread.run_sync(
                _scan_shards,
                self.root,
                shards[i : i + _SCAN_BATCH],
                self._index.get,
                now,
                now - self.stale_temp_seconds,
            )
            if result.stale_temps:
                self._drops[DROP_STALE_TEMP] += result.stale_temps
            for digest in result.unchanged:
                entry = self._index.get(digest)
                if entry is not None:
                    entry.mark = max(entry.mark, scan_id)
            for digest, known, reason in result.dropped:
                self._drops[reason] += 1
                if known is not None and self._index.get(digest) is known:
                    self._forget(digest, known)
            for digest, known in result.vanished:
                if known is not None and self._index.get(digest) is known:
                    self._forget(digest, known)
            found.extend(result.found)
        # Oldest write first, so that the LRU order of adopted entries is their write order.
        found.sort(key=lambda item: item[2].mtime_ns)
        for digest, known, info in found:
            current = self._index.get(digest)
            # A pending entry belongs to a write in flight: its writer replaces it.
            in_flight = current is not None and current.pending
            if current is known and not in_flight and digest not in self._evicting:
                self._adopt(digest, known, info)
        # Forget entries whose files neither this walk nor a later, concurrent one saw, and
        # only those created before it began (their files existed before their shard was
        # listed).
        digests = list(self._index)
        for i in range(0, len(digests), _FORGET_BATCH):
            for digest in digests[i : i + _FORGET_BATCH]:
                entry = self._index.get(digest)
                if (
                    entry is not None
                    and not entry.pending
                    and entry.mark < scan_id
                    and entry.stamp <= started_at
                ):
                    self._forget(digest, entry)
            await anyio.lowlevel.checkpoint()
        if self._over(0, 0):
            await self._trim()

    async def _trim(self) -> None:
        """Evict (expired first, then LRU) until within the caps."""
        async with self._lock():
            with anyio.CancelScope(shield=True):
                victims = self._make_room(0, 0, self._clock())
                if victims:
                    await self._run_write(
                        victims, _unlink_victims, self.root, [v for v, _, _ in victims]
                    )

    # -- index bookkeeping (event loop only) ------------------------------------------------

    def _lock(self) -> anyio.Lock:
        # Created on first use, inside the event loop that will use it.
        if self._write_lock is None:
            self._write_lock = anyio.Lock()
        return self._write_lock

    def _next_stamp(self) -> int:
        self._stamp += 1
        return self._stamp

    async def _run_write(
        self,
        victims: list[tuple[str, _Entry, str]],
        fn: Callable[..., _WriteResult],
        *args: object,
    ) -> _WriteResult:
        """Run *fn* (which removes *victims* first) in a thread; count the removed victims."""
        digests = [v for v, _, _ in victims]
        self._evicting.update(digests)
        try:
            result = await anyio.to_thread.run_sync(fn, *args)
        finally:
            self._evicting.difference_update(digests)
        for (_, _, reason), removed in zip(victims, result.removed, strict=True):
            if removed:
                self._drops[reason] += 1
        return result

    def _over(self, adding: int, size: int) -> bool:
        return len(self._index) + adding > self.max_entries or (
            self.max_bytes is not None and self._bytes + size > self.max_bytes
        )

    def _make_room(self, adding: int, size: int, now: float) -> list[tuple[str, _Entry, str]]:
        """Forget entries until *adding* entries of *size* bytes fit; the victims, with why.

        Expired entries go first (popped off the heap), then the least recently used. Called
        under the write lock, so no other write's pending entry exists.
        """
        victims: list[tuple[str, _Entry, str]] = []
        while self._over(adding, size) and self._index:
            due = self._pop_due(now, 1)
            if due:
                digest, entry = due[0]
                reason = DROP_EXPIRED
            else:
                digest, entry = next(iter(self._index.items()))
                reason = DROP_CAPACITY
            self._forget(digest, entry)
            victims.append((digest, entry, reason))
        return victims

    def _pop_due(self, now: float, limit: int) -> list[tuple[str, _Entry]]:
        """Up to *limit* distinct indexed entries with ``expires_at <= now``, off the heap."""
        heap = self._heap
        due: list[tuple[str, _Entry]] = []
        seen: set[str] = set()
        while heap and len(due) < limit and heap[0][0] <= now:
            expires_at, digest = heapq.heappop(heap)
            entry = self._index.get(digest)
            if (
                entry is not None
                and entry.expires_at == expires_at
                and not entry.pending
                and digest not in seen
            ):
                seen.add(digest)
                due.append((digest, entry))
        return due

    def _insert(self, digest: str, entry: _Entry) -> None:
        assert digest not in self._index
        self._index[digest] = entry
        self._bytes += entry.size
        if not math.isinf(entry.expires_at):
            heapq.heappush(self._heap, (entry.expires_at, digest))
            if len(self._heap) > 2 * len(self._index) + 64:
                self._heap = [
                    (e.expires_at, d)
                    for d, e in self._index.items()
                    if not math.isinf(e.expires_at)
                ]
                heapq.heapify(self._heap)

    def _forget(self, digest: str, entry: _Entry) -> None:
        if self._index.get(digest) is entry:
            del self._index[digest]
            self._bytes -= entry.size

    def _adopt(self, digest: str, current: _Entry | None, found: _Found) -> None:
        """Index a live file seen on disk, replacing *current*, as most recently used."""
        if current is not None:
            self._forget(digest, current)
        entry = _Entry(found.size, found.expires_at, found.ino, found.mtime_ns, self._next_stamp())
        self._insert(digest, entry)


def _retire_many(root: str, digests: list[str], now: float) -> list[tuple[str, _Found | None]]:
    return [_retire(root, digest, now) for digest in digests]


def _unlink_victims(root: str, victims: list[str]) -> _WriteResult:
    return _WriteResult([_unlink(_entry_path(root, v)) for v in victims], None, None)
