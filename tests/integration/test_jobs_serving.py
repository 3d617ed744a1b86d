"""``megatrio run`` of an App with a job: served in a real process, on the embedded engine."""

from __future__ import annotations

import json
import signal

from .cli_support import Server
from .scrape import metrics_of


def test_a_served_app_handles_enqueued_jobs_under_a_jobs_supervisor() -> None:
    server = Server("jobs_app:app")
    try:
        status, body = server.get("/enqueue?name=ada")
        assert (status, json.loads(body)) == (200, {"sequence": 1})
        server.wait_line("handled job for ada after 1 attempts")
        assert json.loads(server.get("/enqueue?name=bob&fail")[1]) == {"sequence": 2}
        server.wait_line("handled job for bob after 2 attempts")
        tree = json.loads(server.get("/_megatrio/tree", base=server.admin)[1])
        [jobs] = [c for c in tree["children"] if c["name"] == "jobs"]
        # One consumer per declared job (jobs_app declares greet, slow and poison).
        consumers = {c["name"]: c for c in jobs["supervisor"]["children"]}
        assert set(consumers) == {"greet", "slow", "poison"}
        consumer = consumers["greet"]
        assert consumer["restarts"] == 0
        info = consumer["info"]
        assert (info["acked"], info["retried"], info["in_flight"]) == (2, 1, 0)
        metrics = metrics_of(server.get("/metrics", base=server.admin)[1].encode())
        handled = metrics["megatrio_jobs_handled_total"]
        assert handled[(("job", "greet"), ("outcome", "acked"))] == 2
        assert handled[(("job", "greet"), ("outcome", "retried"))] == 1
        assert handled[(("job", "slow"), ("outcome", "acked"))] == 0
        assert metrics["megatrio_jobs_enqueued_total"][(("job", "greet"),)] == 2
        assert metrics["megatrio_jobs_in_flight"][(("job", "greet"),)] == 0
        server.signal(signal.SIGTERM)
        assert server.finish() == 0
    finally:
        server.kill()
    failures = [r for r in server.records() if "delivery 1 failed" in r["event"]]
    assert len(failures) == 1
    assert failures[0]["level"] == "warning"
