"""``megatrio run --workers N``: a real primary and real worker processes."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cli_support import Process

_URL = re.compile(r"serving (http://\S+) with (\d+) worker")


class Primary(Process):
    """``megatrio run TARGET --workers N`` on free loopback ports."""

    def __init__(self, target: str, workers: int, *extra: str, wait_ready: bool = True) -> None:
        super().__init__(
            [
                "run",
                target,
                "--workers",
                str(workers),
                "--bind",
                "127.0.0.1:0",
                "--admin-bind",
                "127.0.0.1:0",
                "--log-format",
                "json",
                *extra,
            ]
        )
        self.workers = workers
        self.admin = self.wait_for(lambda: self._find(r"serving admin on (http://\S+)"), 30)
        self.url = self.wait_for(lambda: self._find(r"serving (http://\S+) with"), 30)
        if wait_ready:
            self.wait_for(lambda: len(self.ready_pids()) == workers, 30, "all workers ready")

    def _find(self, pattern: str) -> str | None:
        for record in self.records():
            match = re.search(pattern, str(record.get("event", "")))
            primary_line = "worker" not in record  # workers tag their records
            if (
                match
                and primary_line
                and record.get("logger") in {"megatrio.http", "megatrio.cluster"}
            ):
                return match[1]
        return None

    def tree(self) -> dict[str, object]:
        import urllib.request

        with urllib.request.urlopen(self.admin + "/_megatrio/tree", timeout=10) as response:
            tree: dict[str, object] = json.loads(response.read())
        return tree

    def workers_info(self) -> list[dict[str, object]]:
        tree = self.tree()
        [workers] = [c for c in tree["children"] if c["name"] == "workers"]  # type: ignore[attr-defined]
        children: list[dict[str, object]] = workers["supervisor"]["children"]
        return children

    def ready_pids(self) -> list[int]:
        try:
            return [
                int(w["info"]["pid"])  # type: ignore[index]
                for w in self.workers_info()
                if w.get("info", {}).get("ready")  # type: ignore[union-attr]
            ]
        except OSError:
            return []

    def get(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def serving_pids(self, expected: set[int], timeout: float = 20) -> set[str]:
        """The pids that answered ``GET /pid``, sending bursts of concurrent requests until
        every one of *expected* has answered or *timeout* runs out.

        The workers share one listening socket and whichever wakes first accepts, so a warm
        worker on a loaded machine can win many sequential requests in a row; concurrent ones
        reach the others.
        """
        from concurrent.futures import ThreadPoolExecutor

        want = {str(p) for p in expected}
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(8) as pool:
            while not want <= seen and time.monotonic() < deadline:
                seen |= {body for _, body in pool.map(self.get, ["/pid"] * 16)}
        return seen


def gone(pid: int) -> bool:
    """The process no longer runs (it does not exist, or is a zombie awaiting its reaper)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state


@pytest.fixture
def primary() -> Iterator[Primary]:
    p = Primary("basic:Basic", 2, "--grace-seconds", "10")
    yield p
    p.kill()
    for pid in p.ready_pids() if p.proc.poll() is None else []:
        os.kill(pid, signal.SIGKILL)


def test_requests_are_served_by_more_than_one_worker(primary: Primary) -> None:
    pids = primary.ready_pids()
    assert len(set(pids)) == 2
    assert primary.proc.pid not in pids
    assert primary.serving_pids(set(pids)) == {str(p) for p in pids}
    tree = primary.workers_info()
    assert [w["name"] for w in tree] == ["worker-1", "worker-2"]
    assert all(w["restarts"] == 0 for w in tree)
    # Uptime counts from readiness; a ready worker has some.
    assert all(w["uptime_seconds"] > 0 for w in tree)  # type: ignore[operator]
    primary.signal(signal.SIGTERM)
    assert primary.finish() == 0


def test_a_killed_worker_is_replaced_and_serves_again(primary: Primary) -> None:
    old = primary.ready_pids()
    os.kill(old[0], signal.SIGKILL)
    t0 = time.monotonic()
    new = primary.wait_for(
        lambda: (p := primary.ready_pids()) and len(p) == 2 and old[0] not in p and p, 20
    )
    respawn = time.monotonic() - t0
    assert old[1] in new
    assert respawn < 10
    [replaced] = [w for w in primary.workers_info() if w["name"] == "worker-1"]
    assert replaced["restarts"] == 1
    assert "was killed by SIGKILL" in str(replaced["last_error"])
    [crash] = [r for r in primary.records() if "worker-1 crashed after" in r["event"]]
    assert not crash["event"].startswith("child primary/workers/worker-1 crashed after 0.000 s")
    assert primary.serving_pids(set(new)) == {str(p) for p in new}
    primary.signal(signal.SIGTERM)
    assert primary.finish() == 0


def test_sigterm_lets_slow_requests_finish_then_exits_zero(primary: Primary) -> None:
    results: list[tuple[int, str]] = []
    requests = [
        threading.Thread(target=lambda: results.append(primary.get("/slow?seconds=1.5")))
        for _ in range(4)
    ]
    for request in requests:
        request.start()
    primary.wait_for(
        lambda: sum(r["event"] == "slow request started" for r in primary.records()) == 4,
        what="4 requests in flight",
    )
    primary.signal(signal.SIGTERM)
    for request in requests:
        request.join(timeout=20)
    assert results == [(200, "slow done")] * 4
    assert primary.finish() == 0
    assert "stopping 2 worker(s) within 10 s" in {r["event"] for r in primary.records()}


