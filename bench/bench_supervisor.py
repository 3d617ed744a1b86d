"""Supervisor benchmark: megatrio against bare trio, both measured in the same run.

Run ``python bench/bench_supervisor.py`` (``--quick`` for a smaller, faster run). Everything
runs in one process under one ``trio.run`` on the real clock. Each comparison disables the
cyclic GC (after a ``gc.collect()``) for both sides in exactly the same way, warms both sides up
once, interleaves the repetitions of the two sides, and reports the best (minimum) time of the
repetitions. Restart latencies are pooled percentiles over all measured restarts.

megatrio's own crash/exit log lines are silenced (logger level above CRITICAL) except in the
one row that measures their cost, so the rows compare the runtime machinery, not logging.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import platform
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import trio
import trio.testing
from _common import gc_paused, markdown_table

from megatrio import NO_BACKOFF, ChildSpec, Restart, Supervisor, current_child

now_ns = time.perf_counter_ns
MEGATRIO_LOG = logging.getLogger("megatrio")


class Crash(Exception):
    """What the crashing children raise."""


@contextmanager
def megatrio_logging(enabled: bool) -> Iterator[None]:
    """Silence megatrio's log lines, or send them to a handler that formats and drops them."""
    old_level, old_propagate = MEGATRIO_LOG.level, MEGATRIO_LOG.propagate
    handler = _FormatAndDrop()
    if enabled:
        MEGATRIO_LOG.setLevel(logging.INFO)
        MEGATRIO_LOG.addHandler(handler)
        MEGATRIO_LOG.propagate = False
    else:
        MEGATRIO_LOG.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        MEGATRIO_LOG.removeHandler(handler)
        MEGATRIO_LOG.setLevel(old_level)
        MEGATRIO_LOG.propagate = old_propagate


