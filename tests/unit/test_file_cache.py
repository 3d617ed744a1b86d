"""FileCache on a real directory: format, TTL, caps, LRU, corruption, atomic writes, several
processes sharing one root, cancellation, and the cleaner as a supervised child.

Expiry uses an injected wall clock (:class:`FakeClock`); the cleaner's schedule uses trio's
autojump ``MockClock``, so no test sleeps in real time. Tests with no timer at all run on the
real clock: the autojump clock counts a worker thread's file work as idle and spins the run
loop meanwhile, which made those tests CPU-bound for tens of seconds on a slow machine.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from megatrio import ChildSpec, mega_runtime
from megatrio.services.stores import _file_cache, _file_ops
from megatrio.services.stores._cache import Cache
from megatrio.services.stores._file_cache import FileCache

from ..helpers import task_names

pytestmark = pytest.mark.anyio

HEADER = struct.Struct(">4sIdIQ")  # as documented in the module docstring


class FakeClock:
    """The wall clock the driver reads expiry times from; moved only by the test."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def full(key: str, ns: str = "app") -> str:
    return f"mega:cache:{ns}:{key}"


def entry_size(key: str, value: bytes) -> int:
    return HEADER.size + len(key.encode()) + len(value)


def entry_files(root: Path) -> dict[str, int]:
    """Entry file name -> size, for every entry file under *root*."""
    if not root.exists():
        return {}
    return {
        p.name: p.stat().st_size
        for shard in root.iterdir()
        if shard.is_dir()
        for p in shard.iterdir()
        if not p.name.startswith(".")
    }


def temp_files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return [p.name for p in root.glob("*/.*")]


def rewrite(path: str | Path, change: Callable[[bytes], bytes]) -> None:
    """Replace the file's bytes in place (what outside damage looks like)."""
    path = Path(path)
    path.write_bytes(change(path.read_bytes()))


def exists(path: str | Path) -> bool:
    return os.path.lexists(path)


def parse(path: Path) -> tuple[bytes, float, bytes, bytes]:
    """(magic, expires_at, key, value) by the documented format, checking length and CRC."""
    data = path.read_bytes()
    magic, crc, expires_at, key_len, value_len = HEADER.unpack_from(data)
    assert len(data) == HEADER.size + key_len + value_len
    assert zlib.crc32(data[8:]) == crc
    key = data[HEADER.size : HEADER.size + key_len]
    return magic, expires_at, key, data[HEADER.size + key_len :]


# -- the Cache facade and the file format ---------------------------------------------------


async def test_round_trip_through_the_facade_with_namespaced_keys(
    root: Path, clock: FakeClock
) -> None:
    driver = FileCache(root, clock=clock)
    shop, blog = Cache(driver, namespace="shop"), Cache(driver, namespace="blog")
    await shop.set("user:1", {"name": "ana", "tags": [1, 2]})
    await blog.set("user:1", "other app")
    assert await shop.get("user:1") == {"name": "ana", "tags": [1, 2]}
    assert await blog.get("user:1") == "other app"
    assert await driver.get("mega:cache:shop:user:1") == b'{"name":"ana","tags":[1,2]}'
    assert await shop.has("user:1")
    assert await shop.delete("user:1")
    assert not await shop.delete("user:1")
    assert await shop.get("user:1", "dflt") == "dflt"
    assert await blog.get("user:1") == "other app"
    assert len(driver) == 1


async def test_entry_file_has_the_documented_layout_and_format(
    root: Path, clock: FakeClock
) -> None:
    driver = FileCache(root, clock=clock)
    await Cache(driver, namespace="shop").set("k", [1], ttl_seconds=30)
    digest = hashlib.sha256(b"mega:cache:shop:k").hexdigest()
    path = root / digest[:2] / digest
    assert driver.path_for("mega:cache:shop:k") == str(path)
    assert entry_files(root) == {digest: path.stat().st_size}
    assert path.stat().st_mode & 0o777 == 0o600
    magic, expires_at, key, value = parse(path)
    assert (magic, expires_at, key, value) == (
        b"MGC\x01",
        clock.now + 30,
        b"mega:cache:shop:k",
        b"[1]",
    )
    assert driver.total_bytes == path.stat().st_size == entry_size("mega:cache:shop:k", b"[1]")
    await driver.set(full("forever"), b"x", None)
    assert parse(Path(driver.path_for(full("forever"))))[1] == float("inf")


