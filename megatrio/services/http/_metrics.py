"""Prometheus metrics for the admin listener's ``/metrics``, built at scrape time.

Nothing is instrumented twice: the supervision tree already knows every child's state,
restarts, uptime and counters (what a service annotates on itself — a job consumer's
``acked``, the hub's ``connections``, a cache cleaner's evictions...), so a scrape reads
:meth:`Runtime.snapshot` and turns it into metric families with prometheus-client's own
types. A child path is ``root/jobs/email.send``.

- ``megatrio_child_up{path}`` 1 while running; ``megatrio_child_state{path,state}`` 1 for its
  state; ``megatrio_child_restarts_total{path}``; ``megatrio_child_uptime_seconds{path}``;
- ``megatrio_child_stat{path,stat}``: every numeric annotation of the child, by name (a new
  counter a service annotates is exported without any change here); a mapping of numbers
  (``closes`` by code) becomes ``stat="closes_1013"``;
- ``megatrio_supervisor_restarts_in_window{path}`` for each supervisor;
- with :class:`~._access.HttpMetrics` (or a callable giving one: a cluster primary sums its
  workers'): ``megatrio_http_requests_total{method,route,status}``,
  ``megatrio_http_request_duration_seconds`` (a histogram) and
  ``megatrio_http_requests_in_flight``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ._access import HttpMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class TreeCollector(Collector):
    """Metric families from *snapshot* (a runtime's) and *http*, read at each scrape."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        http: HttpMetrics | Callable[[], HttpMetrics] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._http = http

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("megatrio_child_up", "1 while the child runs", labels=["path"])
        state = GaugeMetricFamily(
            "megatrio_child_state", "1 for the child's state", labels=["path", "state"]
        )
        restarts = CounterMetricFamily(
            "megatrio_child_restarts", "restarts of the child", labels=["path"]
        )
        uptime = GaugeMetricFamily(
            "megatrio_child_uptime_seconds", "since the child last started", labels=["path"]
        )
        stats = GaugeMetricFamily(
            "megatrio_child_stat", "a numeric annotation of the child", labels=["path", "stat"]
        )
        window = GaugeMetricFamily(
            "megatrio_supervisor_restarts_in_window",
            "restarts counted against the supervisor's intensity now",
            labels=["path"],
        )
        root = self._snapshot()
        root_path = str(root.get("path") or root.get("name", "root"))
        window.add_metric([root_path], float(root.get("restarts_in_window", 0)))
        for path, child in _children(root, root_path):
            current = str(child.get("state", "unknown"))
            up.add_metric([path], 1.0 if current == "running" else 0.0)
            state.add_metric([path, current], 1.0)
            restarts.add_metric([path], float(child.get("restarts", 0)))
            if isinstance(child.get("uptime_seconds"), int | float):
                uptime.add_metric([path], float(child["uptime_seconds"]))
            for stat, value in _numbers(child.get("info") or {}):
                stats.add_metric([path, stat], value)
            nested = child.get("supervisor")
            if isinstance(nested, dict):
                window.add_metric([path], float(nested.get("restarts_in_window", 0)))
        yield from (up, state, restarts, uptime, stats, window)
        if self._http is not None:
            http = self._http if isinstance(self._http, HttpMetrics) else self._http()
            yield from _http_families(http)


def _children(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every child below *node* (nested supervisors' children included), with its path."""
    for child in node.get("children", ()):
        child_path = f"{path}/{child['name']}"
        yield child_path, child
        nested = child.get("supervisor")
        if isinstance(nested, dict):
            yield from _children(nested, child_path)


def _numbers(info: dict[str, Any]) -> Iterator[tuple[str, float]]:
    for key, value in info.items():
        if isinstance(value, int | float):  # bool included: True is 1.0
            yield key, float(value)
        elif isinstance(value, dict):
            for sub, number in value.items():
                if isinstance(number, int | float) and not isinstance(number, bool):
                    yield f"{key}_{sub}", float(number)


def _http_families(http: HttpMetrics) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "megatrio_http_requests",
        "HTTP requests served, by route template and status",
        labels=["method", "route", "status"],
    )
    for (method, route, status), count in sorted(http.requests.items()):
        requests.add_metric([method, route, str(status)], float(count))
    yield requests
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(http.buckets, http.latency_counts, strict=False):
        running += count
        buckets.append((repr(float(bound)), float(running)))
    running += http.latency_counts[-1]
    buckets.append(("+Inf", float(running)))
    histogram = HistogramMetricFamily(
        "megatrio_http_request_duration_seconds", "time from request to complete response"
    )
    histogram.add_metric([], buckets, sum_value=http.latency_sum)
    yield histogram
    yield GaugeMetricFamily(
        "megatrio_http_requests_in_flight", "HTTP requests being handled", value=http.in_flight
    )


def registry_for(
    snapshot: Callable[[], dict[str, Any]],
    http: HttpMetrics | Callable[[], HttpMetrics] | None = None,
) -> CollectorRegistry:
    """A registry of its own (not prometheus-client's process-wide default) with the tree."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TreeCollector(snapshot, http))
    return registry
