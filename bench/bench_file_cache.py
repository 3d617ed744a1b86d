"""File cache benchmark: sweep cost against live and expired entries, and get/set throughput
against MemoryCache, both drivers measured in the same run.

Run ``python bench/bench_file_cache.py`` (``--quick`` for smaller sizes; ``--dir PATH`` to put
the cache directory on a particular filesystem, default: the system temporary directory).
Everything runs in one process under one ``trio.run`` on the real clock.

Sweep rows: one cache directory grows to each row's *live* population (entries without
expiry, written straight to disk with the driver's own writer and adopted by a rescan, so
setting up 100k entries does not take minutes); then, per repetition, *expired* entries are
added the same way with an expiry an hour ahead, the driver's wall clock is moved two hours
on, and ``sweep()`` is timed. Best of the repetitions. The same rows also time a
``rescan()`` with nothing changed, which is O(total) by design, for contrast.

Throughput rows: sequential calls from one task on the driver API (bytes in, bytes out,
100-byte values), best of the repetitions; the file cache's root is a fresh empty directory.
The cyclic GC is collected and disabled around each timing, identically for both drivers.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version

import trio
from _common import gc_paused

from megatrio.services.stores._cache import MemoryCache
from megatrio.services.stores._file_cache import FileCache
from megatrio.services.stores._file_ops import write_entry

VALUE = b"v" * 100
now_s = time.perf_counter


class WallClock:
    """The driver's wall clock: real time plus an offset the benchmark moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class Config:
    sweep_rows: tuple[tuple[int, int], ...]  # (live, expired), in increasing live order
    reps: int
    ops: int
    concurrency: int


FULL = Config(
    sweep_rows=(
        (9_000, 1_000),
        (49_000, 1_000),
        (50_000, 1_000),
        (50_000, 10_000),
        (50_000, 50_000),
        (99_000, 1_000),
    ),
    reps=3,
    ops=5_000,
    concurrency=8,
)
QUICK = Config(
    sweep_rows=(
        (900, 100),
        (4_900, 100),
        (5_000, 100),
        (5_000, 1_000),
        (5_000, 5_000),
        (9_900, 100),
    ),
    reps=3,
    ops=1_000,
    concurrency=8,
)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def populate(root: str, prefix: str, count: int, expires_at: float) -> None:
    """Write *count* entry files straight to disk (setup only: no index, no thread hops)."""
    for i in range(count):
        key = f"mega:cache:bench:{prefix}{i}".encode()
        result = write_entry(
            root, hashlib.sha256(key).hexdigest(), key, VALUE, expires_at, [], False
        )
        assert result.error is None, result.error


def filesystem_of(path: str) -> str:
    """The filesystem type of *path* (longest mount-point prefix in /proc/mounts)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                _, point, fstype, *_ = line.split()
                if path.startswith(point) and len(point) > len(best):
                    best, kind = point, fstype
    except OSError:
        pass
    return f"{kind} (mounted at {best or '?'})"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """1/5/15-minute load averages: other work on the machine shows up in the timings."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# -- sweep cost ------------------------------------------------------------------------------


@dataclass
class SweepRow:
    live: int
    expired: int
    sweep_s: list[float]
    rescan_s: list[float]


async def bench_sweeps(base: str, cfg: Config) -> tuple[list[SweepRow], float]:
    """The sweep rows, and the index memory per entry at the largest population."""
    root = os.path.join(base, "sweep")
    clock = WallClock()
    big = max(live + expired for live, expired in cfg.sweep_rows)
    cache = FileCache(root, max_entries=2 * big, max_bytes=None, clock=clock)
    await cache.open()
    live_now = 0
    rows: list[SweepRow] = []
    per_entry: float | None = None
    for live, expired in cfg.sweep_rows:
        progress(f"sweep: {live:,} live + {expired:,} expired")
        await trio.to_thread.run_sync(populate, root, f"live-{live_now}-", live - live_now, 1e300)
        live_now = live
        await cache.rescan()
        row = SweepRow(live, expired, [], [])
        for rep in range(cfg.reps):
            await trio.to_thread.run_sync(
                populate, root, f"exp-{live}-{rep}-", expired, clock() + 3600.0
            )
            await cache.rescan()
            assert len(cache) == live + expired, (len(cache), live, expired)
            clock.offset += 7200.0
            with gc_paused():
                t0 = now_s()
                removed = await cache.sweep()
                row.sweep_s.append(now_s() - t0)
            assert removed == expired, (removed, expired)
            with gc_paused():
                t0 = now_s()
                await cache.rescan()
                row.rescan_s.append(now_s() - t0)
            assert len(cache) == live
        rows.append(row)
        if per_entry is None:
            per_entry = await index_memory(root, len(cache), clock)
    await trio.to_thread.run_sync(shutil.rmtree, root)
    assert per_entry is not None
    return rows, per_entry


async def index_memory(root: str, entries: int, clock: WallClock) -> float:
    """Traced bytes per entry held by a fresh driver after opening *root* (*entries* files).

    Measured on the first (smallest) population: tracing every allocation is slow, and the
    index costs the same per entry at any size.
    """
    progress(f"index memory ({entries:,} entries)")
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fresh = FileCache(root, max_entries=2 * entries, max_bytes=None, clock=clock)
    await fresh.open()
    assert len(fresh) == entries
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / entries
    tracemalloc.stop()
    return per_entry


# -- throughput ------------------------------------------------------------------------------


Driver = FileCache | MemoryCache


