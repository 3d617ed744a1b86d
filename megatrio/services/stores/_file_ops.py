"""The file cache's worker-thread side: plain blocking file operations, one call per batch.

Every function here runs in a worker thread (``anyio.to_thread.run_sync``), never on the
event loop, and reports what it found or did; only the event loop changes the index (see
:mod:`._file_index`). The one thing a thread reads of the index is an :class:`Entry`, whose
fields (but ``mark``) never change after creation.

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

Several processes
-----------------
Processes (the workers of one app) may share a root. Correctness does not depend on the
index: every read opens the file and checks its header (:func:`read_entry`), so no process
ever returns a partial, corrupt, expired or superseded value, and a file vanishing between
index and read is just a miss. Files are removed as expired or corrupt only after being
renamed aside and judged again (:func:`retire`), so a fresh entry another process wrote in
between is put back, not lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import stat
from collections.abc import Callable
from typing import Final, NamedTuple, final

from ..._policy._ttl_lru import DROP_EXPIRED
from ._file_format import (
    GRAVE_PREFIX,
    HASH_NAME,
    SHARD_NAME,
    TEMP_PREFIX,
    Corrupt,
    aside_path,
    decode_entry,
    encode_header,
    entry_path,
)

DROP_CORRUPT: Final = "corrupt"
DROP_STALE_TEMP: Final = "stale_temp"

_TEMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)

# Outcomes of reading or retiring one entry file.
HIT: Final = "hit"
MISSING: Final = "missing"
LIVE: Final = "live"


@final
class Entry:
    """What the index knows about one entry file (the index itself is :mod:`._file_index`).

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


class Found(NamedTuple):
    """A live entry file as seen on disk: its size, expiry and identity."""

    size: int
    expires_at: float
    ino: int
    mtime_ns: int


class WriteResult(NamedTuple):
    removed: list[bool]
    stat: os.stat_result | None
    error: OSError | None


class ReadResult(NamedTuple):
    outcome: str  # HIT, MISSING, LIVE, DROP_EXPIRED or DROP_CORRUPT
    value: bytes | None
    found: Found | None


class ScanResult(NamedTuple):
    unchanged: list[str]
    found: list[tuple[str, Entry | None, Found]]
    dropped: list[tuple[str, Entry | None, str]]
    vanished: list[tuple[str, Entry | None]]
    stale_temps: int


def _found(st: os.stat_result, expires_at: float) -> Found:
    return Found(st.st_size, expires_at, st.st_ino, st.st_mtime_ns)


def _read_file(path: str) -> tuple[bytes, os.stat_result] | None:
    """The bytes and stat of the file at *path*, or None if there is none (or a directory)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None
    return data, st


def _judge(data: bytes, st: os.stat_result, digest: str, now: float) -> str | Found:
    """DROP_CORRUPT, DROP_EXPIRED, or the live entry's :class:`Found`."""
    try:
        if len(data) != st.st_size:
            raise Corrupt("modified while read")
        key, _, expires_at = decode_entry(data)
    except Corrupt:
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


def retire(root: str, digest: str, now: float) -> tuple[str, Found | None]:
    """Remove the entry file of *digest* if it is dead (corrupt or expired at *now*).

    The file is first renamed aside (atomic), then judged again from the renamed copy, so what
    is removed is exactly what was judged: if another process replaced the entry after our
    caller last read it, the fresh file is what got renamed, it is judged live and is linked
    back — unless an even newer one already took its place, which then wins. Returns
    ``(DROP_CORRUPT | DROP_EXPIRED, None)`` when a file was removed, ``(MISSING, None)`` when
    there was none, ``(LIVE, found)`` when a live file was put back (``found`` is None if a
    newer one had replaced it).
    """
    path = entry_path(root, digest)
    aside = aside_path(root, digest, GRAVE_PREFIX)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return MISSING, None
    try:
        got = _read_file(aside)
        verdict: str | Found = DROP_CORRUPT if got is None else _judge(*got, digest, now)
    except OSError:
        verdict = DROP_CORRUPT  # unreadable: as good as corrupt
    if isinstance(verdict, str):
        _unlink(aside)
        return verdict, None
    restored: Found | None = verdict
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
    return LIVE, restored


