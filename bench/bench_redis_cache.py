"""Redis cache benchmark: ``Cache(RedisCache(client))`` against bare coredis, same run.

Run ``python bench/bench_redis_cache.py`` (``--quick`` for a shorter run, ``--profile`` to
add a cProfile of the facade rows). The script starts a private ``redis-server`` on a free
loopback port (no persistence) and stops it by pid at the end. Everything runs in one
process under one ``trio.run`` on the real clock.

Both sides use the one client :func:`megatrio.open_redis` opened, so the same
settings and connections; the same full keys (``mega:cache:bench:k<i>``, 1,000 of them) and
the same value bytes (the JSON the facade writes for a small object). SET carries a 60 s TTL
on both sides (``PX 60000``). Each row runs at 1 and at 64 concurrent tasks splitting the same
number of operations. The sides are interleaved, each repetition after a ``gc.collect()`` with
the cyclic GC off for both alike, after one warm-up of each; the best (highest) ops/s of the
repetitions is reported. ``MemoryCache`` through the same facade is measured for reference.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import trio
from _common import gc_paused

from megatrio.services.stores._cache import Cache, MemoryCache
from megatrio.services.stores._redis import RedisClient, open_redis
from megatrio.services.stores._redis_cache import RedisCache

NAMESPACE = "bench"
KEYS = 1_000
TTL_SECONDS = 3600
VALUE = {"id": 12345, "name": "user-12345", "tags": ["a", "b", "c"], "active": True}
RAW_VALUE = json.dumps(VALUE, separators=(",", ":"), allow_nan=False).encode()
TARGET = 0.9

Op = Callable[[int], Awaitable[object]]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- a private redis-server -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_pid(port: int) -> int | None:
    """The pid of the Redis answering on *port* (``INFO server``), or None if none answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    line = reply.split(b"process_id:", 1)[1].split(b"\r\n", 1)[0]
    return int(line)