async def timed_ops(
    make: Callable[[], Awaitable[Driver]],
    prepare: Callable[[Driver], Awaitable[None]],
    op: Callable[[Driver, int], Awaitable[object]],
    n: int,
    concurrency: int = 1,
) -> float:
    """Ops per second of *op* over *n* calls (split over *concurrency* tasks)."""
    driver = await make()
    await prepare(driver)

    async def worker(start: int, stop: int) -> None:
        for i in range(start, stop):
            await op(driver, i)

    with gc_paused():
        t0 = now_s()
        async with trio.open_nursery() as nursery:
            step = n // concurrency
            for w in range(concurrency):
                nursery.start_soon(worker, w * step, (w + 1) * step)
        elapsed = now_s() - t0
    return (n // concurrency) * concurrency / elapsed


async def bench_throughput(base: str, cfg: Config) -> list[tuple[str, float, float]]:
    counter = 0

    async def make_file() -> Driver:
        nonlocal counter
        counter += 1
        root = os.path.join(base, f"ops-{counter}")
        cache = FileCache(root, max_entries=4 * cfg.ops, max_bytes=None)
        await cache.open()
        return cache

    async def make_memory() -> Driver:
        return MemoryCache(max_entries=4 * cfg.ops)

    async def nothing(driver: Driver) -> None:
        pass

    async def fill(driver: Driver) -> None:
        for i in range(cfg.ops):
            await driver.set(f"mega:cache:bench:k{i}", VALUE, None)

    async def set_new(driver: Driver, i: int) -> None:
        await driver.set(f"mega:cache:bench:k{i}", VALUE, 3600.0)

    async def get(driver: Driver, i: int) -> None:
        assert await driver.get(f"mega:cache:bench:k{i}") is not None

    async def get_miss(driver: Driver, i: int) -> None:
        assert await driver.get(f"mega:cache:bench:missing{i}") is None

    cases: list[
        tuple[str, Callable[[Driver], Awaitable[None]], Callable[..., Awaitable[object]], int]
    ] = [
        ("set, new key", nothing, set_new, 1),
        ("set, overwrite", fill, set_new, 1),
        ("get, hit", fill, get, 1),
        ("get, miss", nothing, get_miss, 1),
        (f"get, hit, {cfg.concurrency} tasks", fill, get, cfg.concurrency),
    ]
    rows: list[tuple[str, float, float]] = []
    for name, prepare, op, conc in cases:
        progress(f"throughput: {name}")
        file_best = memory_best = 0.0
        for _ in range(cfg.reps):  # interleaved, best of the repetitions
            file_best = max(file_best, await timed_ops(make_file, prepare, op, cfg.ops, conc))
            memory_best = max(memory_best, await timed_ops(make_memory, prepare, op, cfg.ops, conc))
        rows.append((name, file_best, memory_best))
    return rows


# -- report ----------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], align: str) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        out = []
        for cell, width, a in zip(cells, widths, align, strict=True):
            out.append(cell.rjust(width) if a == "r" else cell.ljust(width))
        return "| " + " | ".join(out) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":" if a == "r" else "-" * (w + 2))
            for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


async def main(cfg: Config, mode: str, base: str) -> None:
    started = now_s()
    print(
        f"megatrio file cache benchmark ({mode}) - Python {platform.python_version()}, "
        f"trio {version('trio')}, anyio {version('anyio')}, megatrio {version('megatrio')}"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}; cache directory on {filesystem_of(base)}"
        f"; load average at start {load_average()}"
    )
    sweep_rows, per_entry = await bench_sweeps(base, cfg)
    ops_rows = await bench_throughput(base, cfg)

    print(f"\nsweep cost (best of {cfg.reps}; every row removes exactly its expired entries)\n")
    body = []
    for i, r in enumerate(sweep_rows):
        best = min(r.sweep_s)
        body.append(
            [
                f"s{i + 1}",
                f"{r.live:,}",
                f"{r.expired:,}",
                f"{r.live + r.expired:,}",
                ms(best),
                f"{best / r.expired * 1e6:,.1f} us",
                ms(min(r.rescan_s)),
            ]
        )
    print(
        table(
            ["#", "live", "expired", "total", "sweep()", "per expired", "rescan(), no change"],
            body,
            "lrrrrrr",
        )
    )
    print(
        f"\nindex memory: {per_entry:,.0f} B per entry (traced, fresh driver opening row s1's dir)"
    )

    print(f"\nthroughput ({cfg.ops:,} calls, best of {cfg.reps}, 100-byte values)\n")
    body = [
        [f"t{i + 1}", name, f"{f:,.0f}", f"{m:,.0f}", f"{m / f:,.1f}x"]
        for i, (name, f, m) in enumerate(ops_rows)
    ]
    print(
        table(
            ["#", "operation", "FileCache ops/s", "MemoryCache ops/s", "memory/file"], body, "llrrr"
        )
    )
    print("\nraw sweep timings (ms):")
    for r in sweep_rows:
        reps = ", ".join(f"{s * 1e3:.1f}" for s in r.sweep_s)
        rescans = ", ".join(f"{s * 1e3:.1f}" for s in r.rescan_s)
        print(f"  live {r.live:,} expired {r.expired:,}: sweep {reps}; rescan {rescans}")
    print(f"\nload average at end {load_average()}; total benchmark time {now_s() - started:.1f} s")


def entry_point() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes divided by ten")
    parser.add_argument("--dir", default=None, help="where to create the cache directories")
    args = parser.parse_args()
    cfg, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    base = os.path.realpath(tempfile.mkdtemp(prefix="megatrio-bench-file-cache-", dir=args.dir))
    try:
        trio.run(main, cfg, mode, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    entry_point()
