"""``megatrio run`` of an App with jobs on a real JetStream (a private ``nats-server -js``):
at-least-once across a killed worker, the dead-letter queue, the connection in the tree."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import nats

from ..servers import NatsServer
from .cli_support import Server


def served(nats_server: NatsServer) -> Server:
    return Server(
        "jobs_app:app", "--grace-seconds", "5", env={"MEGATRIO_NATS_URL": nats_server.url}
    )


def dead_letters(url: str) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info("MEGATRIO_JOBSAPP_DLQ")
            letters = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg("MEGATRIO_JOBSAPP_DLQ", seq)
                assert msg.data is not None
                letters.append(json.loads(msg.data))
            return letters
        finally:
            await nc.close()

    return asyncio.run(read())


def child(tree: dict[str, object], name: str) -> dict[str, object]:
    [found] = [c for c in tree["children"] if c["name"] == name]  # type: ignore[attr-defined]
    return found  # type: ignore[no-any-return]


def test_jobs_run_on_jetstream_with_the_connection_in_the_tree(nats: NatsServer) -> None:
    server = served(nats)
    try:
        assert json.loads(server.get("/enqueue?name=ada")[1]) == {"sequence": 1}
        server.wait_line("handled job for ada after 1 attempts")
        server.get("/enqueue?name=bob&fail")
        server.wait_line("handled job for bob after 2 attempts")
        tree = json.loads(server.get("/_megatrio/tree", base=server.admin)[1])
        connection = child(tree, "nats")["info"]
        assert connection["nats_state"] == "connected"  # type: ignore[index]
        assert connection["nats_url"] == nats.url  # type: ignore[index]
        assert child(tree, "jobs-advisories")["state"] == "running"
        [greet] = [
            c
            for c in child(tree, "jobs")["supervisor"]["children"]  # type: ignore[index]
            if c["name"] == "greet"
        ]
        assert (greet["info"]["acked"], greet["info"]["retried"]) == (2, 1)
        server.signal(signal.SIGTERM)
        assert server.finish() == 0
    finally:
        server.kill()


def test_a_job_whose_worker_is_killed_is_redelivered_and_completed(nats: NatsServer) -> None:
    first = served(nats)
    try:
        first.get("/enqueue/slow?id=j1&seconds=30")
        first.wait_line("slow job j1 started")
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.kill()
    # The job was never acknowledged: after its ack wait (2 s) another worker gets it.
    second = served(nats)
    try:
        second.get("/enqueue/slow?id=j2&seconds=0")
        second.wait_line("slow job j2 done")
        began = time.monotonic()
        second.wait_line("slow job j1 started", timeout=20)
        assert time.monotonic() - began < 10
        stop_began = time.monotonic()
        second.signal(signal.SIGTERM)
        # Stopping with j1 in flight: it gets 80% of the grace, then it is handed back (nak)
        # for the next worker at once: nothing lost, nothing acked twice.
        assert second.finish() == 0
        assert 3.5 < time.monotonic() - stop_began < 5
    finally:
        second.kill()
    third = served(nats)
    try:
        third.wait_line("slow job j1 started", timeout=20)
    finally:
        third.signal(signal.SIGTERM)
        third.finish()


def test_a_poison_job_lands_in_the_dead_letter_queue_with_its_envelope(nats: NatsServer) -> None:
    server = served(nats)
    try:
        server.get("/enqueue/poison?id=p1")
        server.wait_line("dead-letter", timeout=20)
        [letter] = dead_letters(nats.url)
        assert letter["job"] == "poison"
        assert letter["deliveries"] == 2
        assert letter["reason"] == "max deliveries"
        assert letter["error_type"] == "ValueError"
        assert letter["error_message"] == "poison p1 always fails"
        assert "always fails" in str(letter["traceback"])
        assert json.loads(str(letter["payload"])) == {"id": "p1", "seconds": 0.0}
        assert letter["subject"] == "megatrio.jobsapp.jobs.poison"
        server.signal(signal.SIGTERM)
        assert server.finish() == 0
    finally:
        server.kill()