@contextmanager
def private_redis() -> Iterator[tuple[str, str]]:
    """A redis-server of our own on a free port: yields (url, version); stopped by pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    server_version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[2]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        proc = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--dir", directory,
                "--save", "",
                "--appendonly", "no",
                "--logfile", os.path.join(directory, "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while (served_by := _server_pid(port)) is None:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"redis-server did not start on port {port}")
                time.sleep(0.02)
            if served_by != proc.pid:  # someone else's server took the port first
                raise SystemExit(f"port {port} is served by pid {served_by}, not ours")
            yield f"redis://127.0.0.1:{port}/0", server_version
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()


# -- measurement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    ops_per_second: float
    cpu_us_per_op: float
    """Process CPU time (this process only, so not Redis') per operation."""


async def run_ops(op: Op, total: int, concurrency: int) -> Sample:
    """Run ``op(i)`` for ``total`` values of i split over *concurrency* tasks."""
    per_task = total // concurrency

    async def worker(first: int) -> None:
        for i in range(first, first + per_task):
            await op(i % KEYS)

    with gc_paused():
        cpu = time.process_time()
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for task in range(concurrency):
                nursery.start_soon(worker, task * per_task)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    done = per_task * concurrency
    return Sample(done / elapsed, cpu / done * 1e6)


@dataclass
class Row:
    name: str
    concurrency: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def best(self, side: str) -> float:
        return max(sample.ops_per_second for sample in self.samples[side])

    def cpu(self, side: str) -> float:
        return min(sample.cpu_us_per_op for sample in self.samples[side])

    def paired_ratio(self) -> float:
        """Median over repetitions of facade/bare ops/s, each pair measured back to back."""
        ratios = sorted(
            f.ops_per_second / b.ops_per_second
            for f, b in zip(self.samples["facade"], self.samples["bare"], strict=True)
        )
        middle = len(ratios) // 2
        if len(ratios) % 2:
            return ratios[middle]
        return (ratios[middle - 1] + ratios[middle]) / 2


@dataclass(frozen=True)
class Config:
    repetitions: int
    ops_serial: int
    ops_concurrent: int


def side_ops(client: RedisClient) -> dict[str, dict[str, Op]]:
    """The operations of each side, by kind, on the same keys and the same bytes."""
    facade = Cache(RedisCache(client), namespace=NAMESPACE)
    memory = Cache(MemoryCache(max_entries=KEYS * 2), namespace=NAMESPACE)
    keys = [f"k{i}" for i in range(KEYS)]
    full_keys = [facade.full_key(key) for key in keys]
    px = TTL_SECONDS * 1000

    async def facade_set(i: int) -> None:
        await facade.set(keys[i], VALUE, ttl_seconds=TTL_SECONDS)

    async def facade_get(i: int) -> None:
        if await facade.get(keys[i]) is None:
            raise RuntimeError(f"cache miss for {keys[i]!r}: the GET rows must measure hits")

    async def bare_set(i: int) -> None:
        await client.set(full_keys[i], RAW_VALUE, px=px)

    async def bare_get(i: int) -> None:
        if await client.get(full_keys[i]) is None:
            raise RuntimeError(f"cache miss for {full_keys[i]!r}: the GET rows must measure hits")

    async def memory_set(i: int) -> None:
        await memory.set(keys[i], VALUE, ttl_seconds=TTL_SECONDS)

    async def memory_get(i: int) -> None:
        if await memory.get(keys[i]) is None:
            raise RuntimeError(f"cache miss for {keys[i]!r}: the GET rows must measure hits")

    return {
        "SET": {"facade": facade_set, "bare": bare_set, "memory": memory_set},
        "GET": {"facade": facade_get, "bare": bare_get, "memory": memory_get},
    }


async def measure(cfg: Config, client: RedisClient) -> list[Row]:
    ops = side_ops(client)
    rows: list[Row] = []
    for kind in ("SET", "GET"):  # SET first: GET then reads the keys SET stored
        for concurrency in (1, 64):
            total = cfg.ops_serial if concurrency == 1 else cfg.ops_concurrent
            row = Row(kind, concurrency, {side: [] for side in ops[kind]})
            if kind == "GET":  # every key present on every side, whatever ran before
                for op in ops["SET"].values():
                    await run_ops(op, KEYS, 1)
            progress(f"{kind} x{concurrency}: warm-up")
            for op in ops[kind].values():
                await run_ops(op, total, concurrency)
            for rep in range(cfg.repetitions):
                # Interleaved, and the order alternates so neither side always goes first.
                sides = list(ops[kind].items())
                for side, op in sides if rep % 2 == 0 else reversed(sides):
                    row.samples[side].append(await run_ops(op, total, concurrency))
            progress(
                f"{kind} x{concurrency}: facade {row.best('facade'):,.0f}/s, "
                f"bare {row.best('bare'):,.0f}/s, memory {row.best('memory'):,.0f}/s, "
                f"paired ratio {row.paired_ratio():.2f}"
            )
            rows.append(row)
    return rows


def _area(filename: str, name: str) -> str:
    """Which layer a profiled function belongs to."""
    if "/megatrio/" in filename:
        return "megatrio (Cache facade + RedisCache)"
    if "json" in filename or "_json" in name or name.startswith("<method 'encode' of 'str"):
        return "json (encode/decode)"
    if "/coredis/" in filename:
        return "coredis"
    if "/trio/" in filename or "/anyio/" in filename or "/outcome/" in filename:
        return "trio + anyio"
    return "other (stdlib, builtins, this script)"


async def profile_facade(cfg: Config, client: RedisClient) -> str:
    """cProfile of the facade's SET and GET at 64 tasks: own time by layer, then by function."""
    ops = side_ops(client)
    profiler = cProfile.Profile()
    profiler.enable()
    for kind in ("SET", "GET"):
        await run_ops(ops[kind]["facade"], cfg.ops_concurrent, 64)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    by_area: dict[str, float] = {}
    megatrio_functions: list[tuple[float, str]] = []
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, name), (_, _, own, *_rest) in entries.items():
        area = _area(filename, name)
        by_area[area] = by_area.get(area, 0.0) + own
        if area.startswith("megatrio"):
            short = filename.split("/megatrio/", 1)[1]
            megatrio_functions.append((own, f"megatrio/{short}:{line}({name})"))
    total = sum(by_area.values())
    out.write(f"own time by layer ({2 * cfg.ops_concurrent:,} operations, {total:.2f} s):\n")
    for area, own in sorted(by_area.items(), key=lambda item: -item[1]):
        per_op = own / (2 * cfg.ops_concurrent) * 1e6
        out.write(f"  {area:<40} {own:6.2f} s  {100 * own / total:5.1f}%  {per_op:6.1f} us/op\n")
    out.write("megatrio functions by own time:\n")
    for own, where in sorted(megatrio_functions, reverse=True)[:8]:
        out.write(f"  {own:6.3f} s  {where}\n")
    out.write("\n")
    stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


