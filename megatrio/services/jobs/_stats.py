"""What one job's consumers did in this process: the counts behind its metrics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, final

from ..._samples import Sample, counter_sample, gauge_sample

OUTCOMES: Final = ("acked", "retried", "termed", "dead_lettered", "released")
"""How a delivery's handling ended: acked; nak'ed for a retry; termed (the engine dead-letters
it); dead-lettered by the consumer; released unfinished at a stop."""


@final
class JobStats:
    """Counts of one job over every run of its consumer in this process (a consumer that
    restarts keeps adding to them), and the handlers running now."""

    __slots__ = ("counts", "enqueued", "in_flight")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.enqueued = 0
        self.in_flight = 0


def job_samples(stats: Iterable[tuple[str, JobStats]]) -> Iterator[Sample]:
    """The jobs' metrics: deliveries handled by outcome, enqueued, in flight, per job."""
    for job, job_stats in stats:
        for outcome, count in job_stats.counts.items():
            yield counter_sample(
                "megatrio_jobs_handled",
                "deliveries handled, by how the handling ended",
                count,
                job=job,
                outcome=outcome,
            )
        yield counter_sample(
            "megatrio_jobs_enqueued", "jobs enqueued by this process", job_stats.enqueued, job=job
        )
        yield gauge_sample(
            "megatrio_jobs_in_flight", "handlers running", job_stats.in_flight, job=job
        )
