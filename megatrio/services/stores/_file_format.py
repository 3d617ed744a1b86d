"""The file cache's on-disk format: where an entry lives and what its file holds. Sans-IO.

Layout
------
``<root>/<h[0:2]>/<h>``, where ``h`` is the SHA-256 hex digest (lower case) of the full key
(``mega:cache:<app>:<key>``) encoded as UTF-8 with ``surrogatepass``. One level of 256 shard
directories, as git does for loose objects: two levels (``ab/cd/``) would create up to 65,536
directories — a 4 KiB block each on ext4 and one more listing each in every rescan — while 256
directories still hold under 4,000 entries each at a million entries, which hashed directory
indexes (ext4, xfs, btrfs, tmpfs) handle without trouble. Shard directories are created on
demand with mode ``0o700``, entry files with ``0o600``: a cache often holds session data.

Next to the entries, a shard holds only dot-files: ``.tmp-<h>-<pid>-<8 hex>`` (a write in
progress) and ``.del-<h>-<pid>-<8 hex>`` (an entry renamed aside to be judged before removal).
Neither is ever read as an entry.

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
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import struct
import zlib
from typing import Final

MAGIC: Final = b"MGC\x01"
HEADER: Final = struct.Struct(">4sIdIQ")  # magic, crc32, expires_at, key_len, value_len
_CHECKED: Final = struct.Struct(">dIQ")  # the header fields the checksum covers
HEADER_SIZE: Final = HEADER.size  # 28
_CRC_FROM: Final = 8

TEMP_PREFIX: Final = ".tmp-"
GRAVE_PREFIX: Final = ".del-"
HASH_NAME: Final = re.compile(r"[0-9a-f]{64}")
SHARD_NAME: Final = re.compile(r"[0-9a-f]{2}")


class Corrupt(Exception):
    """An entry file that does not decode; never leaves the file cache's modules."""


def key_digest(key: str) -> str:
    """The file name of *key*'s entry: SHA-256 hex of its UTF-8 (surrogatepass) bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def entry_path(root: str, digest: str) -> str:
    return os.path.join(root, digest[:2], digest)


def aside_path(root: str, digest: str, prefix: str) -> str:
    """A fresh dot-file name next to *digest*'s entry (*prefix*: temp or grave)."""
    name = f"{prefix}{digest}-{os.getpid()}-{secrets.token_hex(4)}"
    return os.path.join(root, digest[:2], name)


def encode_header(key: bytes, value: bytes, expires_at: float) -> bytes:
    """The 28-byte header of an entry holding *key* and *value* (see the module docstring)."""
    checked = _CHECKED.pack(expires_at, len(key), len(value))
    crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(checked)))
    return HEADER.pack(MAGIC, crc, expires_at, len(key), len(value))


def decode_entry(data: bytes) -> tuple[bytes, bytes, float]:
    """``(key, value, expires_at)`` from a whole entry file. Raises :class:`Corrupt`."""
    if len(data) < HEADER_SIZE:
        raise Corrupt("truncated header")
    magic, crc, expires_at, key_len, value_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise Corrupt("bad magic")
    if HEADER_SIZE + key_len + value_len != len(data):
        raise Corrupt("length mismatch")
    view = memoryview(data)
    if zlib.crc32(view[_CRC_FROM:]) != crc:
        raise Corrupt("checksum mismatch")
    if math.isnan(expires_at):
        raise Corrupt("NaN expiry")
    key_end = HEADER_SIZE + key_len
    return bytes(view[HEADER_SIZE:key_end]), bytes(view[key_end:]), expires_at