# -- report ---------------------------------------------------------------------------------


def table(rows: list[Row]) -> tuple[str, list[str]]:
    lines = [
        "| #  | operation      | Cache(RedisCache) | bare coredis |  ratio | paired | target  "
        "| result | CPU/op facade | CPU/op bare | Cache(MemoryCache) |",
        "|----|----------------|------------------:|-------------:|-------:|-------:|---------"
        "|--------|--------------:|------------:|-------------------:|",
    ]
    failed: list[str] = []
    for number, row in enumerate(rows, start=1):
        facade, bare, memory = row.best("facade"), row.best("bare"), row.best("memory")
        ratio = facade / bare
        ok = ratio >= TARGET
        if not ok:
            failed.append(str(number))
        operation = f"{row.name} x{row.concurrency} task{'s' if row.concurrency > 1 else ''}"
        lines.append(
            f"| {number:<2} | {operation:<14} | {facade:>15,.0f}/s | {bare:>10,.0f}/s "
            f"| {ratio:5.2f}x | {row.paired_ratio():5.2f}x | >= {TARGET:.1f}x "
            f"| {'PASS' if ok else 'FAIL':<6} | {row.cpu('facade'):>10.1f} us "
            f"| {row.cpu('bare'):>8.1f} us | {memory:>16,.0f}/s |"
        )
    return "\n".join(lines), failed


async def main(cfg: Config, mode: str, profile: bool) -> None:
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with private_redis() as (url, server_version):
        async with open_redis(url) as client:
            rows = await measure(cfg, client)
            profile_text = await profile_facade(cfg, client) if profile else ""
    load_after = os.getloadavg()[0]
    print(
        f"megatrio Redis cache benchmark ({mode}) - Python {platform.python_version()}, "
        f"trio {version('trio')}, anyio {version('anyio')}, coredis {version('coredis')}, "
        f"redis-server {server_version}, megatrio {version('megatrio')}"
    )
    print(
        f"ops/s: best of {cfg.repetitions} after one warm-up, sides interleaved (order "
        f"alternating), gc.collect() then gc disabled on every side; ratio = best facade / "
        f"best bare, paired = median of facade/bare over back-to-back repetitions; CPU/op = "
        f"this process's CPU time per operation (best); {KEYS:,} keys, {len(RAW_VALUE)}-byte "
        f"JSON value, SET with a {TTL_SECONDS} s TTL, GET all hits; {cfg.ops_serial:,} ops "
        f"at 1 task, {cfg.ops_concurrent:,} ops over 64 tasks; one client (open_redis "
        f"defaults) for both sides"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, 1-minute load average {load_before:.2f} before, "
        f"{load_after:.2f} after (ops/s swing with other load; CPU/op much less)"
    )
    print()
    text, failed = table(rows)
    print(text)
    print()
    print("raw ops/s (CPU us/op) per repetition:")
    for row in rows:
        for side, samples in row.samples.items():
            joined = ", ".join(f"{s.ops_per_second:,.0f} ({s.cpu_us_per_op:.1f})" for s in samples)
            print(f"  {row.name} x{row.concurrency} {side}: {joined}")
    print()
    print(f"failed targets: {', '.join(failed) if failed else 'none'}")
    print(f"total benchmark time {time.perf_counter() - started:.1f} s")
    if profile_text:
        print()
        print("cProfile, facade SET and GET at 64 tasks (sorted by own time):")
        print(profile_text)


def parse_args(argv: list[str]) -> tuple[Config, str, bool]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations and repetitions")
    parser.add_argument("--profile", action="store_true", help="add a cProfile of the facade")
    args = parser.parse_args(argv)
    if args.quick:
        return Config(repetitions=3, ops_serial=1_000, ops_concurrent=3_200), "quick", args.profile
    return Config(repetitions=9, ops_serial=3_000, ops_concurrent=12_800), "full", args.profile


if __name__ == "__main__":
    config, run_mode, with_profile = parse_args(sys.argv[1:])
    trio.run(main, config, run_mode, with_profile)