def test_a_worker_stuck_past_the_grace_is_killed_and_the_exit_code_says_so() -> None:
    primary = Primary("basic:SlowStop", 1 + 1, "--grace-seconds", "0.5")
    try:
        primary.signal(signal.SIGTERM)
        assert primary.finish() == 3  # a forced stop
        assert any("had to be killed" in r["event"] for r in primary.records())
    finally:
        primary.kill()


def test_second_signal_kills_workers_at_once() -> None:
    primary = Primary("basic:SlowStop", 2, "--grace-seconds", "60")
    try:
        pids = primary.ready_pids()
        primary.signal(signal.SIGTERM)
        primary.wait_line("stopping 2 worker(s)")
        primary.signal(signal.SIGINT)
        assert primary.finish(timeout=15) == 3  # a forced stop, as with one process
        assert all(gone(pid) for pid in pids)
    finally:
        primary.kill()


def test_sigkill_of_the_primary_leaves_no_worker_behind(primary: Primary) -> None:
    pids = primary.ready_pids()
    primary.proc.kill()
    primary.finish()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids), "a worker outlived its primary"


def test_an_app_crashing_on_boot_makes_the_primary_give_up() -> None:
    t0 = time.monotonic()
    primary = Primary("boot_crash:app", 2, wait_ready=False)
    try:
        assert primary.finish(timeout=60) == 1
        elapsed = time.monotonic() - t0
        records = primary.records()
        [give_up] = [r for r in records if r["event"].startswith("giving up")]
        assert give_up["event"].startswith(
            "giving up: more than 4 rapid worker crashes (uptime under 1 s) within 10 s; last: "
        )
        assert "exited with code 1 during boot, before it was ready" in give_up["event"]
        assert elapsed < 30
        text = "\n".join(primary.out + primary.err)
        assert "abc123" not in text  # the boot traceback was redacted too
    finally:
        primary.kill()


def test_a_worker_that_cannot_find_the_app_stops_the_primary_with_exit_two() -> None:
    args = ["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0", "--log-format", "json"]
    proc = Process(["run", "basic:nothing_here", "--workers", "2", *args])
    assert proc.finish(timeout=30) == 2
    # Printed once for both workers; neither the admin listener nor the public one announced.
    assert proc.err == ["megatrio: error: module 'basic' has no attribute 'nothing_here'"]
    events = [r["event"] for r in proc.records()]
    assert not [e for e in events if "serving" in e or "crashed" in e]


def test_a_missing_module_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    proc = Process(["run", "no_such_module:app", "--workers", "2"])
    assert proc.finish() == 2
    assert proc.err[0].startswith("megatrio: error: module 'no_such_module' not found")


def test_the_cluster_is_one_tree_and_its_metrics_total_every_worker_across_a_restart(
    primary: Primary,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client.parser import text_string_to_metric_families

    def subtrees() -> dict[str, list[str]]:
        return {
            str(w["name"]): [c["name"] for c in w.get("supervisor", {}).get("children", [])]  # type: ignore[attr-defined]
            for w in primary.workers_info()
        }

    def scrape() -> list[Any]:
        import urllib.request

        with urllib.request.urlopen(primary.admin + "/metrics", timeout=10) as response:
            text = response.read().decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def served_total() -> float:
        return sum(
            sample.value
            for sample in scrape()
            if sample.name == "megatrio_http_requests_total" and sample.labels["route"] == "/"
        )

    def cache_hits() -> float:
        [hits] = [
            s.value
            for s in scrape()
            if s.name == "megatrio_cache_requests_total"
            and s.labels == {"alias": "default", "result": "hit"}
        ]
        return hits

    def entries_by_worker() -> dict[str, float]:
        return {
            s.labels["worker"]: s.value
            for s in scrape()
            if s.name == "megatrio_cache_entries" and s.labels["alias"] == "default"
        }

    # Each worker's own children, under that worker, in the primary's tree.
    trees = primary.wait_for(
        lambda: (t := subtrees()) and all("http" in c for c in t.values()) and t, 20
    )
    assert set(trees) == {"worker-1", "worker-2"}
    assert all({"http", "worker"} <= set(children) for children in trees.values())
    with ThreadPoolExecutor(8) as pool:
        assert all(status == 200 for status, _ in pool.map(primary.get, ["/"] * 40))
        assert all(status == 200 for status, _ in pool.map(primary.get, ["/cached"] * 20))
    primary.wait_for(lambda: served_total() == 40, 10, "40 requests in the cluster's /metrics")
    # The services' counters are summed over the workers; gauges are each worker's own.
    primary.wait_for(lambda: cache_hits() == 20, 10, "20 cache hits in the cluster's /metrics")
    assert set(entries_by_worker()) == {"1", "2"}
    assert 1 <= sum(entries_by_worker().values()) <= 2  # one key, in each worker that served it
    # kill -9 a worker: what it served stays counted; its replacement adds to it.
    old = primary.ready_pids()
    os.kill(old[0], signal.SIGKILL)
    primary.wait_for(lambda: (p := primary.ready_pids()) and len(p) == 2 and old[0] not in p, 20)
    assert served_total() == 40
    assert cache_hits() == 20
    with ThreadPoolExecutor(8) as pool:
        assert all(status == 200 for status, _ in pool.map(primary.get, ["/"] * 10))
        assert all(status == 200 for status, _ in pool.map(primary.get, ["/cached"] * 10))
    primary.wait_for(lambda: served_total() == 50, 10, "50 requests after the restart")
    primary.wait_for(lambda: cache_hits() == 30, 10, "30 cache hits after the restart")
    primary.signal(signal.SIGTERM)
    assert primary.finish() == 0