def write_entry(
    root: str,
    digest: str,
    key: bytes,
    value: bytes,
    expires_at: float,
    victims: list[str],
    fsync: bool,
) -> WriteResult:
    """Remove *victims*, then write the entry atomically. Never raises ``OSError``."""
    removed = [_unlink(entry_path(root, v)) for v in victims]
    shard = os.path.join(root, digest[:2])
    tmp = aside_path(root, digest, TEMP_PREFIX)
    try:
        try:
            fd = os.open(tmp, _TEMP_FLAGS, 0o600)
        except FileNotFoundError:
            os.makedirs(shard, mode=0o700, exist_ok=True)
            fd = os.open(tmp, _TEMP_FLAGS, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(encode_header(key, value, expires_at))
                f.write(key)
                f.write(value)
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
                # After the last write: the replace below keeps inode, size and mtime.
                st = os.fstat(f.fileno())
            os.replace(tmp, entry_path(root, digest))
        except BaseException:
            _unlink(tmp)
            raise
    except OSError as exc:
        return WriteResult(removed, None, exc)
    return WriteResult(removed, st, None)


def read_entry(root: str, digest: str, key: bytes, now: float) -> ReadResult:
    """Read *key*'s entry; retire it if it is dead. Raises OSError only for I/O failures."""
    got = _read_file(entry_path(root, digest))
    if got is None:
        return ReadResult(MISSING, None, None)
    data, st = got
    try:
        if len(data) != st.st_size:
            raise Corrupt("modified while read")
        stored_key, value, expires_at = decode_entry(data)
    except Corrupt:
        stored_key, value, expires_at = b"", b"", math.nan
    if stored_key == key and expires_at > now:
        return ReadResult(HIT, value, _found(st, expires_at))
    if stored_key and stored_key != key and hashlib.sha256(stored_key).hexdigest() == digest:
        return ReadResult(MISSING, None, None)  # a SHA-256 collision: the other key's entry
    outcome, found = retire(root, digest, now)
    return ReadResult(outcome, None, found)


def delete_entry(root: str, digest: str) -> bool:
    try:
        os.unlink(entry_path(root, digest))
    except FileNotFoundError:
        return False
    return True


def prepare_root(root: str) -> None:
    with contextlib.suppress(FileExistsError):  # not a directory: reported just below
        os.makedirs(root, mode=0o700, exist_ok=True)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"file cache root {root!r} exists and is not a directory")


def list_shards(root: str) -> list[str]:
    try:
        it = os.scandir(root)
    except FileNotFoundError:
        return []  # the root was removed (a way to clear the cache): every entry vanished
    with it:
        return sorted(
            d.name for d in it if SHARD_NAME.fullmatch(d.name) and d.is_dir(follow_symlinks=False)
        )


def scan_shards(
    root: str,
    shards: list[str],
    lookup: Callable[[str], Entry | None],
    now: float,
    stale_before: float,
) -> ScanResult:
    """Compare the entry files of *shards* with the index (*lookup*) and retire dead ones.

    Files whose identity (inode, size, mtime) matches their index entry are not opened. The
    index is only read here, through ``dict.get`` (atomic under the GIL), and every
    :class:`Entry` field this reads is set once at creation; the event loop re-checks each
    captured entry's identity before acting on it.
    """
    result = ScanResult([], [], [], [], 0)
    stale = 0
    for shard in shards:
        try:
            it = os.scandir(os.path.join(root, shard))
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for de in it:
                name = de.name
                if name.startswith((TEMP_PREFIX, GRAVE_PREFIX)):
                    # ctime too: a rename aside keeps the entry's old mtime but sets ctime.
                    with contextlib.suppress(OSError):
                        st = de.stat(follow_symlinks=False)
                        if max(st.st_mtime, st.st_ctime) < stale_before and _unlink(de.path):
                            stale += 1
                    continue
                if not (HASH_NAME.fullmatch(name) and name.startswith(shard)):
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
                verdict: str | Found | None = None if got is None else _judge(*got, name, now)
                if isinstance(verdict, str):
                    verdict, restored = retire(root, name, now)
                    if verdict == LIVE:
                        # Replaced meanwhile by a live entry: adopt it, or (superseded again)
                        # keep the index entry for the next read or scan to correct.
                        if restored is None:
                            result.unchanged.append(name)
                        else:
                            result.found.append((name, known, restored))
                        continue
                if verdict is None or verdict == MISSING:
                    result.vanished.append((name, known))
                elif isinstance(verdict, str):
                    result.dropped.append((name, known, verdict))
                else:
                    result.found.append((name, known, verdict))
    return result._replace(stale_temps=stale)


def retire_many(root: str, digests: list[str], now: float) -> list[tuple[str, Found | None]]:
    return [retire(root, digest, now) for digest in digests]


def unlink_victims(root: str, victims: list[str]) -> WriteResult:
    return WriteResult([_unlink(entry_path(root, v)) for v in victims], None, None)
