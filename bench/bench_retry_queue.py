"""Retry queue benchmark: draining a large queue file by streaming versus reading it whole.

Run ``python bench/bench_retry_queue.py`` (``--quick`` for 100k lines instead of 1M). It writes
a queue file of alert-sized entries with :meth:`RetryQueue.append_many`, then runs each variant
in a fresh Python process of its own, on a fresh copy of the file, so that the peak resident
set size (``ru_maxrss``) of each is its own:

- ``streaming``: :meth:`RetryQueue.drain` with the default caps (keep the newest 5000): two
  streaming passes, memory O(max_entries).
- ``read-whole``: what a naive drain does — read the file into memory, parse every line, sort
  by enqueue time, keep the newest 5000. Same result, no marks, no re-queueing.
- ``streaming, keep all``: :meth:`RetryQueue.drain` with ``max_entries`` above the line count,
  so every entry is delivered and marked (delivery throughput, including the per-entry mark).

Each variant runs at two sizes (N/10 and N) so that "flat" is visible. Reported: drain wall
time (best of ``--repeat`` runs), lines per second (lines in the file / drain time), peak RSS
(``ru_maxrss``) and its growth over the process's peak before the drain (interpreter and
imports, which the streaming drain never exceeds), and the peak of Python heap allocations
during the drain from one extra run under ``tracemalloc``. Progress goes to stderr, the table
to stdout.
"""

from __future__ import annotations

import argparse
import heapq
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from importlib.metadata import version
from pathlib import Path
from typing import Any

import trio

from megatrio.services.stores._retry_queue import QUEUE_FILE, QueuedEntry, RetryQueue

KEEP = 5000
TEXT = (
    "2026-11-28T10:00:00Z [error    ] payment provider timed out after 10.0 s "
    "[app.billing] order_id=12345 attempt=3"
)


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


# -- the variants (each runs in its own process) ----------------------------------------------


async def deliver(entry: QueuedEntry) -> bool:
    return True


def run_streaming(directory: Path, keep: int) -> dict[str, Any]:
    queue = RetryQueue(directory, max_entries=keep, max_age_seconds=10 * 365 * 86400)
    start = time.perf_counter()
    summary = trio.run(queue.drain, deliver)
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "delivered": summary.delivered, "dropped": dict(summary.dropped)}


def run_read_whole(directory: Path, keep: int) -> dict[str, Any]:
    start = time.perf_counter()
    path = directory / QUEUE_FILE
    with path.open("rb") as f:
        data = f.read()
    entries: list[tuple[float, int, dict[str, Any]]] = []
    corrupt = 0
    for line in data.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            corrupt += 1
            continue
        entries.append((obj["ts"], len(entries), obj))
    newest = heapq.nlargest(keep, entries)
    newest.sort()

    async def deliver_all() -> int:
        for _, _, obj in newest:
            await deliver(
                QueuedEntry(id=obj["id"], payload=obj["p"], enqueued_at=obj["ts"], attempts=0)
            )
        return len(newest)

    delivered = trio.run(deliver_all)
    path.unlink()
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "delivered": delivered,
        "dropped": {"too_many": len(entries) - delivered, "corrupt": corrupt},
    }


def child_main(variant: str, directory: Path, keep: int, trace: bool) -> None:
    before = rss_kib()
    if trace:
        tracemalloc.start()
    if variant == "read-whole":
        result = run_read_whole(directory, keep)
    else:
        result = run_streaming(directory, keep)
    if trace:
        result.update(traced_peak_bytes=tracemalloc.get_traced_memory()[1])
    result.update(rss_before_kib=before, rss_peak_kib=rss_kib())
    print(json.dumps(result))


# -- the driver -------------------------------------------------------------------------------


def make_queue(directory: Path, lines: int) -> Path:
    """A queue file of *lines* entries, enqueued one millisecond apart."""
    now = [time.time() - lines / 1000]

    def clock() -> float:
        now[0] += 0.001
        return now[0]

    async def fill() -> None:
        queue = RetryQueue(directory, clock=clock)
        batch = 10_000
        for start in range(0, lines, batch):
            count = min(batch, lines - start)
            await queue.append_many({"text": TEXT, "n": start + i} for i in range(count))

    trio.run(fill)
    return directory / QUEUE_FILE


