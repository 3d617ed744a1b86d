"""FileCache on a real directory, driven step by step against a model of what it may return.

Each example gets a fresh directory and a trio event loop in a blocking portal's thread; the
driver's wall clock is the machine's ``now``, moved only by the ``advance`` rule. Eviction
order is not modelled (LRU order after a reopen comes from file mtimes); instead every key
remembers the *capacity epoch* it was written in — the number of capacity drops so far — and
a live key written since the last capacity drop must be returned exactly.

Invariants: entry count and bytes within the caps, in the index and on disk; the index
matches the directory; no temporary file is left; ``get`` returns only the last value set
for a key and never an expired one; a key that missed stays missing until it is set again;
after a sweep no expired entry file remains.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import tempfile
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from megatrio.services.stores._file_cache import FileCache

T = TypeVar("T")

HEADER = struct.Struct(">4sIdIQ")  # as documented in the module docstring
NAMES = [f"k{i}" for i in range(6)]
keys = st.sampled_from(NAMES)
values = st.binary(max_size=24)
ttls = st.none() | st.sampled_from([0.5, 1.0, 2.5, 5.0])


def full(name: str) -> str:
    return f"mega:cache:prop:{name}"


def digest(name: str) -> str:
    return hashlib.sha256(full(name).encode()).hexdigest()


@dataclass
class Known:
    """What the model knows about a key: the last value set, and whether it is reliable."""

    value: bytes
    expires_at: float
    epoch: int
    corrupted: bool = False


def read_expiry(path: Path) -> float | None:
    """The expiry of a well-formed entry file (per the documented format), else None."""
    data = path.read_bytes()
    if len(data) < HEADER.size:
        return None
    magic, crc, expires_at, key_len, value_len = HEADER.unpack_from(data)
    if magic != b"MGC\x01" or len(data) != HEADER.size + key_len + value_len:
        return None
    if zlib.crc32(data[8:]) != crc:
        return None
    return float(expires_at)


class FileCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="megatrio-file-cache-"))
        self.portal_cm = start_blocking_portal("trio")
        self.portal: BlockingPortal = self.portal_cm.__enter__()
        self.now = 1_000_000.0
        self.model: dict[str, Known] = {}
        self.epoch = 0  # capacity drops seen so far, over every driver instance
        self.capacity_seen = 0  # capacity drops of the current driver instance

    def teardown(self) -> None:
        self.portal_cm.__exit__(None, None, None)
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(max_entries=st.integers(1, 5), max_bytes=st.integers(70, 300))
    def setup(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.cache = self.new_driver()

    def new_driver(self) -> FileCache:
        return FileCache(
            self.dir, max_entries=self.max_entries, max_bytes=self.max_bytes, clock=self.clock
        )

    def clock(self) -> float:
        return self.now

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        result = self.portal.call(fn, *args)
        capacity = self.cache.drops.get("capacity", 0)
        if capacity != self.capacity_seen:
            self.capacity_seen = capacity
            self.epoch += 1  # something may have been evicted: earlier keys are uncertain
        return result

    def disk(self) -> dict[str, Path]:
        return {p.name: p for shard in self.dir.iterdir() for p in shard.iterdir() if p.is_file()}

    # -- rules ------------------------------------------------------------------------------

    @rule(name=keys, value=values, ttl=ttls)
    def set(self, name: str, value: bytes, ttl: float | None) -> None:
        self.call(self.cache.set, full(name), value, ttl)
        expires_at = float("inf") if ttl is None else self.now + ttl
        self.model[name] = Known(value, expires_at, self.epoch)  # a set never evicts itself

    @rule(name=keys)
    def get(self, name: str) -> None:
        got = self.call(self.cache.get, full(name))
        self.check_read(name, got)

    @rule(name=keys)
    def has(self, name: str) -> None:
        known = self.model.get(name)
        present = self.call(self.cache.has, full(name))
        self.check_read(name, known.value if present and known is not None else None)
        if present:
            assert known is not None

    def check_read(self, name: str, got: bytes | None) -> None:
        known = self.model.get(name)
        if got is not None:
            assert known is not None, f"{name}: a value that was never set or already missed"
            assert not known.corrupted, f"{name}: a corrupt entry was returned"
            assert got == known.value, f"{name}: not the last value set"
            assert known.expires_at > self.now, f"{name}: an expired value was returned"
            return
        if known is not None:
            live = known.expires_at > self.now and not known.corrupted
            assert not (live and known.epoch == self.epoch), f"{name}: a spurious miss"
            del self.model[name]  # it is gone now, and must stay gone until set again
        assert digest(name) not in self.disk(), f"{name}: missed but its file remains"

    @rule(name=keys)
    def delete(self, name: str) -> None:
        known = self.model.pop(name, None)
        existed = self.call(self.cache.delete, full(name))
        if known is None:
            assert not existed, f"{name}: deleted a file the model says is gone"
        elif known.expires_at > self.now and known.epoch == self.epoch and not known.corrupted:
            assert existed, f"{name}: a live entry was not there to delete"
        assert digest(name) not in self.disk()

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def sweep(self) -> None:
        self.call(self.cache.sweep)
        for path in self.disk().values():
            expires_at = read_expiry(path)
            assert expires_at is None or expires_at > self.now, f"{path.name} survived a sweep"

    @rule()
    def rescan(self) -> None:
        self.call(self.cache.rescan)

    @rule(explicit_open=st.booleans())
    def reopen(self, explicit_open: bool) -> None:
        note("a new driver instance on the same directory")
        self.cache = self.new_driver()
        self.capacity_seen = 0
        if explicit_open:
            self.call(self.cache.open)

    @precondition(lambda self: any(not k.corrupted for k in self.model.values()))
    @rule(data=st.data())
    def corrupt(self, data: st.DataObject) -> None:
        # Once only: a second flip of the same byte would repair the file.
        name = data.draw(
            st.sampled_from(sorted(n for n, k in self.model.items() if not k.corrupted))
        )
        path = self.disk().get(digest(name))
        if path is None:
            return
        raw = bytearray(path.read_bytes())
        offset = data.draw(st.integers(0, len(raw) - 1))
        raw[offset] ^= 0x01  # same size: the index's byte count stays right
        path.write_bytes(bytes(raw))
        self.model[name].corrupted = True

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def within_the_caps_and_matching_the_directory(self) -> None:
        if not hasattr(self, "cache"):
            return
        disk = self.disk()
        entries = {name: p.stat().st_size for name, p in disk.items() if not name.startswith(".")}
        temps = [name for name in disk if name.startswith(".")]
        assert temps == [], f"temporary files left: {temps}"
        assert len(entries) <= self.max_entries
        assert sum(entries.values()) <= self.max_bytes
        if self.cache._opened:
            assert len(self.cache) <= self.max_entries
            assert self.cache.total_bytes <= self.max_bytes
            index = {d: e.size for d, e in self.cache._index.entries.items()}
            assert index == entries, "the index does not match the directory"


TestFileCacheMachine = FileCacheMachine.TestCase
TestFileCacheMachine.settings = settings(max_examples=80, stateful_step_count=35)
