"""The megatrio side of ``bench/bench_jobs.py``: the same workloads under trio, through the
App's job API, the JetStream engine on the asyncio bridge, and the core-NATS bus."""

from __future__ import annotations

import time
from typing import Any

import trio

import megatrio
from bench.bench_jobs import BATCH, LATENCY_SAMPLES, PRODUCERS, Result, percentiles, rss_kib
from megatrio._config import Config
from megatrio.app._jobs import open_job_engine
from megatrio.services.jobs._jobs import Jobs
from megatrio.services.nats._bus import Bus


def _app(name: str, on_handled: Any) -> megatrio.App:
    app = megatrio.App(name)

    @app.job("work", concurrency=BATCH, max_deliver=3, retry_delays=(1.0,))
    async def work(payload: Any) -> None:
        on_handled()

    return app


async def _jobs(url: str, count: int, rep: int) -> tuple[float, int]:
    handled = 0

    def on_handled() -> None:
        nonlocal handled
        handled += 1

    app = _app(f"bench{rep}", on_handled)
    async with (
        megatrio.mega_runtime(name=app.name, handle_signals=False) as rt,
        open_job_engine(Config(nats_url=url), app.name) as engine,
    ):
        jobs = Jobs(engine.driver, app.job_specs())
        await jobs.declare()
        before = rss_kib()
        began = time.perf_counter()
        await rt.start_child(jobs.child_spec())

        async def produce(share: int) -> None:
            for i in range(share):
                await jobs.enqueue("work", {"n": i})

        async with trio.open_nursery() as nursery:
            for i in range(PRODUCERS):
                nursery.start_soon(produce, count // PRODUCERS + (i < count % PRODUCERS))
        # Polls the tree's counters, as an operator would.
        while _acked(rt) < count:  # noqa: ASYNC110
            await trio.sleep(0.01)
        elapsed = time.perf_counter() - began
        growth = rss_kib() - before
        assert handled >= count
        await rt.stop_child("jobs")
        assert engine.connection is not None
        assert engine.jetstream is not None
        js = engine.connection.jetstream()
        await engine.connection.run(js.delete_stream, engine.jetstream.stream)
        rt.stop()
    return count / elapsed, growth


async def _memory(url: str, count: int, every: int) -> list[tuple[int, int]]:
    """(jobs acked, RSS KiB) every *every* jobs while *count* pass end to end."""
    app = _app("benchmem", lambda: None)
    samples: list[tuple[int, int]] = []
    async with (
        open_job_engine(Config(nats_url=url), app.name) as engine,
        megatrio.mega_runtime(name=app.name, handle_signals=False) as rt,
    ):
        jobs = Jobs(engine.driver, app.job_specs())
        await jobs.declare()
        await rt.start_child(jobs.child_spec())
        samples.append((0, rss_kib()))

        async def produce(share: int) -> None:
            for i in range(share):
                await jobs.enqueue("work", {"n": i})

        async with trio.open_nursery() as nursery:
            for i in range(PRODUCERS):
                nursery.start_soon(produce, count // PRODUCERS + (i < count % PRODUCERS))
            while (acked := _acked(rt)) < count:
                if acked >= samples[-1][0] + every:
                    samples.append((acked // every * every, rss_kib()))
                await trio.sleep(0.05)
        samples.append((count, rss_kib()))
        await rt.stop_child("jobs")
        assert engine.connection is not None
        assert engine.jetstream is not None
        js = engine.connection.jetstream()
        await engine.connection.run(js.delete_stream, engine.jetstream.stream)
        rt.stop()
    return samples


def memory(url: str, count: int, every: int) -> list[tuple[int, int]]:
    return trio.run(_memory, url, count, every)


def _acked(rt: megatrio.Runtime) -> int:
    [jobs] = [c for c in rt.snapshot()["children"] if c["name"] == "jobs"]
    return sum(int(c["info"].get("acked", 0)) for c in jobs["supervisor"]["children"])


async def _enqueue_latency(url: str, rep: int) -> tuple[float, float]:
    app = _app(f"benchlat{rep}", lambda: None)
    async with open_job_engine(Config(nats_url=url), app.name) as engine:
        jobs = Jobs(engine.driver, app.job_specs())
        await jobs.declare()
        samples = []
        for i in range(LATENCY_SAMPLES):
            began = time.perf_counter()
            await jobs.enqueue("work", {"n": i})
            samples.append(time.perf_counter() - began)
        assert engine.connection is not None
        assert engine.jetstream is not None
        js = engine.connection.jetstream()
        await engine.connection.run(js.delete_stream, engine.jetstream.stream)
    return percentiles(samples)


async def _bus(url: str, count: int) -> float:
    from megatrio.services.nats._connection import open_nats

    async with open_nats(url, name="bench-bus") as conn:
        bus = Bus(conn)
        async with bus.subscribe("bench.bus", max_pending=count + 1) as sub:
            received = 0
            began = time.perf_counter()
            async with trio.open_nursery() as nursery:

                async def publish() -> None:
                    for _ in range(count):
                        await bus.publish("bench.bus", b"x" * 16)

                nursery.start_soon(publish)
                async for _ in sub:
                    received += 1
                    if received == count:
                        break
            elapsed = time.perf_counter() - began
    return count / elapsed


def run(url: str, count: int, rep: int) -> Result:
    jobs_per_s, growth = trio.run(_jobs, url, count, rep)
    p50, p99 = trio.run(_enqueue_latency, url, rep)
    bus = trio.run(_bus, url, count)
    return Result("megatrio", jobs_per_s, p50, p99, bus, growth)
