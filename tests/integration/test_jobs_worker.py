"""``megatrio worker``: an App's job consumers without HTTP, in one process or under a
primary, on a real JetStream (a private ``nats-server -js``)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import urllib.request

import nats

from ..servers import NatsServer
from .cli_support import Process


def worker(nats_server: NatsServer, *extra: str) -> tuple[Process, str]:
    """``megatrio worker jobs_app:app`` and the URL of its admin listener."""
    proc = Process(
        [
            "worker",
            "jobs_app:app",
            "--admin-bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--grace-seconds",
            "5",
            *extra,
        ],
        env={"MEGATRIO_NATS_URL": nats_server.url},
    )
    line = proc.wait_line("serving admin on")
    match = re.search(r"serving admin on (http://\S+?)\"", line)
    assert match, line
    return proc, match[1]


def enqueue(url: str, job: str, payloads: list[dict[str, object]]) -> None:
    """Publish jobs the way ``rt.jobs.enqueue`` does, from outside megatrio."""

    async def publish() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            for payload in payloads:
                await js.publish(f"megatrio.jobsapp.jobs.{job}", json.dumps(payload).encode())
        finally:
            await nc.close()

    asyncio.run(publish())


def tree(admin: str) -> dict[str, object]:
    with urllib.request.urlopen(admin + "/_megatrio/tree", timeout=10) as response:
        found: dict[str, object] = json.loads(response.read())
    return found


def test_a_worker_runs_the_consumers_and_no_http(nats: NatsServer) -> None:
    proc, admin = worker(nats)
    try:
        proc.wait_line("NATS connection")
        snapshot = tree(admin)
        names = [c["name"] for c in snapshot["children"]]  # type: ignore[attr-defined]
        assert "http" not in names
        assert {"nats", "jobs-advisories", "jobs", "admin"} <= set(names)
        enqueue(nats.url, "greet", [{"name": "ada"}, {"name": "bob"}])
        proc.wait_line("handled job for ada after 1 attempts")
        proc.wait_line("handled job for bob after 1 attempts")
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.finish() == 0
    finally:
        proc.kill()


def test_workers_under_a_primary_share_the_jobs(nats: NatsServer) -> None:
    proc, admin = worker(nats, "--workers", "2")
    try:
        proc.wait_line("serving job consumers with 2 worker(s)")

        def both_ready() -> bool:
            [workers] = [c for c in tree(admin)["children"] if c["name"] == "workers"]  # type: ignore[attr-defined]
            children = workers["supervisor"]["children"]
            return len(children) == 2 and all(c.get("info", {}).get("ready") for c in children)

        proc.wait_for(both_ready, 30, "both workers ready")
        names = [f"w{i}" for i in range(40)]
        enqueue(nats.url, "greet", [{"name": name} for name in names])
        for name in names:
            proc.wait_line(f"handled job for {name} after 1 attempts")
        handlers = {
            record.get("worker")
            for record in proc.records()
            if "handled job for" in str(record.get("event"))
        }
        assert handlers == {1, 2}
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.finish() == 0
    finally:
        proc.kill()


def test_an_app_without_jobs_is_a_usage_error_in_both_modes() -> None:
    for extra in ([], ["--workers", "2"]):
        proc = Process(["worker", "basic:Basic", "--admin-bind", "", *extra])
        assert proc.finish() == 2, proc.err
        assert proc.err == [
            "megatrio: error: app 'basic' declares no jobs: megatrio worker has nothing to run"
        ]