async def test_ttl_expiry_follows_the_injected_clock_exactly(root: Path, clock: FakeClock) -> None:
    driver = FileCache(root, clock=clock)
    c = Cache(driver, namespace="app")
    await c.set("k", 1, ttl_seconds=10)
    clock.advance(9.5)
    assert await c.get("k") == 1
    clock.advance(0.5)  # expires_at <= now: expired
    assert not await c.has("k")
    assert entry_files(root) == {}  # the read removed the file
    assert driver.drops == {"expired": 1}
    assert len(driver) == 0
    assert driver.total_bytes == 0


async def test_entry_cap_evicts_the_least_recently_used(root: Path, clock: FakeClock) -> None:
    driver = FileCache(root, max_entries=3, clock=clock)
    for k in "abc":
        await driver.set(full(k), k.encode(), None)
    assert await driver.get(full("a")) == b"a"  # b is now the least recently used
    await driver.set(full("d"), b"d", None)
    assert [await driver.has(full(k)) for k in "abcd"] == [True, False, True, True]
    assert driver.drops == {"capacity": 1}
    assert len(entry_files(root)) == len(driver) == 3


async def test_byte_cap_counts_whole_files(root: Path, clock: FakeClock) -> None:
    one = entry_size(full("a"), b"x" * 50)
    driver = FileCache(root, max_bytes=2 * one + 10, clock=clock)
    for k in "abc":
        await driver.set(full(k), b"x" * 50, None)
    assert sum(entry_files(root).values()) == driver.total_bytes == 2 * one
    assert not await driver.has(full("a"))
    assert driver.drops == {"capacity": 1}
    with pytest.raises(ValueError, match=r"exceeds max_bytes=.*'mega:cache:app:big'"):
        await driver.set(full("big"), b"x" * (2 * one), None)


async def test_a_full_cache_evicts_expired_entries_before_lru_ones(
    root: Path, clock: FakeClock
) -> None:
    driver = FileCache(root, max_entries=3, clock=clock)
    await driver.set(full("old"), b"1", None)
    await driver.set(full("older"), b"2", None)
    await driver.set(full("short"), b"3", 5)  # most recently used, but it will expire
    clock.advance(6)
    await driver.set(full("new"), b"4", None)
    assert driver.drops == {"expired": 1}
    assert [await driver.has(full(k)) for k in ("old", "older", "new")] == [True, True, True]
    assert len(entry_files(root)) == 3


async def test_concurrent_writes_never_exceed_the_caps(root: Path, clock: FakeClock) -> None:
    driver = FileCache(root, max_entries=3, clock=clock)
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(driver.set, full(f"k{i}"), b"v", None)
    assert len(entry_files(root)) == len(driver) == 3
    assert driver.drops == {"capacity": 17}


@pytest.mark.parametrize("anyio_backend", ["trio"])  # no timers: the real clock
async def test_expiry_heap_stays_proportional_to_the_entries(root: Path, clock: FakeClock) -> None:
    driver = FileCache(root, clock=clock)
    for i in range(300):
        await driver.set(full("k"), str(i).encode(), 10 + i)
    assert len(driver._index.heap) <= 2 * len(driver) + 64


# -- corruption -----------------------------------------------------------------------------


