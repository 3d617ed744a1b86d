"""A GET over a real socket, and ``/metrics`` text read back with prometheus-client's own
parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .. import raw_http


async def get(
    url: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """``(status, lower-cased headers, body)`` of ``GET path`` with ``Connection: close``."""
    extra = [f"{k}: {v}" for k, v in (headers or {}).items()]
    response = await raw_http.exchange(url, raw_http.get(path, *extra), within_seconds=10)
    return raw_http.split_response(response)


def metrics_of(text: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of a ``/metrics`` text: name -> sorted labels -> value."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found
