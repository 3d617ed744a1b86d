"""The retry queue's journal: the files in its directory, the line format, and the protocol
by which processes append, claim and mark lines. Blocking functions, run in worker threads
(except :func:`mark`, see :meth:`~megatrio.RetryQueue.drain`).

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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import secrets
import threading
from collections.abc import Iterator
from typing import IO, Any, Final

QUEUE_FILE: Final = "queue.jsonl"
CLAIM_PREFIX: Final = "claimed-"
CLAIM_SUFFIX: Final = ".jsonl"

PREFIX_PENDING: Final = b'{"d":0,'
PREFIX_HANDLED: Final = b'{"d":1,'
_MARK_OFFSET: Final = 5
_MARK_HANDLED: Final = b"1"
# The header every line starts with, exactly as encode_line writes it: mark, id, time, attempts.
HEADER: Final = re.compile(
    rb'\{"d":([01]),"id":"[0-9a-f]{32}","ts":(-?[0-9][0-9.eE+-]*),"n":[0-9]+,"p":'
)
READ_BUFFER_BYTES: Final = 1 << 20

# Claimed files held by a drain running in this process, by absolute path. Shared by every
# RetryQueue of the process (two queues may point at one directory), guarded by a thread lock
# because drains of different event loops may run in different threads.
_active_claims: set[str] = set()
_active_lock = threading.Lock()

Decoded = tuple[str, Any, float, int]
"""An entry's ``(id, payload, enqueued_at, attempts)``."""


def encode_line(
    entry_id: str,
    ts: float,
    attempts: int,
    payload: Any,
    *,
    max_entry_bytes: int,
    limit: int | None = None,
) -> bytes:
    """One pending line. Raises TypeError (not JSON) or ValueError (longer than *limit*,
    by default *max_entry_bytes*)."""
    try:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"retry queue payload is not JSON-serialisable: {exc}") from None
    # ensure_ascii (the default) escapes every control character: one entry, one line.
    line = b'%s"id":"%s","ts":%s,"n":%d,"p":%s}\n' % (
        PREFIX_PENDING,
        entry_id.encode(),
        json.dumps(ts).encode(),
        attempts,
        body.encode(),
    )
    if len(line) > (max_entry_bytes if limit is None else limit):
        raise ValueError(
            f"retry queue entry of {len(line)} bytes exceeds max_entry_bytes={max_entry_bytes}"
        )
    return line


def decode_line(line: bytes) -> Decoded | None:
    """The entry a whole line holds, or None when it is not a well-formed entry."""
    if not (line.startswith(PREFIX_PENDING) or line.startswith(PREFIX_HANDLED)):
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
    return entry_id, obj["p"], float(ts), attempts


def iter_lines(handle: IO[bytes], max_line: int) -> Iterator[tuple[int, bytes | None]]:
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
            line = handle.readline(READ_BUFFER_BYTES)
            offset += len(line)
        yield start, None


def append_lines(directory: str, path: str, data: bytes) -> None:
    """Append whole lines *data* to the queue file *path* under its lock."""
    os.makedirs(directory, exist_ok=True)
    with locked_queue_file(path, create=True) as fd:
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


def claim_files(directory: str, path: str, claim_timeout_seconds: float, now: float) -> list[str]:
    """Rename orphaned claimed files and the queue file *path* to fresh claims of ours.

    The claims are registered as held by a drain of this process until
    :func:`release_claims`.
    """
    claims: list[str] = []
    try:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return claims
        for name in names:
            if not (name.startswith(CLAIM_PREFIX) and name.endswith(CLAIM_SUFFIX)):
                continue
            claimed = os.path.join(directory, name)
            if _is_orphan(claimed, name, now, claim_timeout_seconds):
                new = _claim_path(directory, claims)
                try:
                    os.rename(claimed, new)
                except FileNotFoundError:
                    # Another drainer took it first.
                    _release(new, claims)
        new = _claim_path(directory, claims)
        with locked_queue_file(path, create=False) as fd:
            if fd is None:
                _release(new, claims)
            else:
                os.rename(path, new)
    except BaseException:
        # Whatever was renamed stays on disk as a claim of ours that no drain holds: the
        # next drain takes it over.
        release_claims(claims)
        raise
    return claims


def release_claims(claims: list[str]) -> None:
    """Claims no drain of this process holds any more (the next drain may take them over)."""
    with _active_lock:
        _active_claims.difference_update(claims)


def _claim_path(directory: str, claims: list[str]) -> str:
    path = os.path.join(
        directory, f"{CLAIM_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{CLAIM_SUFFIX}"
    )
    # Registered before the rename, so a drain of this process listing the directory
    # concurrently never mistakes the new file for an orphan.
    with _active_lock:
        _active_claims.add(path)
    claims.append(path)
    return path


def _is_orphan(path: str, name: str, now: float, claim_timeout_seconds: float) -> bool:
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
    return now - mtime > claim_timeout_seconds


@contextlib.contextmanager
def locked_queue_file(path: str, *, create: bool) -> Iterator[int | None]:
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


def mark(fd: int, offset: int) -> None:
    """Mark the line at *offset* of the claimed file *fd* handled: one byte, in place."""
    if os.pwrite(fd, _MARK_HANDLED, offset + _MARK_OFFSET) != 1:
        raise OSError(errno.EIO, "short write marking a retry queue entry")


def unlink_all(paths: list[str]) -> None:
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


def count_pending(directory: str, max_line: int) -> int:
    """Well-formed, unhandled lines in the queue file and every claimed file of *directory*."""
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
            open(path, "rb", buffering=READ_BUFFER_BYTES) as handle,
        ):
            for _, line in iter_lines(handle, max_line):
                if line is not None and line.startswith(PREFIX_PENDING) and decode_line(line):
                    count += 1
    return count
