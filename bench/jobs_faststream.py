"""The FastStream peer row of ``bench/bench_jobs.py``: FastStream's NATS JetStream pull
subscriber on asyncio (``pull_sub=PullSub(batch_size=64)``, durable, its default ack after the
handler returns), producers on the broker's own JetStream ``publish`` (each waits for its ack).

Only the end-to-end row: FastStream's publish is nats-py's, so its latency and bus rows would
measure the bare client again.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
from faststream.nats import JStream, NatsBroker, PullSub

from bench.bench_jobs import BATCH, PRODUCERS, Result, rss_kib


async def _jobs(url: str, stream: str, count: int) -> tuple[float, int]:
    subject = f"{stream.lower()}.job"
    broker = NatsBroker(url, logger=None)
    handled = 0
    done = asyncio.Event()

    @broker.subscriber(
        subject,
        stream=JStream(stream, subjects=[subject]),
        durable="worker",
        pull_sub=PullSub(batch_size=BATCH, timeout=1.0),
    )
    async def work(payload: Any) -> None:  # decoded from JSON by FastStream
        nonlocal handled
        handled += 1
        if handled >= count:
            done.set()

    await broker.start()
    before = rss_kib()
    payload = json.dumps({"n": 0})
    began = time.perf_counter()

    async def produce(share: int) -> None:
        for _ in range(share):
            await broker.publish(payload, subject, stream=stream)

    shares = [count // PRODUCERS + (i < count % PRODUCERS) for i in range(PRODUCERS)]
    await asyncio.gather(*(produce(s) for s in shares))
    await done.wait()
    nc = await nats.connect(url)  # an observer of the stream's consumer, as for the other sides
    js = nc.jetstream()
    while True:  # every job acked, as for the other sides
        info = await js.consumer_info(stream, "worker")
        if info.num_ack_pending == 0 and info.num_pending == 0:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - began
    growth = rss_kib() - before
    await broker.stop()
    await js.delete_stream(stream)
    await nc.close()
    return count / elapsed, growth


def run(url: str, count: int, rep: int) -> Result:
    jobs_per_s, growth = asyncio.run(_jobs(url, f"FASTSTREAM{rep}", count))
    return Result("FastStream (asyncio)", jobs_per_s, rss_growth_kib=growth)
