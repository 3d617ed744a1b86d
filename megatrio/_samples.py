"""Metric samples: the plain-data vocabulary in which services report their counters.

A service that counts something (a cache's hits, a nonce store's replays, the alert
dispatcher's drops) registers a *source* — a callable returning :class:`Sample` values — in
``Runtime.metric_sources``; the admin listener's ``/metrics`` reads every source at scrape
time, and a cluster worker sends the same samples to its primary. A sample names its
Prometheus family and type itself, so a new counter needs no change to the exporter.

Imports nothing of megatrio, so every layer may use it (like ``_registry``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Literal, NamedTuple

log = logging.getLogger("megatrio.metrics")

Kind = Literal["counter", "gauge"]
COUNTER: Final = "counter"
GAUGE: Final = "gauge"


class Sample(NamedTuple):
    """One value of one metric family.

    *name* is the family's Prometheus name (``megatrio_cache_requests``; a counter's
    ``_total`` suffix is added by the exporter). A counter only grows for as long as its
    process lives; a gauge may go either way.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (self.name, self.labels)


SampleSource = Callable[[], Iterable[Sample]]
"""What a service registers in ``Runtime.metric_sources``: called at each scrape, from the
runtime's event loop, it must not block or await."""


def counter_sample(name: str, help: str, value: float, **labels: str) -> Sample:
    """A counter's value now: ``counter_sample("myapp_widgets", "widgets made", 3, kind="a")``."""
    return Sample(name, COUNTER, help, tuple(sorted(labels.items())), float(value))


def gauge_sample(name: str, help: str, value: float, **labels: str) -> Sample:
    """A gauge's value now (it may go either way)."""
    return Sample(name, GAUGE, help, tuple(sorted(labels.items())), float(value))


def gather(sources: Iterable[SampleSource]) -> list[Sample]:
    """Every sample of *sources*. A source that raises is left out of this scrape and logged:
    one broken counter must not hide every other metric."""
    samples: list[Sample] = []
    for source in sources:
        try:
            samples.extend(source())
        except Exception:
            log.exception("metric source %r failed; its samples are left out", source)
    return samples


def to_data(samples: Iterable[Sample]) -> list[list[Any]]:
    """JSON-serialisable rows (what a cluster worker reports to its primary)."""
    return [[s.name, s.kind, s.help, [list(pair) for pair in s.labels], s.value] for s in samples]


def from_data(rows: object) -> Iterator[Sample]:
    """The samples of :func:`to_data`'s rows. A malformed row is skipped: it came from another
    process, whose failure must not fail the scrape."""
    if not isinstance(rows, list):
        return
    for row in rows:
        try:
            name, kind, help_text, labels, value = row
            if kind not in (COUNTER, GAUGE) or not isinstance(name, str):
                continue
            pairs = tuple((str(k), str(v)) for k, v in labels)
            yield Sample(name, kind, str(help_text), pairs, float(value))
        except (TypeError, ValueError):
            continue
