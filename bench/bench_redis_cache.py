"""Redis at 64-way concurrency: megatrio's cache against the other Python clients and
``redis-benchmark``, all in the same run against the same private ``redis-server``.

Run ``python bench/bench_redis_cache.py`` (``--quick`` for a shorter run, ``--profile`` to add
a cProfile of the megatrio cache row). The script starts a ``redis-server`` of its own on a
free loopback port (no persistence) and stops it by pid at the end.

Rows (each repetition runs every row once, in an order that rotates; best of the repetitions):

1. **megatrio cache**: ``open_cache(rt, "default", RedisCache(client))`` in a ``mega_runtime``
   on trio, ``client`` from ``open_redis(url)`` with its defaults (auto-pipelined);
2. megatrio client alone: ``open_redis(url)``'s ``client.set``/``client.get`` (no facade);
3. megatrio cache with ``open_redis(url, auto_pipeline=False, max_connections=64)``;
4. **bare coredis on trio**: ``coredis.Redis`` with its defaults, under ``trio.run``;
5. **coredis on asyncio**: the same under ``asyncio.run``;
6. **redis-py asyncio**: ``redis.asyncio.Redis`` with its defaults (hiredis installed, so its
   parser), under ``asyncio.run``;
7. **redis-benchmark -c 64**: the C client, 64 connections, no pipelining (``-P 1``).

Every row SETs with ``PX 3600000`` and GETs (all hits) the same value bytes: the 46-byte JSON
the facade writes for a small object, over 1,000 keys. The Python rows split the operations
over 64 tasks, time each operation (p50/p99 latency) with the cyclic GC off for every row
alike, and count the connections they hold afterwards with ``CLIENT LIST``.
"""

from __future__ import annotations

import argparse
import asyncio
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

from megatrio import mega_runtime
from megatrio.services.stores._cache import open_cache
from megatrio.services.stores._redis import open_redis
from megatrio.services.stores._redis_cache import RedisCache
from megatrio.services.stores._redis_conn import PARSER

TASKS = 64
KEYS = 1_000
TTL_SECONDS = 3600
VALUE = {"id": 12345, "name": "user-12345", "active": True}
RAW_VALUE = json.dumps(VALUE, separators=(",", ":"), allow_nan=False).encode()
NAMESPACE = "default"  # open_cache's namespace is the runtime's name; see RUNTIME_NAME
RUNTIME_NAME = "bench"
TARGET_REDIS_PY = 1.0
STRETCH_REDIS_BENCHMARK = 0.3

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
    p50_us: float
    p99_us: float


@dataclass
class Result:
    set: Sample
    get: Sample
    connections: int


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def sample(total: int, elapsed: float, latencies: list[float]) -> Sample:
    latencies.sort()
    return Sample(
        total / elapsed, percentile(latencies, 0.5) * 1e6, percentile(latencies, 0.99) * 1e6
    )