def _truncate(data: bytes) -> bytes:
    return data[:-1]


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def corrupt(data: bytes) -> bytes:
        return data[:offset] + bytes([data[offset] ^ 0x40]) + data[offset + 1 :]

    return corrupt


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "short header": lambda data: data[:10],
    "truncated value": _truncate,
    "trailing bytes": lambda data: data + b"!",
    "bad magic": _flip(0),
    "crc flipped": _flip(5),
    "expiry flipped": _flip(9),
    "length flipped": _flip(19),
    "key flipped": _flip(30),
    "value flipped": _flip(-1),
    "garbage": lambda data: os.urandom(len(data)),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
async def test_a_corrupt_entry_is_a_counted_miss_and_is_removed(
    root: Path, clock: FakeClock, corrupt: Callable[[bytes], bytes]
) -> None:
    driver = FileCache(root, clock=clock)
    await driver.set(full("k"), b"some value", 60)
    path = driver.path_for(full("k"))
    rewrite(path, corrupt)
    assert await driver.get(full("k")) is None
    assert not exists(path)
    assert driver.drops == {"corrupt": 1}
    assert len(driver) == 0
    assert driver.total_bytes == 0


async def test_a_valid_entry_under_the_wrong_name_is_corrupt(root: Path, clock: FakeClock) -> None:
    driver = FileCache(root, clock=clock)
    await driver.set(full("a"), b"A", None)
    misplaced = driver.path_for(full("b"))
    os.makedirs(os.path.dirname(misplaced), exist_ok=True)
    shutil.copyfile(driver.path_for(full("a")), misplaced)
    assert await driver.get(full("b")) is None
    assert not exists(misplaced)
    assert driver.drops == {"corrupt": 1}
    assert await driver.get(full("a")) == b"A"


async def test_rescan_removes_corrupt_and_expired_files(root: Path, clock: FakeClock) -> None:
    writer = FileCache(root, clock=clock)
    await writer.set(full("bad"), b"v", None)
    await writer.set(full("short"), b"v", 5)
    await writer.set(full("good"), b"v", None)
    rewrite(writer.path_for(full("bad")), lambda data: b"MGC\x01 not an entry")
    clock.advance(10)
    reader = FileCache(root, clock=clock)
    await reader.open()
    assert reader.drops == {"corrupt": 1, "expired": 1}
    assert list(entry_files(root)) == [hashlib.sha256(full("good").encode()).hexdigest()]
    assert len(reader) == 1


# -- atomic writes and cancellation ---------------------------------------------------------

CRASHING_WRITER = """
import os, sys, trio
from megatrio.services.stores._file_cache import FileCache

def crash(src, dst):
    os._exit(3)  # the process dies between the write and the rename

os.replace = crash
cache = FileCache(sys.argv[1], clock=lambda: 1_000_000.0)
trio.run(cache.set, "mega:cache:app:k", b"new value", None)
"""


async def test_a_crash_between_write_and_replace_leaves_no_visible_entry(root: Path) -> None:
    driver = FileCache(root, stale_temp_seconds=60, clock=FakeClock())
    await driver.set(full("k"), b"old value", None)
    proc = await trio.run_process(
        [sys.executable, "-c", CRASHING_WRITER, str(root)], check=False, capture_stderr=True
    )
    assert proc.returncode == 3, proc.stderr
    (leftover,) = temp_files(root)
    assert leftover.startswith(".tmp-")
    assert await driver.get(full("k")) == b"old value"
    assert await FileCache(root, clock=FakeClock()).get(full("k")) == b"old value"
    # A fresh temp file is left alone (a live process may be writing it); an old one goes.
    await driver.rescan()
    assert temp_files(root) == [leftover]
    late = FileCache(root, stale_temp_seconds=60, clock=lambda: time.time() + 120)
    await late.rescan()
    assert temp_files(root) == []
    assert late.drops == {"stale_temp": 1}
    assert await late.get(full("k")) == b"old value"


