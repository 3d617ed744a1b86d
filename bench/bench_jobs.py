"""Jobs and bus benchmark: megatrio on JetStream (under trio, through the asyncio bridge)
against bare nats-py on asyncio, same server, same run.

Run ``python bench/bench_jobs.py`` (``--quick`` for a short run, ``--jobs N`` to choose the
count). The script starts a private ``nats-server -js`` (file storage in a temp dir) on a free
loopback port and stops it by pid at the end.

Rows:

1. end-to-end jobs/s: N jobs enqueued by 32 concurrent producers (each enqueue waits for its
   JetStream ack) while one consumer handles them (trivial handler) and acks them; from the
   first enqueue until the stream's consumer reports every job acked. megatrio: an App's
   ``@app.job`` consumer (batch = concurrency = 64) and ``rt.jobs.enqueue`` under trio.
   Baseline: a bare nats-py pull consumer on asyncio, ``fetch(64)`` then ``msg.ack()`` per
   message, producers calling ``js.publish``.
2. enqueue latency p50/p99: one producer, one enqueue at a time, 2,000 enqueues.
3. bus publish -> receive msg/s: one publisher, one subscriber on one subject, N messages.
4. peer row, end to end only: FastStream's NATS JetStream pull subscriber (batch 64) on
   asyncio with the broker's own publish (``bench/jobs_faststream.py``).
5. memory: the consumer process's RSS before and after N jobs (flat = no growth per job).
   ``--memory 1000000`` instead runs only megatrio's end-to-end row for that many jobs and
   prints its RSS every 100,000 acked jobs: flat means no growth per job once warm.

Every side runs in its own fresh stream; the sides alternate, best of the repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
import nats.js.api
from _common import markdown_table

from tests.servers import NatsServer

PRODUCERS = 32
BATCH = 64
LATENCY_SAMPLES = 2_000
TARGET = 0.8


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Result:
    side: str
    jobs_per_s: float = 0.0
    enqueue_p50_us: float = 0.0
    enqueue_p99_us: float = 0.0
    bus_msgs_per_s: float = 0.0
    rss_growth_kib: int = 0


# -- the bare nats-py baseline (asyncio) ------------------------------------------------------


async def bare_jobs(url: str, stream: str, count: int) -> tuple[float, int]:
    """Jobs/s end to end and the RSS growth (KiB) over the run."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    subject = f"{stream.lower()}.job"
    await js.add_stream(name=stream, subjects=[subject])
    sub = await js.pull_subscribe(
        subject,
        durable="worker",
        config=nats.js.api.ConsumerConfig(ack_policy=nats.js.api.AckPolicy.EXPLICIT),
    )
    before = rss_kib()
    handled = 0
    done = asyncio.Event()
    payload = json.dumps({"n": 0}).encode()

    async def produce(share: int) -> None:
        for _ in range(share):
            await js.publish(subject, payload)

    async def consume() -> None:
        nonlocal handled
        while handled < count:
            try:
                msgs = await sub.fetch(BATCH, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                json.loads(msg.data)  # the handler: decode, nothing else
                await msg.ack()
                handled += 1
        done.set()

    began = time.perf_counter()
    consumer = asyncio.create_task(consume())
    shares = [count // PRODUCERS + (i < count % PRODUCERS) for i in range(PRODUCERS)]
    await asyncio.gather(*(produce(s) for s in shares))
    await done.wait()
    await consumer
    await _wait_all_acked(js, stream, "worker")
    elapsed = time.perf_counter() - began
    growth = rss_kib() - before
    await js.delete_stream(stream)
    await nc.close()
    return count / elapsed, growth


async def bare_enqueue_latency(url: str, stream: str) -> tuple[float, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    subject = f"{stream.lower()}.job"
    await js.add_stream(name=stream, subjects=[subject])
    samples = []
    for i in range(LATENCY_SAMPLES):
        began = time.perf_counter()
        await js.publish(subject, b'{"n":%d}' % i)
        samples.append(time.perf_counter() - began)
    await js.delete_stream(stream)
    await nc.close()
    return percentiles(samples)


async def bare_bus(url: str, count: int) -> float:
    nc = await nats.connect(url)
    received = 0
    done = asyncio.Event()

    async def on_message(msg: object) -> None:
        nonlocal received
        received += 1
        if received == count:
            done.set()

    await nc.subscribe("bench.bus", cb=on_message, pending_msgs_limit=count + 1)
    await nc.flush()
    began = time.perf_counter()
    for _ in range(count):
        await nc.publish("bench.bus", b"x" * 16)
    await done.wait()
    elapsed = time.perf_counter() - began
    await nc.close()
    return count / elapsed


async def _wait_all_acked(js: nats.js.JetStreamContext, stream: str, durable: str) -> None:
    while True:
        info = await js.consumer_info(stream, durable)
        if info.num_ack_pending == 0 and info.num_pending == 0:
            return
        await asyncio.sleep(0.01)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e6, p99 * 1e6


def run_bare(url: str, count: int, rep: int) -> Result:
    jobs_per_s, growth = asyncio.run(bare_jobs(url, f"BARE{rep}", count))
    p50, p99 = asyncio.run(bare_enqueue_latency(url, f"BARELAT{rep}"))
    bus = asyncio.run(bare_bus(url, count))
    return Result("bare nats-py (asyncio)", jobs_per_s, p50, p99, bus, growth)


# -- megatrio ---------------------------------------------------------------------------------

Side = Callable[[str, int, int], Result]


def run_megatrio(url: str, count: int, rep: int) -> Result:
    from bench.jobs_megatrio import run  # written against megatrio's public jobs API

    return run(url, count, rep)


def run_faststream(url: str, count: int, rep: int) -> Result:
    from bench.jobs_faststream import run  # FastStream's own JetStream pull subscriber

    return run(url, count, rep)


def _or_dash(value: float, fmt: str) -> str:
    return fmt.format(value) if value else "-"


def report(results: dict[str, list[Result]], count: int) -> None:
    def best(side: str, attr: str, high: bool = True) -> float:
        values = [getattr(r, attr) for r in results[side]]
        return max(values) if high else min(values)

    sides = list(results)
    rows = []
    for side in sides:
        rows.append(
            [
                side,
                f"{best(side, 'jobs_per_s'):,.0f}",
                _or_dash(best(side, "enqueue_p50_us", False), "{:,.0f} us"),
                _or_dash(best(side, "enqueue_p99_us", False), "{:,.0f} us"),
                _or_dash(best(side, "bus_msgs_per_s"), "{:,.0f}"),
                f"{int(best(side, 'rss_growth_kib', False)):,} KiB",
            ]
        )
    print(
        markdown_table(
            [
                "side",
                "jobs/s",
                "enqueue p50",
                "enqueue p99",
                "bus msg/s",
                f"RSS growth ({count:,})",
            ],
            rows,
            right={1, 2, 3, 4, 5},
        )
    )
    if "megatrio" in results:
        ratio = best("megatrio", "jobs_per_s") / best("bare nats-py (asyncio)", "jobs_per_s")
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        print(f"\nmegatrio / bare nats-py jobs/s = {ratio:.3f} (target >= {TARGET}): {verdict}")
    if "FastStream (asyncio)" in results:
        peer = best("megatrio", "jobs_per_s") / best("FastStream (asyncio)", "jobs_per_s")
        print(f"megatrio / FastStream jobs/s = {peer:.3f} (peer row, no target)")


MEMORY_EVERY = 100_000
MEMORY_LIMIT_KIB = 16 * 1024


def memory_run(count: int) -> int:
    from bench.jobs_megatrio import memory

    print(
        f"megatrio jobs memory - Python {platform.python_version()}, nats-py "
        f"{version('nats-py')}, {os.cpu_count()} CPUs, {count:,} jobs, {PRODUCERS} producers"
    )
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            began = time.perf_counter()
            samples = memory(server.url, count, MEMORY_EVERY)
            elapsed = time.perf_counter() - began
        finally:
            server.stop()
    print(
        markdown_table(
            ["jobs acked", "RSS"],
            [[f"{n:,}", f"{kib / 1024:,.1f} MiB"] for n, kib in samples],
            right={0, 1},
        )
    )
    # Warm once the first sample after the start is in (allocator pools, caches filled).
    warm = samples[min(2, len(samples) - 1)]
    growth = samples[-1][1] - warm[1]
    verdict = "PASS" if growth <= MEMORY_LIMIT_KIB else "FAIL"
    print(
        f"\n{count / elapsed:,.0f} jobs/s; RSS growth from {warm[0]:,} to {samples[-1][0]:,} "
        f"jobs: {growth / 1024:+.1f} MiB (flat: within {MEMORY_LIMIT_KIB // 1024} MiB): {verdict}"
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 jobs, one repetition")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per run (default 100,000)")
    parser.add_argument("--bare-only", action="store_true", help="only the nats-py baseline")
    parser.add_argument(
        "--memory", type=int, default=None, metavar="N", help="megatrio's RSS while N jobs pass"
    )
    args = parser.parse_args(argv)
    if args.memory:
        return memory_run(args.memory)
    count = args.jobs or (10_000 if args.quick else 100_000)
    reps = 1 if args.quick else 3
    print(
        f"megatrio jobs benchmark - Python {platform.python_version()}, "
        f"nats-py {version('nats-py')}, {os.cpu_count()} CPUs, {count:,} jobs, "
        f"{PRODUCERS} producers, batch {BATCH}, best of {reps}"
    )
    sides: dict[str, Side] = {"bare nats-py (asyncio)": run_bare}
    if not args.bare_only:
        sides["megatrio"] = run_megatrio
        sides["FastStream (asyncio)"] = run_faststream
    results: dict[str, list[Result]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            for rep in range(reps):
                for side, run in sides.items():
                    progress(f"[rep {rep + 1}/{reps}] {side}")
                    results[side].append(run(server.url, count, rep))
        finally:
            server.stop()
    report(results, count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