class _FormatAndDrop(logging.Handler):
    """A handler that does the work a real one does (format, traceback included), then drops."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return float(sorted_values[index])


# -- children ----------------------------------------------------------------------------------


async def idle_child(*, task_status: Any) -> None:
    """A supervised child that reports ready and then sleeps (ignores the stopping signal)."""
    task_status.started()
    await trio.sleep_forever()


async def graceful_child(*, task_status: Any) -> None:
    """A supervised child that reports ready, waits for its stopping signal and returns."""
    task_status.started()
    ctx = current_child()
    assert ctx is not None
    await ctx.wait_stopping()


async def bare_ready_sleeper(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


async def bare_event_waiter(event: trio.Event) -> None:
    await event.wait()


def make_supervisor(n: int, target: Any, shutdown_seconds: float) -> Supervisor:
    specs = [ChildSpec(f"c{i}", target, shutdown_seconds=shutdown_seconds) for i in range(n)]
    return Supervisor(specs, name="bench")


# -- 1. restart latency ------------------------------------------------------------------------


async def restart_megatrio(count: int, *, log_enabled: bool = False) -> list[int]:
    """Latencies (ns) from a child's raise to its next incarnation's first line."""
    latencies: list[int] = []
    raised_at = 0
    left = count
    done = trio.Event()

    async def crasher(*, task_status: Any) -> None:
        nonlocal raised_at, left
        began = now_ns()
        if raised_at:
            latencies.append(began - raised_at)
        task_status.started()
        if left == 0:
            done.set()
            ctx = current_child()
            assert ctx is not None
            await ctx.wait_stopping()
            return
        left -= 1
        raised_at = now_ns()
        raise Crash("boom")

    sup = Supervisor(
        [ChildSpec("crasher", crasher, restart=Restart.PERMANENT, shutdown_seconds=0)],
        name="bench",
        backoff=NO_BACKOFF,
        max_restarts=10**9,
        period_seconds=0.01,
    )
    with megatrio_logging(log_enabled), gc_paused():
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await done.wait()
            sup.stop()
    return latencies


async def restart_bare_respawn(count: int) -> list[int]:
    """Bare trio: a loop that respawns the child as a new task each time it reports an exit.

    The child runs in a wrapper task that catches its exception and sends it over a memory
    channel; the loop does ``await nursery.start(wrapper)`` then ``await receive()`` — the
    same shape as a supervisor (separate task, readiness, exit notification), nothing more.
    """
    latencies: list[int] = []
    raised_at = 0
    send, receive = trio.open_memory_channel[BaseException](math.inf)

    async def crasher(task_status: Any) -> None:
        nonlocal raised_at
        began = now_ns()
        if raised_at:
            latencies.append(began - raised_at)
        task_status.started()
        raised_at = now_ns()
        raise Crash("boom")

    async def wrapper(*, task_status: Any) -> None:
        try:
            await crasher(task_status)
        except Exception as exc:
            send.send_nowait(exc)

    with gc_paused():
        async with trio.open_nursery() as nursery:
            for _ in range(count + 1):
                await nursery.start(wrapper)
                await receive.receive()
    return latencies


async def restart_bare_inline(count: int) -> list[int]:
    """Bare trio, no new task: ``try: await child() except Exception: await checkpoint()``.

    The floor for "run it again": no task is spawned, only the exception is caught and the
    loop passes one checkpoint (as any real restart loop would) before calling it again.
    """
    latencies: list[int] = []
    raised_at = 0

    async def crasher() -> None:
        nonlocal raised_at
        began = now_ns()
        if raised_at:
            latencies.append(began - raised_at)
        raised_at = now_ns()
        raise Crash("boom")

    with gc_paused():
        for _ in range(count + 1):
            try:
                await crasher()
            except Exception:
                await trio.lowlevel.checkpoint()  # let the loop yield, as any real one would
    return latencies


# -- 2. starting N children --------------------------------------------------------------------


async def start_megatrio_initial(n: int) -> int:
    sup = make_supervisor(n, idle_child, 0)
    with gc_paused():
        async with trio.open_nursery() as nursery:
            began = now_ns()
            await nursery.start(sup.run)
            await trio.testing.wait_all_tasks_blocked()
            elapsed = now_ns() - began
            nursery.cancel_scope.cancel()
    return elapsed


async def start_megatrio_dynamic(n: int) -> int:
    specs = [ChildSpec(f"c{i}", idle_child, shutdown_seconds=0) for i in range(n)]
    sup = Supervisor(name="bench")
    with gc_paused():
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.testing.wait_all_tasks_blocked()
            began = now_ns()
            for spec in specs:
                await sup.start_child(spec)
            await trio.testing.wait_all_tasks_blocked()
            elapsed = now_ns() - began
            nursery.cancel_scope.cancel()
    return elapsed


async def start_bare_soon(n: int) -> int:
    with gc_paused():
        async with trio.open_nursery() as nursery:
            began = now_ns()
            for _ in range(n):
                nursery.start_soon(trio.sleep_forever)
            await trio.testing.wait_all_tasks_blocked()
            elapsed = now_ns() - began
            nursery.cancel_scope.cancel()
    return elapsed


async def start_bare_sequential(n: int) -> int:
    with gc_paused():
        async with trio.open_nursery() as nursery:
            began = now_ns()
            for _ in range(n):
                await nursery.start(bare_ready_sleeper)
            await trio.testing.wait_all_tasks_blocked()
            elapsed = now_ns() - began
            nursery.cancel_scope.cancel()
    return elapsed


# -- 3. memory per idle child ------------------------------------------------------------------


async def memory_megatrio(n: int, target: Any) -> float:
    """Traced bytes per child: specs + supervisor + n started children, all parked."""
    with gc_paused():
        async with trio.open_nursery() as nursery:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            sup = make_supervisor(n, target, 0)
            await nursery.start(sup.run)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            nursery.cancel_scope.cancel()
    del sup
    return (after - before) / n


async def memory_bare(n: int, spawn: Callable[[trio.Nursery], None]) -> float:
    with gc_paused():
        async with trio.open_nursery() as nursery:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                spawn(nursery)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            nursery.cancel_scope.cancel()
    return (after - before) / n


def spawn_sleeper(nursery: trio.Nursery) -> None:
    nursery.start_soon(trio.sleep_forever)


# -- 4. stopping N children --------------------------------------------------------------------


async def stop_megatrio(n: int, target: Any, shutdown_seconds: float) -> int:
    """From ``supervisor.stop()`` until ``run()`` has returned (its nursery has exited)."""
    sup = make_supervisor(n, target, shutdown_seconds)
    with gc_paused():
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.testing.wait_all_tasks_blocked()
            began = now_ns()
            sup.stop()
        elapsed = now_ns() - began
    return elapsed


async def stop_bare(n: int) -> int:
    """From ``cancel_scope.cancel()`` until the nursery of n sleeping tasks has exited."""
    with gc_paused():
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(trio.sleep_forever)
            await trio.testing.wait_all_tasks_blocked()
            began = now_ns()
            nursery.cancel_scope.cancel()
        elapsed = now_ns() - began
    return elapsed


async def _stoppable(scope: trio.CancelScope, done: trio.Event) -> None:
    with scope:
        await trio.sleep_forever()
    done.set()


async def stop_bare_sequential(n: int) -> int:
    """Bare trio, OTP order: cancel each task's own scope and await its exit, last first."""
    handles = [(trio.CancelScope(), trio.Event()) for _ in range(n)]
    with gc_paused():
        async with trio.open_nursery() as nursery:
            for scope, done in handles:
                nursery.start_soon(_stoppable, scope, done)
            await trio.testing.wait_all_tasks_blocked()
            began = now_ns()
            for scope, done in reversed(handles):
                scope.cancel()
                await done.wait()
        elapsed = now_ns() - began
    return elapsed