async def test_a_failed_write_keeps_the_old_value_and_leaves_no_temp_file(
    root: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FileCache(root, clock=clock)
    await driver.set(full("k"), b"old", None)

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        await driver.set(full("k"), b"new", None)
    monkeypatch.undo()
    assert temp_files(root) == []
    assert await driver.get(full("k")) == b"old"
    assert len(driver) == 1
    assert driver.total_bytes == entry_size(full("k"), b"old")


async def test_cancelled_mid_write_the_write_completes_whole(
    root: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FileCache(root, clock=clock)
    await driver.set(full("k"), b"old", None)
    in_replace, release = threading.Event(), threading.Event()
    real_replace = os.replace

    def slow_replace(src: str, dst: str) -> None:
        in_replace.set()
        release.wait(10)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", slow_replace)
    completed = False

    async def writer(scope: trio.CancelScope) -> None:
        nonlocal completed
        with scope:
            await driver.set(full("k"), b"new", None)
            completed = True
            await trio.sleep_forever()

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, scope)
        await trio.to_thread.run_sync(in_replace.wait)
        scope.cancel()  # the temp file is written, the rename not yet done
        await trio.testing.wait_all_tasks_blocked()
        assert not completed
        release.set()
    monkeypatch.undo()
    assert completed
    assert scope.cancelled_caught
    assert temp_files(root) == []
    assert await driver.get(full("k")) == b"new"
    assert (len(driver), driver.total_bytes) == (1, entry_size(full("k"), b"new"))


async def test_cancelled_before_the_write_starts_nothing_is_written(
    root: Path, clock: FakeClock
) -> None:
    driver = FileCache(root, clock=clock)
    await driver.open()
    with trio.CancelScope() as scope:
        scope.cancel()
        await driver.set(full("k"), b"v", None)
    assert scope.cancelled_caught
    assert entry_files(root) == {}
    assert temp_files(root) == []
    assert len(driver) == 0
    assert await driver.get(full("k")) is None


async def test_fsync_option_syncs_each_write(
    root: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    driver = FileCache(root, fsync=True, clock=clock)
    await driver.set(full("k"), b"v", None)
    assert len(synced) == 1
    assert await driver.get(full("k")) == b"v"


# -- several drivers (processes) on one directory -------------------------------------------


async def test_two_drivers_on_one_directory_see_each_others_writes(
    root: Path, clock: FakeClock
) -> None:
    a, b = FileCache(root, clock=clock), FileCache(root, clock=clock)
    await a.set(full("k"), b"from a", None)
    assert await b.get(full("k")) == b"from a"  # read from disk, then adopted
    assert len(b) == 1
    await b.set(full("k"), b"from b", 30)
    assert await a.get(full("k")) == b"from b"  # a's index was stale: the file decides
    assert await b.delete(full("k"))
    assert await a.get(full("k")) is None  # vanished: a miss, and a forgets it
    assert len(a) == 0
    assert a.drops == b.drops == {}


async def test_each_driver_enforces_its_own_view_and_rescan_reconciles(
    root: Path, clock: FakeClock
) -> None:
    a = FileCache(root, max_entries=2, clock=clock)
    b = FileCache(root, max_entries=2, clock=clock)
    await a.open()
    await b.open()
    for k in ("a1", "a2"):
        await a.set(full(k), b"a", None)
    for k in ("b1", "b2"):
        await b.set(full(k), b"b", None)
    assert len(entry_files(root)) == 4  # each process is within its own caps
    await b.rescan()  # adopts a's files, then trims back to its caps
    assert len(entry_files(root)) == len(b) == 2
    assert b.drops == {"capacity": 2}
    await a.rescan()
    assert len(a) == 2


async def test_sweep_keeps_a_fresh_entry_another_process_rewrote(
    root: Path, clock: FakeClock
) -> None:
    a = FileCache(root, clock=clock)
    await a.set(full("k"), b"v1", 10)
    b = FileCache(root, clock=clock)
    await b.open()  # b indexes k as expiring at now + 10
    clock.advance(11)
    await a.set(full("k"), b"v2", 100)  # rewritten by "another process"
    assert await b.sweep() == 0  # b's index said expired; the file on disk is fresh
    assert b.drops == {}
    assert await a.get(full("k")) == b"v2"
    assert await b.get(full("k")) == b"v2"


@pytest.mark.parametrize("anyio_backend", ["trio"])  # no timers: the real clock
async def test_reopen_keeps_entries_and_starts_lru_in_write_order(
    root: Path, clock: FakeClock
) -> None:
    first = FileCache(root, max_entries=3, clock=clock)
    for k in "abc":
        await first.set(full(k), k.encode(), None)
    for age, k in enumerate("bca"):  # b written first, a last
        os.utime(first.path_for(full(k)), ns=(10**18 + age * 10**9,) * 2)
    second = FileCache(root, max_entries=3, clock=clock)
    await second.set(full("d"), b"d", None)
    assert [await second.has(full(k)) for k in "abcd"] == [True, False, True, True]


async def test_a_file_removed_behind_the_index_is_a_plain_miss(
    root: Path, clock: FakeClock
) -> None:
    driver = FileCache(root, clock=clock)
    await driver.set(full("k"), b"v", None)
    os.unlink(driver.path_for(full("k")))
    assert await driver.get(full("k")) is None
    assert len(driver) == 0
    assert driver.drops == {}
    await driver.set(full("j"), b"v", None)
    os.unlink(driver.path_for(full("j")))
    await driver.rescan()
    assert len(driver) == 0
    assert driver.total_bytes == 0


@pytest.mark.parametrize("anyio_backend", ["trio"])  # no timers: the real clock
async def test_concurrent_rescans_forget_nothing_that_exists(root: Path, clock: FakeClock) -> None:
    write_entries(root, [f"k{i}" for i in range(300)], math.inf)
    driver = FileCache(root, clock=clock)
    await driver.open()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(driver.rescan)
    assert len(driver) == 300
    assert driver.total_bytes == sum(entry_files(root).values())


async def test_rescan_ignores_files_that_are_not_entries(root: Path, clock: FakeClock) -> None:
    driver = FileCache(root, clock=clock)
    await driver.set(full("k"), b"v", None)
    shard = Path(driver.path_for(full("k"))).parent
    foreign = [root / "README", shard / "notes.txt", root / "zz" / ("0" * 64)]
    (root / "zz").mkdir()
    for path in foreign:
        path.write_text("not mine")
    await driver.rescan()
    assert all(p.read_text() == "not mine" for p in foreign)
    assert len(driver) == 1
    assert driver.drops == {}


# -- cleaning -------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["trio"])  # no timers: the real clock
async def test_sweep_touches_only_the_due_entries(
    root: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FileCache(root, clock=clock)
    for i in range(60):
        await driver.set(full(f"live{i}"), b"v", None if i % 2 else 1000)
    for i in range(3):
        await driver.set(full(f"due{i}"), b"v", 5)
    retired: list[str] = []
    real_retire = _file_ops.retire

    def counting_retire(root: str, digest: str, now: float) -> tuple[str, object]:
        retired.append(digest)
        return real_retire(root, digest, now)

    monkeypatch.setattr(_file_ops, "retire", counting_retire)
    clock.advance(10)
    assert await driver.sweep() == 3
    assert len(retired) == 3
    assert await driver.sweep() == 0
    assert len(retired) == 3
    assert len(entry_files(root)) == len(driver) == 60
    assert driver.drops == {"expired": 3}


async def test_cleaner_runs_as_a_supervised_child_and_stops_promptly(
    root: Path, clock: FakeClock
) -> None:
    # No rescans here: they walk the directory in a worker thread on every other tick.
    driver = FileCache(root, sweep_interval_seconds=10, rescan_every_sweeps=10**6, clock=clock)
    await driver.set(full("short"), b"v", 5)
    await driver.set(full("long"), b"v", 500)
    clock.advance(6)
    async with mega_runtime(grace_seconds=30) as rt:
        await rt.start_child(ChildSpec("file-cache-cleaner", driver.serve_cleaner))
        assert task_names("megatrio/file-cache-cleaner")
        # The sweep's file work runs in a worker thread, and the autojump clock counts a
        # thread wait as idle: virtual time races ahead of it. So the wait for the sweep is
        # bounded in real time, and virtual ticks simply keep coming meanwhile.
        deadline = time.monotonic() + 20
        while driver.drops != {"expired": 1}:
            assert time.monotonic() < deadline, f"not swept: {driver.drops}"
            await trio.sleep(1)
        assert list(entry_files(root)) == [hashlib.sha256(full("long").encode()).hexdigest()]
        stop_began = trio.current_time()
    # Waiting for its next tick, the cleaner returns as soon as it is asked to stop.
    assert trio.current_time() == stop_began
    assert task_names("megatrio/") == []


def write_entries(root: Path, names: list[str], expires_at: float) -> None:
    """Entry files written straight to disk with the driver's writer (fast setup)."""
    for name in names:
        key = full(name).encode()
        digest = hashlib.sha256(key).hexdigest()
        assert _file_ops.write_entry(str(root), digest, key, b"v", expires_at, [], False).stat


async def test_a_stop_request_ends_a_long_sweep_between_batches(
    root: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 2 * _file_cache._SWEEP_BATCH + 50
    write_entries(root, [f"k{i}" for i in range(count)], clock.now + 5)
    driver = FileCache(root, sweep_interval_seconds=10, clock=clock)
    await driver.open()  # indexed while live: the sweep, not the scan, will remove them
    clock.advance(10)
    in_batch, release = threading.Event(), threading.Event()
    batches = 0
    real_retire_many = _file_cache.retire_many

    def blocking_retire_many(root: str, digests: list[str], now: float) -> object:
        nonlocal batches
        batches += 1
        in_batch.set()
        release.wait(10)
        return real_retire_many(root, digests, now)

    monkeypatch.setattr(_file_cache, "retire_many", blocking_retire_many)
    async with mega_runtime() as rt:
        # No shutdown deadline: only the sweep's own check of the stop request can end it.
        await rt.start_child(ChildSpec("cleaner", driver.serve_cleaner, shutdown_seconds=math.inf))
        await trio.to_thread.run_sync(in_batch.wait)  # the first tick's first batch
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rt.stop_child, "cleaner")
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert task_names("megatrio/cleaner") == []
    assert batches == 1
    assert len(entry_files(root)) == count - _file_cache._SWEEP_BATCH
    assert driver.drops == {"expired": _file_cache._SWEEP_BATCH}


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_entries": 0}, ValueError, "max_entries"),
        ({"max_entries": "10"}, TypeError, "max_entries"),
        ({"max_bytes": 0}, ValueError, "max_bytes"),
        ({"sweep_interval_seconds": 0}, ValueError, "sweep_interval_seconds"),
        ({"sweep_interval_seconds": float("nan")}, ValueError, "sweep_interval_seconds"),
        ({"rescan_every_sweeps": 0}, ValueError, "rescan_every_sweeps"),
        ({"stale_temp_seconds": -1}, ValueError, "stale_temp_seconds"),
        ({"fsync": "yes"}, TypeError, "fsync"),
        ({"clock": 3.0}, TypeError, "clock"),
    ],
)
def test_bad_arguments_are_rejected_by_name(
    root: Path, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        FileCache(root, **kwargs)  # type: ignore[arg-type]


def test_an_empty_root_is_rejected() -> None:
    with pytest.raises(ValueError, match="root"):
        FileCache("")


async def test_a_root_that_is_a_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    path.write_text("a file")
    with pytest.raises(ValueError, match=rf"root '{path}' exists and is not a directory"):
        FileCache(path)
    path.unlink()
    driver = FileCache(path)
    path.write_text("a file again")  # turned into a file after configuration
    with pytest.raises(NotADirectoryError, match=str(path)):
        await driver.get(full("k"))


async def test_ttl_must_be_positive(root: Path) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        await FileCache(root).set(full("k"), b"v", 0)
