"""Job consumers under trio, through the NATS bridge, while their nats-server restarts: the
connection reconnects, the consumers carry on, and every job is handled — none lost."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import megatrio
from megatrio._config import Config
from megatrio._exceptions import BackendUnavailable
from megatrio.app._jobs import open_job_engine
from megatrio.services.jobs._jobs import Jobs

from ..servers import NatsServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # a real server needs the real clock


def consumed(rt: megatrio.Runtime) -> dict[str, Any]:
    [jobs] = [c for c in rt.snapshot()["children"] if c["name"] == "jobs"]
    [work] = jobs["supervisor"]["children"]
    return work  # type: ignore[no-any-return]


async def test_consumers_ride_out_a_server_restart_and_lose_no_job(nats: NatsServer) -> None:
    handled: dict[int, int] = {}
    app = megatrio.App("restarts")

    @app.job("work", concurrency=8, ack_wait_seconds=2, retry_delays=(0.2,))
    async def work(payload: Any) -> None:
        handled[payload["n"]] = handled.get(payload["n"], 0) + 1
        await trio.sleep(0.01)

    async def enqueue(jobs: Jobs, n: int) -> None:
        # The same msg id on every attempt: a retry after a lost answer never duplicates.
        while True:
            try:
                await jobs.enqueue("work", {"n": n}, msg_id=f"job-{n}")
                return
            except BackendUnavailable:
                await trio.sleep(0.1)

    with trio.fail_after(90):
        async with (
            megatrio.mega_runtime(name=app.name, handle_signals=False) as rt,
            open_job_engine(Config(nats_url=nats.url), app.name) as engine,
        ):
            jobs = Jobs(engine.driver, app.job_specs())
            await jobs.declare()
            await rt.start_child(jobs.child_spec())
            for n in range(100):
                await enqueue(jobs, n)
            while len(handled) < 30:  # noqa: ASYNC110
                await trio.sleep(0.01)
            # Mid-stream: jobs in flight, others queued.
            await trio.to_thread.run_sync(nats.restart)
            async with trio.open_nursery() as nursery:
                for n in range(100, 200):
                    nursery.start_soon(enqueue, jobs, n)
            while len(handled) < 200 or consumed(rt)["info"]["acked"] < 200:  # noqa: ASYNC110
                await trio.sleep(0.05)
            assert engine.connection is not None
            assert engine.connection.status.reconnects >= 1
            info = consumed(rt)
            await rt.stop_child("jobs")  # while the engine is still open
    assert set(handled) == set(range(200))
    # At least once: a job in flight across the restart may run twice, never zero times.
    assert sum(handled.values()) >= 200
    assert info["state"] == "running"


async def test_a_consumer_never_holds_more_than_its_slots_on_the_server(nats: NatsServer) -> None:
    running = 0
    peak = 0
    release = trio.Event()
    app = megatrio.App("slots")

    @app.job("work", concurrency=3)
    async def work(payload: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1

    with trio.fail_after(60):
        async with (
            open_job_engine(Config(nats_url=nats.url), app.name) as engine,
            megatrio.mega_runtime(name=app.name, handle_signals=False) as rt,
        ):
            jobs = Jobs(engine.driver, app.job_specs())
            await jobs.declare()
            for n in range(10):
                await jobs.enqueue("work", {"n": n})
            await rt.start_child(jobs.child_spec())
            assert engine.connection is not None
            assert engine.jetstream is not None
            conn, stream = engine.connection, engine.jetstream.stream
            js = conn.client.jetstream()
            while running < 3:  # noqa: ASYNC110
                await trio.sleep(0.01)
            await trio.sleep(0.5)  # what more the consumer would ask for, it has asked
            # The server's own view: 3 delivered and unacknowledged, 7 never handed out.
            info = await conn.run(js.consumer_info, stream, "slots_work")
            assert (info.num_ack_pending, info.num_pending) == (3, 7)
            release.set()
            while consumed(rt)["info"]["acked"] < 10:  # noqa: ASYNC110
                await trio.sleep(0.05)
            await rt.stop_child("jobs")
    assert peak == 3