# -- the driver --------------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    what: str
    megatrio: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None  # None: informational

    @property
    def result(self) -> str:
        return "info" if self.passed is None else ("PASS" if self.passed else "FAIL")


@dataclass
class Config:
    restarts: int
    restart_warmup: int
    n: int
    big_n: int
    reps: int
    big_reps: int
    warmup_n: int


@dataclass
class Bench:
    cfg: Config
    rows: list[Row] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    began: float = field(default_factory=time.perf_counter)

    def progress(self, text: str) -> None:
        elapsed = time.perf_counter() - self.began
        print(f"[{elapsed:6.1f} s] {text}", file=sys.stderr, flush=True)

    async def best_of(
        self, n: int, reps: int, sides: dict[str, Callable[[int], Awaitable[int]]]
    ) -> dict[str, float]:
        """Warm each side up once (small size), then run *reps* interleaved rounds at size *n*.

        Returns the best (minimum) time of each side, in ms.
        """
        for run in sides.values():
            await run(self.cfg.warmup_n)
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(reps):
            for name, run in sides.items():
                times[name].append((await run(n)) / 1e6)
        for name, values in times.items():
            listed = ", ".join(f"{v:.1f}" for v in values)
            self.raw.append(f"{name} (n={n}): best {min(values):.1f} ms (reps: {listed})")
        return {name: min(values) for name, values in times.items()}

    async def restart_rows(self) -> None:
        count, warm = self.cfg.restarts, self.cfg.restart_warmup
        self.progress(f"restart latency ({count} restarts per side)")
        await restart_megatrio(warm)
        await restart_bare_respawn(warm)
        await restart_bare_inline(warm)
        mega = sorted(await restart_megatrio(count))
        bare = sorted(await restart_bare_respawn(count))
        inline = sorted(await restart_bare_inline(count))
        await restart_megatrio(warm, log_enabled=True)
        logged = sorted(await restart_megatrio(count, log_enabled=True))
        for label, values in (
            ("megatrio", mega),
            ("bare respawn", bare),
            ("bare inline", inline),
            ("megatrio+log", logged),
        ):
            p50, p99 = percentile(values, 0.5) / 1e3, percentile(values, 0.99) / 1e3
            self.raw.append(
                f"restart {label}: n={len(values)} p50 {p50:.1f} us, p90 "
                f"{percentile(values, 0.9) / 1e3:.1f} us, p99 {p99:.1f} us, max "
                f"{values[-1] / 1e3:.1f} us"
            )
        base = "respawn loop: nursery.start + channel"
        m50, b50 = percentile(mega, 0.5) / 1e3, percentile(bare, 0.5) / 1e3
        m99, b99 = percentile(mega, 0.99) / 1e3, percentile(bare, 0.99) / 1e3
        i50, l50 = percentile(inline, 0.5) / 1e3, percentile(logged, 0.5) / 1e3
        self.rows += [
            Row("1a", "restart latency p50", f"{m50:.1f} us", f"{b50:.1f} us ({base})",
                m50 / b50, "<= 100 us", m50 <= 100),
            Row("1b", "restart latency p99", f"{m99:.1f} us", f"{b99:.1f} us ({base})",
                m99 / b99, "-", None),
            Row("1c", "restart latency p50", f"{m50:.1f} us",
                f"{i50:.1f} us (try/except loop + checkpoint, no new task)", m50 / i50, "-", None),
            Row("1d", "restart p50, crash logged+formatted", f"{l50:.1f} us",
                f"{b50:.1f} us ({base})", l50 / b50, "-", None),
        ]  # fmt: skip

    async def start_rows(self) -> None:
        n, reps = self.cfg.n, self.cfg.reps
        self.progress(f"start {n} children ({reps} reps)")
        best = await self.best_of(
            n,
            reps,
            {
                "start megatrio initial": start_megatrio_initial,
                "start megatrio start_child": start_megatrio_dynamic,
                "start bare start_soon": start_bare_soon,
                "start bare sequential start": start_bare_sequential,
            },
        )
        initial = best["start megatrio initial"]
        dynamic = best["start megatrio start_child"]
        soon = best["start bare start_soon"]
        seq = best["start bare sequential start"]
        self.rows += [
            Row("2a", f"start {n:,} (initial children)", f"{initial:.1f} ms",
                f"{soon:.1f} ms ({n:,} x start_soon)", initial / soon, "<= 3x",
                initial / soon <= 3),
            Row("2b", f"start {n:,} (initial children)", f"{initial:.1f} ms",
                f"{seq:.1f} ms ({n:,} x await nursery.start)", initial / seq, "-", None),
            Row("2c", f"start {n:,} (await start_child)", f"{dynamic:.1f} ms",
                f"{seq:.1f} ms ({n:,} x await nursery.start)", dynamic / seq, "-", None),
        ]  # fmt: skip

    async def memory_rows(self) -> None:
        n = self.cfg.n
        self.progress(f"memory of {n} idle children (tracemalloc)")
        tracemalloc.start()
        try:
            await memory_megatrio(self.cfg.warmup_n, idle_child)
            await memory_bare(self.cfg.warmup_n, spawn_sleeper)
            mega = await memory_megatrio(n, idle_child)
            bare = await memory_bare(n, spawn_sleeper)
            mega_graceful = await memory_megatrio(n, graceful_child)
            event = trio.Event()
            bare_waiter = await memory_bare(
                n, lambda nursery: nursery.start_soon(bare_event_waiter, event)
            )
        finally:
            tracemalloc.stop()
        self.rows += [
            Row("3a", "memory / idle child", f"{mega:,.0f} B",
                f"{bare:,.0f} B (task in sleep_forever)", mega / bare, "<= 3x", mega / bare <= 3),
            Row("3b", "memory / child in wait_stopping()", f"{mega_graceful:,.0f} B",
                f"{bare_waiter:,.0f} B (task in Event.wait)", mega_graceful / bare_waiter, "-",
                None),
        ]  # fmt: skip

    async def stop_rows(self) -> None:
        for n, reps, keys in (
            (self.cfg.n, self.cfg.reps, ("4a", "4b", "4c")),
            (self.cfg.big_n, self.cfg.big_reps, ("4d", "4e", "4f")),
        ):
            self.progress(f"stop {n} children ({reps} reps)")
            best = await self.best_of(
                n,
                reps,
                {
                    "stop bare cancel": stop_bare,
                    "stop bare sequential": stop_bare_sequential,
                    "stop megatrio graceful": lambda n: stop_megatrio(n, graceful_child, 5.0),
                    "stop megatrio cancelled": lambda n: stop_megatrio(n, idle_child, 0),
                },
            )
            bare = best["stop bare cancel"]
            seq = best["stop bare sequential"]
            graceful = best["stop megatrio graceful"]
            cancelled = best["stop megatrio cancelled"]
            base = f"{bare:.1f} ms (cancel nursery)"
            self.rows += [
                Row(keys[0], f"stop {n:,} graceful (wait_stopping)", f"{graceful:.1f} ms",
                    base, graceful / bare, "<= 2x", graceful / bare <= 2),
                Row(keys[1], f"stop {n:,} ignoring, shutdown=0", f"{cancelled:.1f} ms",
                    base, cancelled / bare, "<= 2x", cancelled / bare <= 2),
                Row(keys[2], f"stop {n:,} graceful (wait_stopping)", f"{graceful:.1f} ms",
                    f"{seq:.1f} ms (one at a time, reverse order)", graceful / seq, "-", None),
            ]  # fmt: skip