def run_variant(variant: str, master: Path, keep: int, *, trace: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-rq-") as tmp:
        shutil.copyfile(master, Path(tmp) / QUEUE_FILE)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", variant, tmp, str(keep), str(int(trace))],
            check=True,
            capture_output=True,
            text=True,
        )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def measure(variant: str, master: Path, keep: int, repeat: int) -> dict[str, Any]:
    """Best time and highest peak RSS of *repeat* runs, plus one traced run for the heap."""
    runs = [run_variant(variant, master, keep, trace=False) for _ in range(repeat)]
    traced = run_variant(variant, master, keep, trace=True)
    best = min(runs, key=lambda r: r["seconds"])
    return {
        **best,
        "all_seconds": [r["seconds"] for r in runs],
        "rss_peak_kib": max(r["rss_peak_kib"] for r in runs),
        "rss_before_kib": min(r["rss_before_kib"] for r in runs),
        "traced_peak_bytes": traced["traced_peak_bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k lines instead of 1M")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row (best kept)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, directory, keep, trace = args.child
        child_main(variant, Path(directory), int(keep), trace == "1")
        return

    total = 100_000 if args.quick else 1_000_000
    sizes = [total // 10, total]
    began = time.perf_counter()
    rows: list[tuple[str, int, float, float, dict[str, Any] | None]] = []
    with tempfile.TemporaryDirectory(prefix="bench-rq-master-") as tmp:
        for lines in sizes:
            directory = Path(tmp) / str(lines)
            print(f"writing {lines:,} lines ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            master = make_queue(directory, lines)
            append_seconds = time.perf_counter() - start
            size_mb = master.stat().st_size / 1e6
            rows.append(("append_many (10k per call)", lines, size_mb, append_seconds, None))
            variants = [("streaming", KEEP), ("read-whole", KEEP)]
            if lines == sizes[0]:
                variants.append(("streaming, keep all", lines + 1))
            for variant, keep in variants:
                print(f"  {variant} ...", file=sys.stderr, flush=True)
                name = "streaming" if variant.startswith("streaming") else variant
                result = measure(name, master, keep, args.repeat)
                expected = min(keep, lines)
                assert result["delivered"] == expected, (variant, result)
                rows.append((variant, lines, size_mb, result["seconds"], result))

    print(
        f"retry queue benchmark ({'quick' if args.quick else 'full'}) - "
        f"Python {platform.python_version()}, trio {version('trio')}, "
        f"anyio {version('anyio')}, megatrio {version('megatrio')}; "
        f"keep newest {KEEP} unless noted; each drain in a fresh process on a fresh copy; "
        f"time: best of {args.repeat}; peak RSS: highest of those runs; traced heap: one more "
        "run under tracemalloc\n"
    )
    print(
        "| operation                  |     lines | file MB | seconds |    lines/s "
        "| delivered | peak RSS MB | RSS growth MB | traced heap peak MB |"
    )
    print(
        "|----------------------------|----------:|--------:|--------:|-----------:"
        "|----------:|------------:|--------------:|--------------------:|"
    )
    for variant, lines, size_mb, seconds, measured in rows:
        if measured is None:
            delivered = peak = growth = traced = "-"
        else:
            delivered = f"{measured['delivered']:,}"
            peak = f"{measured['rss_peak_kib'] / 1024:.1f}"
            growth = f"{(measured['rss_peak_kib'] - measured['rss_before_kib']) / 1024:.1f}"
            traced = f"{measured['traced_peak_bytes'] / 1e6:.2f}"
        print(
            f"| {variant:<26} | {lines:>9,} | {size_mb:>7.1f} | {seconds:>7.2f} "
            f"| {lines / seconds:>10,.0f} | {delivered:>9} | {peak:>11} | {growth:>13} "
            f"| {traced:>19} |"
        )
    print("\nraw timings (s):")
    for variant, lines, _, _, measured in rows:
        if measured is not None:
            runs = ", ".join(f"{t:.2f}" for t in measured["all_seconds"])
            print(f"  {variant} ({lines:,} lines): {runs}")
    print(f"\ntotal benchmark time {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
