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
- ``megatrio_supervisor_restarts_in_window{path}`` and
  ``megatrio_supervisor_give_ups_total{path}`` for each supervisor;
- every :class:`~megatrio._samples.Sample` the services report (``Runtime.metric_sources``:
  the caches' ``megatrio_cache_requests_total{alias,result}``,
  ``megatrio_cache_evictions_total{alias,reason}``, ``megatrio_cache_entries``,
  ``megatrio_cache_bytes``; the nonce store's ``megatrio_nonce_checks_total{verdict}``; the
  alert dispatcher's ``megatrio_alerts_sent_total``, ``megatrio_alerts_dropped_total{reason}``,
  ``megatrio_retry_queue_depth{queue}``, ``megatrio_retry_queue_drops_total{queue,reason}``),
  by the family each names; values of the same series are summed;
- with :class:`~._access.HttpMetrics` (or a callable giving one: a cluster primary sums its
  workers'): ``megatrio_http_requests_total{method,route,status}``,
  ``megatrio_http_request_duration_seconds`` (a histogram) and
  ``megatrio_http_requests_in_flight``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ..._samples import COUNTER, Kind, Sample
from ._access import HttpMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class TreeCollector(Collector):
    """Metric families from *snapshot* (a runtime's) and *http*, read at each scrape."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        http: HttpMetrics | Callable[[], HttpMetrics] | None = None,
        samples: Callable[[], Iterable[Sample]] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._http = http
        self._samples = samples

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
        give_ups = CounterMetricFamily(
            "megatrio_supervisor_give_ups",
            "times the supervisor gave up (one restart too many in its window)",
            labels=["path"],
        )
        root = self._snapshot()
        root_path = str(root.get("path") or root.get("name", "root"))
        window.add_metric([root_path], float(root.get("restarts_in_window", 0)))
        give_ups.add_metric([root_path], float(root.get("give_ups", 0)))
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
                give_ups.add_metric([path], float(nested.get("give_ups", 0)))
        yield from (up, state, restarts, uptime, stats, window, give_ups)
        if self._http is not None:
            http = self._http if isinstance(self._http, HttpMetrics) else self._http()
            yield from _http_families(http)
        if self._samples is not None:
            yield from sample_families(self._samples())


def sample_families(samples: Iterable[Sample]) -> Iterator[Metric]:
    """Metric families of *samples*, by name; a series reported twice is summed. A sample whose
    kind differs from the first one of its name is left out (two sources disagreeing)."""
    families: dict[str, tuple[Kind, str, dict[tuple[tuple[str, str], ...], float]]] = {}
    for sample in samples:
        family = families.get(sample.name)
        if family is None:
            family = families[sample.name] = (sample.kind, sample.help, {})
        elif family[0] != sample.kind:
            continue
        series = family[2]
        series[sample.labels] = series.get(sample.labels, 0.0) + sample.value
    for name, (kind, help_text, series) in sorted(families.items()):
        label_names = sorted({label for labels in series for label, _ in labels})
        metric: CounterMetricFamily | GaugeMetricFamily
        if kind == COUNTER:
            metric = CounterMetricFamily(name, help_text, labels=label_names)
        else:
            metric = GaugeMetricFamily(name, help_text, labels=label_names)
        for labels, value in sorted(series.items()):
            values = dict(labels)
            metric.add_metric([values.get(label, "") for label in label_names], value)
        yield metric


@final
class ClusterSamples:
    """The samples of a cluster's workers, as the primary exports them.

    Counters are summed over the workers, and a worker that exits leaves its last counts
    behind (:meth:`retire`), so a cluster counter never goes down when a worker restarts.
    Gauges are what each live worker has now, labelled ``worker`` (a sum would double a
    shared store's size).
    """

    def __init__(self) -> None:
        self._live: dict[int, list[Sample]] = {}
        self._retired: dict[tuple[str, tuple[tuple[str, str], ...]], Sample] = {}

    def update(self, worker: int, samples: Iterable[Sample]) -> None:
        """*worker*'s latest report (it replaces the one before)."""
        self._live[worker] = list(samples)

    def retire(self, worker: int) -> None:
        """*worker* exited: its counters join the retired totals, its gauges go."""
        for sample in self._live.pop(worker, ()):
            if sample.kind != COUNTER:
                continue
            key = sample.key()
            kept = self._retired.get(key)
            value = sample.value if kept is None else kept.value + sample.value
            self._retired[key] = sample._replace(value=value)

    def samples(self) -> Iterator[Sample]:
        yield from self._retired.values()
        for worker, samples in sorted(self._live.items()):
            for sample in samples:
                if sample.kind == COUNTER:
                    yield sample
                else:
                    labels = tuple(sorted((*sample.labels, ("worker", str(worker)))))
                    yield sample._replace(labels=labels)


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
    samples: Callable[[], Iterable[Sample]] | None = None,
) -> CollectorRegistry:
    """A registry of its own (not prometheus-client's process-wide default) with the tree."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TreeCollector(snapshot, http, samples))
    return registry