def count_connections(port: int) -> int:
    """Client connections the server holds now, not counting the one asking."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
        reply = b""
        while not (
            reply.startswith(b"$")
            and reply.endswith(b"\r\n")
            and len(reply) >= int(reply[1 : reply.index(b"\r\n")]) + reply.index(b"\r\n") + 4
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    lines = [line for line in reply.split(b"\r\n", 1)[1].splitlines() if b"id=" in line]
    return len(lines) - 1


async def trio_ops(set_op: Op, get_op: Op, total: int, port: int) -> Result:
    async def phase(op: Op) -> Sample:
        per_task = total // TASKS
        latencies: list[float] = []
        clock = time.perf_counter

        async def worker(first: int) -> None:
            append = latencies.append
            for i in range(first, first + per_task):
                start = clock()
                await op(i % KEYS)
                append(clock() - start)

        with gc_paused():
            start = clock()
            async with trio.open_nursery() as nursery:
                for task in range(TASKS):
                    nursery.start_soon(worker, task * per_task)
            elapsed = clock() - start
        return sample(per_task * TASKS, elapsed, latencies)

    await phase(set_op)  # warm-up: connections opened, every key present
    set_sample = await phase(set_op)
    get_sample = await phase(get_op)
    return Result(set_sample, get_sample, count_connections(port))


async def asyncio_ops(set_op: Op, get_op: Op, total: int, port: int) -> Result:
    async def phase(op: Op) -> Sample:
        per_task = total // TASKS
        latencies: list[float] = []
        clock = time.perf_counter

        async def worker(first: int) -> None:
            append = latencies.append
            for i in range(first, first + per_task):
                start = clock()
                await op(i % KEYS)
                append(clock() - start)

        with gc_paused():
            start = clock()
            await asyncio.gather(*(worker(task * per_task) for task in range(TASKS)))
            elapsed = clock() - start
        return sample(per_task * TASKS, elapsed, latencies)

    await phase(set_op)
    set_sample = await phase(set_op)
    get_sample = await phase(get_op)
    return Result(set_sample, get_sample, count_connections(port))


def full_key(i: int) -> str:
    return f"mega:cache:{RUNTIME_NAME}:k{i}"


KEY_NAMES = [f"k{i}" for i in range(KEYS)]
FULL_KEYS = [full_key(i) for i in range(KEYS)]
PX = TTL_SECONDS * 1000


async def hit(value: object, i: int) -> None:
    if value is None:
        raise RuntimeError(f"cache miss for key {i}: the GET rows must measure hits")


async def megatrio_cache_row(url: str, port: int, total: int, **options: Any) -> Result:
    async with mega_runtime(name=RUNTIME_NAME, grace_seconds=5) as rt:
        client = await rt.enter_async_context(open_redis(url, **options))
        cache = await rt.enter_async_context(open_cache(rt, "default", RedisCache(client)))

        async def set_op(i: int) -> None:
            await cache.set(KEY_NAMES[i], VALUE, ttl_seconds=TTL_SECONDS)

        async def get_op(i: int) -> None:
            await hit(await cache.get(KEY_NAMES[i]), i)

        return await trio_ops(set_op, get_op, total, port)


async def megatrio_client_row(url: str, port: int, total: int) -> Result:
    async with open_redis(url) as client:

        async def set_op(i: int) -> None:
            await client.set(FULL_KEYS[i], RAW_VALUE, px=PX)

        async def get_op(i: int) -> None:
            await hit(await client.get(FULL_KEYS[i]), i)

        return await trio_ops(set_op, get_op, total, port)


async def coredis_row(url: str, port: int, total: int, *, on_trio: bool) -> Result:
    import coredis

    client: Any = coredis.Redis.from_url(url, decode_responses=False)
    async with client:

        async def set_op(i: int) -> None:
            await client.set(FULL_KEYS[i], RAW_VALUE, px=PX)

        async def get_op(i: int) -> None:
            await hit(await client.get(FULL_KEYS[i]), i)

        run = trio_ops if on_trio else asyncio_ops
        return await run(set_op, get_op, total, port)


async def redis_py_row(url: str, port: int, total: int) -> Result:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:

        async def set_op(i: int) -> None:
            await client.set(FULL_KEYS[i], RAW_VALUE, px=PX)

        async def get_op(i: int) -> None:
            await hit(await client.get(FULL_KEYS[i]), i)

        return await asyncio_ops(set_op, get_op, total, port)
    finally:
        await client.aclose()


def redis_benchmark_row(url: str, port: int, total: int) -> Result:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark is not installed (apt-get install redis-tools)")
    key = f"mega:cache:{RUNTIME_NAME}:rb__rand_int__"
    base = [binary, "-p", str(port), "-c", str(TASKS), "-n", str(total), "-r", str(KEYS),
            "--csv", "--precision", "3"]  # fmt: skip

    def run(*command: str) -> Sample:
        out = subprocess.run([*base, *command], capture_output=True, text=True, check=True)
        line = out.stdout.strip().splitlines()[-1]
        # "test","rps","avg","min","p50","p95","p99","max": the test name may hold commas.
        fields = [float(f.strip('"')) for f in line.rsplit(",", 7)[1:]]
        return Sample(fields[0], fields[3] * 1000, fields[5] * 1000)

    run("SET", key, RAW_VALUE.decode(), "PX", str(PX))  # warm-up, and every key present
    set_sample = run("SET", key, RAW_VALUE.decode(), "PX", str(PX))
    get_sample = run("GET", key)
    return Result(set_sample, get_sample, TASKS)


ROWS: dict[str, Callable[[str, int, int], Result]] = {
    "megatrio cache (open_cache + RedisCache, trio)": lambda url, port, total: trio.run(
        megatrio_cache_row, url, port, total
    ),
    "megatrio client alone (open_redis, trio)": lambda url, port, total: trio.run(
        megatrio_client_row, url, port, total
    ),
    "megatrio cache, auto_pipeline=False, 64 conns": lambda url, port, total: trio.run(
        lambda: megatrio_cache_row(url, port, total, auto_pipeline=False, max_connections=64)
    ),
    "bare coredis on trio": lambda url, port, total: trio.run(
        lambda: coredis_row(url, port, total, on_trio=True)
    ),
    "coredis on asyncio": lambda url, port, total: asyncio.run(
        coredis_row(url, port, total, on_trio=False)
    ),
    "redis-py asyncio": lambda url, port, total: asyncio.run(redis_py_row(url, port, total)),
    "redis-benchmark -c 64": redis_benchmark_row,
}
MEGATRIO = "megatrio cache (open_cache + RedisCache, trio)"
REDIS_PY = "redis-py asyncio"
REDIS_BENCHMARK = "redis-benchmark -c 64"


@dataclass
class Row:
    name: str
    results: list[Result] = field(default_factory=list)

    def best(self, kind: str) -> Sample:
        return max((getattr(r, kind) for r in self.results), key=lambda s: s.ops_per_second)

    def connections(self) -> str:
        counts = sorted({r.connections for r in self.results})
        return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def measure(url: str, port: int, repetitions: int, total: int) -> dict[str, Row]:
    rows = {name: Row(name) for name in ROWS}
    names = list(ROWS)
    for rep in range(repetitions):
        order = names[rep % len(names) :] + names[: rep % len(names)]  # rotates: no fixed first
        for name in order:
            result = ROWS[name](url, port, total)
            rows[name].results.append(result)
            progress(
                f"rep {rep + 1}/{repetitions} {name}: SET {result.set.ops_per_second:,.0f}/s "
                f"GET {result.get.ops_per_second:,.0f}/s, {result.connections} connections"
            )
    return rows


def profile_megatrio(url: str, port: int, total: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    trio.run(megatrio_cache_row, url, port, total)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


# -- report ---------------------------------------------------------------------------------


def table(rows: dict[str, Row]) -> str:
    lines = [
        "| row | SET ops/s | SET p50 / p99 | GET ops/s | GET p50 / p99 | connections held |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        s, g = row.best("set"), row.best("get")
        lines.append(
            f"| {name} | {s.ops_per_second:,.0f} | {s.p50_us:,.0f} / {s.p99_us:,.0f} us "
            f"| {g.ops_per_second:,.0f} | {g.p50_us:,.0f} / {g.p99_us:,.0f} us "
            f"| {row.connections()} |"
        )
    return "\n".join(lines)


def ratios(rows: dict[str, Row]) -> tuple[str, bool]:
    lines = []
    ok = True
    for other, target, label in (
        (REDIS_PY, TARGET_REDIS_PY, "target"),
        (REDIS_BENCHMARK, STRETCH_REDIS_BENCHMARK, "stretch"),
    ):
        for kind in ("set", "get"):
            ratio = rows[MEGATRIO].best(kind).ops_per_second / rows[other].best(kind).ops_per_second
            passed = ratio >= target
            ok = ok and (passed or label == "stretch")
            lines.append(
                f"megatrio cache / {other} {kind.upper()}: {ratio:.2f}x "
                f"({label} >= {target:.1f}x: {'PASS' if passed else 'MISS'})"
            )
    return "\n".join(lines), ok


def main(repetitions: int, total: int, mode: str, profile: bool) -> int:
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with private_redis() as (url, server_version):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        rows = measure(url, port, repetitions, total)
        profile_text = profile_megatrio(url, port, total) if profile else ""
    load_after = os.getloadavg()[0]
    print(
        f"megatrio Redis benchmark ({mode}) - Python {platform.python_version()}, trio "
        f"{version('trio')}, anyio {version('anyio')}, coredis {version('coredis')}, redis-py "
        f"{version('redis')}, hiredis {version('hiredis')}, redis-server {server_version}, "
        f"megatrio {version('megatrio')} (RESP parser: {PARSER})"
    )
    print(
        f"{TASKS} tasks (redis-benchmark: {TASKS} connections), {total:,} ops per phase, "
        f"best of {repetitions} repetitions (row order rotating), warm-up phase first in each; "
        f"{KEYS:,} keys, {len(RAW_VALUE)}-byte JSON value, SET with PX {PX}, GET all hits; "
        f"latency per operation as each caller sees it"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, 1-minute load average {load_before:.2f} before, "
        f"{load_after:.2f} after"
    )
    print()
    print(table(rows))
    print()
    text, ok = ratios(rows)
    print(text)
    print()
    print("raw ops/s per repetition (SET, GET, connections):")
    for name, row in rows.items():
        joined = ", ".join(
            f"{r.set.ops_per_second:,.0f}/{r.get.ops_per_second:,.0f}/{r.connections}"
            for r in row.results
        )
        print(f"  {name}: {joined}")
    print(f"total benchmark time {time.perf_counter() - started:.1f} s")
    if profile_text:
        print()
        print("cProfile, megatrio cache row (sorted by own time):")
        print(profile_text)
    return 0 if ok else 1


def parse_args(argv: list[str]) -> tuple[int, int, str, bool]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations and repetitions")
    parser.add_argument("--profile", action="store_true", help="add a cProfile of megatrio")
    args = parser.parse_args(argv)
    if args.quick:
        return 2, 6_400, "quick", args.profile
    return 5, 25_600, "full", args.profile


if __name__ == "__main__":
    sys.exit(main(*parse_args(sys.argv[1:])))
