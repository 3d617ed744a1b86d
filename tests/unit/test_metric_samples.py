"""Service metric samples: how the exporter turns them into families, how a cluster primary
totals its workers', and how they travel on the status pipe."""

from __future__ import annotations

import logging
import os

import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from megatrio import App, mega_runtime
from megatrio._samples import Sample, counter_sample, from_data, gather, gauge_sample, to_data
from megatrio.cli._protocol import WorkerStatus
from megatrio.cli._tree_report import TreeReporter
from megatrio.services.http._metrics import ClusterSamples, registry_for, sample_families

Series = dict[str, dict[tuple[tuple[str, str], ...], float]]


def exported(snapshot: dict[str, object], samples: list[Sample]) -> Series:
    text = generate_latest(registry_for(lambda: snapshot, None, lambda: samples)).decode()
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


ROOT = {"name": "app", "path": "app", "children": [], "give_ups": 0}


def test_samples_become_families_by_name_and_a_series_reported_twice_is_summed() -> None:
    samples = [
        counter_sample("megatrio_cache_requests", "lookups", 3, alias="a", result="hit"),
        counter_sample("megatrio_cache_requests", "lookups", 2, alias="a", result="hit"),
        counter_sample("megatrio_cache_requests", "lookups", 1, alias="a", result="miss"),
        gauge_sample("megatrio_cache_bytes", "bytes", 10, alias="a"),
        # Disagrees with the first sample of its name about the kind: left out.
        gauge_sample("megatrio_cache_requests", "lookups", 99, alias="b", result="hit"),
    ]
    found = exported(ROOT, samples)
    requests = found["megatrio_cache_requests_total"]
    assert requests == {
        (("alias", "a"), ("result", "hit")): 5.0,
        (("alias", "a"), ("result", "miss")): 1.0,
    }
    assert found["megatrio_cache_bytes"] == {(("alias", "a"),): 10.0}


def test_supervisor_give_ups_are_exported_for_the_root_and_nested_supervisors() -> None:
    nested = {"name": "pool", "children": [], "give_ups": 2, "restarts_in_window": 0}
    root = {**ROOT, "children": [{"name": "pool", "state": "running", "supervisor": nested}]}
    found = exported(root, [])
    assert found["megatrio_supervisor_give_ups_total"] == {
        (("path", "app"),): 0.0,
        (("path", "app/pool"),): 2.0,
    }


def test_a_source_that_raises_is_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> list[Sample]:
        raise ZeroDivisionError

    def fine() -> list[Sample]:
        return [counter_sample("megatrio_x", "x", 1)]

    with caplog.at_level(logging.ERROR, logger="megatrio.metrics"):
        assert gather([broken, fine]) == [counter_sample("megatrio_x", "x", 1)]
    assert "left out" in caplog.text


def test_samples_survive_the_pipe_and_malformed_rows_are_skipped() -> None:
    samples = [counter_sample("megatrio_a", "a", 1, k="v"), gauge_sample("megatrio_b", "b", 2.5)]
    assert list(from_data(to_data(samples))) == samples
    rows = [*to_data(samples), ["x"], ["megatrio_c", "histogram", "", [], 1], "junk"]
    assert list(from_data(rows)) == samples
    assert list(from_data({"not": "rows"})) == []


def test_cluster_counters_outlive_a_worker_and_gauges_are_per_live_worker() -> None:
    cluster = ClusterSamples()

    def worker(hits: float, entries: float) -> list[Sample]:
        return [
            counter_sample("megatrio_cache_requests", "h", hits, alias="default", result="hit"),
            gauge_sample("megatrio_cache_entries", "e", entries, alias="default"),
        ]

    cluster.update(1, worker(10, 3))
    cluster.update(2, worker(5, 4))
    cluster.update(1, worker(12, 3))  # a later report replaces the earlier one

    def totals() -> Series:
        series: Series = {}
        for family in sample_families(cluster.samples()):
            for s in family.samples:
                key = tuple(sorted(s.labels.items()))
                series.setdefault(s.name, {})[key] = s.value
        return series

    hit = (("alias", "default"), ("result", "hit"))
    assert totals()["megatrio_cache_requests_total"] == {hit: 17.0}
    assert totals()["megatrio_cache_entries"] == {
        (("alias", "default"), ("worker", "1")): 3.0,
        (("alias", "default"), ("worker", "2")): 4.0,
    }
    cluster.retire(1)  # it exited; its replacement starts from zero
    cluster.update(1, worker(1, 0))
    assert totals()["megatrio_cache_requests_total"] == {hit: 18.0}
    cluster.retire(2)
    cluster.retire(2)  # twice is once
    assert totals()["megatrio_cache_requests_total"] == {hit: 18.0}
    assert totals()["megatrio_cache_entries"] == {
        (("alias", "default"), ("worker", "1")): 0.0,
    }


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_report_cut_off_by_a_full_pipe_costs_only_itself(anyio_backend: str) -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    app = App("reported")
    async with mega_runtime(name="reported") as rt:
        app._attach(rt)
        # Lines longer than PIPE_BUF (4 KiB): only those can be torn (shorter writes to a
        # pipe are atomic).
        many = [counter_sample("megatrio_x", "x", 7, n=str(n)) for n in range(200)]
        rt.metric_sources.add("x", lambda: many)
        reporter = TreeReporter(os.fdopen(write_fd, "wb", buffering=0), app)
        status = WorkerStatus()

        def drain() -> None:
            while True:
                try:
                    chunk = os.read(read_fd, 1 << 20)
                except BlockingIOError:
                    return
                if not chunk:
                    return
                status.feed(chunk)

        assert await reporter.send()
        drain()
        assert status.tree is not None
        assert status.tree["name"] == "reported"
        assert status.samples == many
        # Nobody reads: the pipe fills, and a report is cut off mid-line after a second.
        status.samples = None
        with trio.fail_after(30):
            while True:
                start = trio.current_time()
                await reporter.send()
                if trio.current_time() - start >= 0.9:
                    break
        drain()  # the torn line is still in the buffer, unterminated
        status.samples = None
        await reporter.final()  # starts on a fresh line, then closes the pipe
        drain()
        assert status.samples == many
        assert os.read(read_fd, 1) == b""  # EOF: the reporter closed its end
        assert not await reporter.send()
        os.close(read_fd)
        app._attach(None)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_cancelled_last_report_still_closes_the_pipe(anyio_backend: str) -> None:
    read_fd, write_fd = os.pipe()
    app = App("reported")
    async with mega_runtime(name="reported") as rt:
        app._attach(rt)
        reporter = TreeReporter(os.fdopen(write_fd, "wb", buffering=0), app)
        assert await reporter.send()
        with trio.CancelScope() as scope:
            scope.cancel()
            await reporter.final()
        assert scope.cancelled_caught
        os.set_blocking(read_fd, False)
        data = os.read(read_fd, 1 << 16)
        assert data.startswith(b"tree ")
        assert os.read(read_fd, 1) == b""  # EOF, not BlockingIOError: the write end closed
        os.close(read_fd)
        app._attach(None)
