"""Per-request observability: request ids, the access log, and the HTTP request metrics.

The App's ASGI layer (:func:`~._app_front.app_front`), for each HTTP request,

- takes the client's ``X-Request-ID`` (when it is a sane token: 1 to 128 characters of letters,
  digits and ``-_.:``) or makes one, puts it in :data:`REQUEST_ID` for everything that runs
  while the request is handled — every log record gets it as ``request_id`` — and returns it
  in the response's ``X-Request-ID`` header;
- logs one record on ``megatrio.access`` once the response is complete (unless the access log
  is off): method, path (the query string is not logged), status, duration, bytes sent, remote
  address, request id, and the supervision path of the task that logged, through the same
  redacting pipeline as every record;
- counts it in :class:`HttpMetrics`: requests by route *template* (``/items/<int:id>``, not
  the path a client chose: the label set stays bounded) and status, a latency histogram, and
  the requests in flight.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from typing import Any

from ._asgi import Scope

log = logging.getLogger("megatrio.access")

ROUTE_KEY = "megatrio.route"
"""Where the App writes the matched route's template into the ASGI scope."""

UNMATCHED = "<unmatched>"

_random_bits = random.getrandbits

_SANE_ID = re.compile(r"[A-Za-z0-9\-_.:]{1,128}\Z")

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class HttpMetrics:
    """Counters of the requests one listener served (plain numbers; exported by the metrics
    endpoint)."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.requests: dict[tuple[str, str, int], int] = {}
        """(method, route template, status) -> requests."""
        self.latency_counts = [0] * (len(self.buckets) + 1)
        """Requests per latency bucket (the last one: above every bound)."""
        self.latency_sum = 0.0
        self.in_flight = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable): what a cluster worker reports to its primary."""
        return {
            "buckets": list(self.buckets),
            "requests": [[m, r, s, n] for (m, r, s), n in self.requests.items()],
            "latency_counts": list(self.latency_counts),
            "latency_sum": self.latency_sum,
            "in_flight": self.in_flight,
        }

    def add(self, data: dict[str, Any]) -> None:
        """Add what :meth:`to_dict` gave (another process's counts) to these. Data with other
        buckets, or malformed, is ignored."""
        try:
            if tuple(data["buckets"]) != self.buckets:
                return
            counts = [int(n) for n in data["latency_counts"]]
            requests = [(str(m), str(r), int(s), int(n)) for m, r, s, n in data["requests"]]
            latency_sum = float(data["latency_sum"])
            in_flight = int(data["in_flight"])
        except (KeyError, TypeError, ValueError):
            return
        if len(counts) != len(self.latency_counts):
            return
        for method, route, status, count in requests:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + count
        self.latency_counts = [a + b for a, b in zip(self.latency_counts, counts, strict=True)]
        self.latency_sum += latency_sum
        self.in_flight += in_flight

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency_sum += seconds
        for index, bound in enumerate(self.buckets):
            if seconds <= bound:
                self.latency_counts[index] += 1
                return
        self.latency_counts[-1] += 1


def request_id_of(scope: Scope) -> str:
    """The request's id: its sane ``X-Request-ID``, or a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given: str = value.decode("latin-1")
            if _SANE_ID.match(given):
                return given
            break
    # 64 random bits from the process's PRNG (reseeded in a forked child): an id only has to
    # be unique, and secrets' os.urandom was a system call on every request.
    return f"{_random_bits(64):016x}"