def render(rows: list[Row]) -> str:
    header = ("#", "benchmark", "megatrio", "bare trio (baseline)", "ratio", "target", "result")
    cells = [
        (
            r.key,
            r.what,
            r.megatrio,
            r.baseline,
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
            r.result,
        )
        for r in rows
    ]
    return markdown_table(header, cells, right={2, 4})


async def main(cfg: Config, mode: str) -> None:
    bench = Bench(cfg)
    await bench.restart_rows()
    await bench.start_rows()
    await bench.memory_rows()
    await bench.stop_rows()
    bench.progress("done")
    total = time.perf_counter() - bench.began
    print(
        f"megatrio supervisor benchmark ({mode}) - Python {platform.python_version()}, "
        f"trio {version('trio')}, anyio {version('anyio')}, megatrio {version('megatrio')}"
    )
    print(
        f"timings: best of {cfg.reps} ({cfg.big_n:,}-child rows: best of {cfg.big_reps}) after"
        f" one warm-up, sides interleaved, gc.collect() then gc disabled on both sides;"
        f" restart latencies pooled over {cfg.restarts} restarts after {cfg.restart_warmup}"
        f" warm-up; megatrio logging silenced except row 1d"
    )
    print()
    print(render(bench.rows))
    print()
    print("raw measurements:")
    for text in bench.raw:
        print(f"  {text}")
    failed = [row.key for row in bench.rows if row.passed is False]
    print(f"\nfailed targets: {', '.join(failed) if failed else 'none'}")
    print(f"total benchmark time {total:.1f} s")


def parse_args(argv: list[str] | None = None) -> tuple[Config, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    args = parser.parse_args(argv)
    if args.quick:
        return Config(
            restarts=500, restart_warmup=100, n=5_000, big_n=20_000, reps=2, big_reps=1,
            warmup_n=500,
        ), "quick"  # fmt: skip
    return Config(
        restarts=2000, restart_warmup=200, n=10_000, big_n=100_000, reps=5, big_reps=3,
        warmup_n=1000,
    ), "full"  # fmt: skip


if __name__ == "__main__":
    config, mode_name = parse_args()
    trio.run(main, config, mode_name)
