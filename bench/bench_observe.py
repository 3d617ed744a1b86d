"""What observability costs per request, and what a ``/metrics`` scrape costs.

Run ``python bench/bench_observe.py`` (``--quick`` for fewer calls). In one process, under trio,
one hello-world ASGI app is called directly (no sockets: only the per-request work of the layer
is measured) bare and behind megatrio's App front (``app_front``: the health paths, the request
id, HTTP metrics, and
the access log off, skipped by level, or on (JSON into a null stream through megatrio's redacting
pipeline). The baseline for the metrics alone is prometheus-client's own instrumentation
(``Counter.labels(...).inc()`` and ``Histogram.observe()`` per request), measured in the same run.
CPU time per request is the best of 5 rounds (``time.process_time``), GC paused as in every
bench here. Then a scrape of ``/metrics`` for a tree of 50 children with the services' samples.
"""

from __future__ import annotations

import argparse
import io
import logging
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import gc_paused, markdown_table
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from megatrio import LogFormat, configure_logging
from megatrio._samples import counter_sample, gauge_sample
from megatrio.services.http._access import HttpMetrics
from megatrio.services.http._app_front import app_front
from megatrio.services.http._metrics import registry_for

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],
}
BODY = {"type": "http.response.body", "body": b"hello"}


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(START)
    await send(BODY)


def prometheus_instrumented() -> ASGI:
    """The same app counting with prometheus-client's own objects, as a library would."""
    registry = CollectorRegistry()
    requests = Counter(
        "http_requests", "requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram("http_request_duration_seconds", "latency", registry=registry)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        began = time.perf_counter()
        status = 0

        async def counted(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await hello(scope, receive, counted)
        requests.labels(scope["method"], "/", str(status)).inc()
        latency.observe(time.perf_counter() - began)

    return app


def observed(app: ASGI, metrics: HttpMetrics, *, access_log: bool) -> ASGI:
    return app_front(app, lambda: (True, []), metrics, access_log=access_log)


def scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 5555),
        "megatrio.route": "/",
    }


async def per_request_us(app: ASGI, calls: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    best = float("inf")
    for _ in range(5):
        scopes = [scope() for _ in range(calls)]
        with gc_paused():
            began = time.process_time()
            for s in scopes:
                await app(s, receive, send)
            best = min(best, time.process_time() - began)
    return best / calls * 1e6


def snapshot(children: int) -> dict[str, Any]:
    return {
        "name": "app",
        "path": "app",
        "restarts_in_window": 0,
        "give_ups": 0,
        "children": [
            {
                "name": f"child{n}",
                "state": "running",
                "restarts": n % 3,
                "uptime_seconds": 12.5,
                "info": {"acked": n, "retried": 1, "closes": {"1000": 3, "1013": 1}},
            }
            for n in range(children)
        ],
    }


def samples() -> list[Any]:
    out = []
    for alias in ("default", "pages", "sessions"):
        for result in ("hit", "miss"):
            out.append(
                counter_sample("megatrio_cache_requests", "l", 10, alias=alias, result=result)
            )
        out.append(gauge_sample("megatrio_cache_entries", "e", 100, alias=alias))
    for job in ("email", "thumbs", "reports"):
        for outcome in ("acked", "retried", "termed", "dead_lettered", "released"):
            out.append(counter_sample("megatrio_jobs_handled", "h", 5, job=job, outcome=outcome))
    return out


def scrape_ms(rounds: int) -> tuple[float, int]:
    http = HttpMetrics()
    for route in ("/", "/items/<int:id>", "/users/<name>"):
        for status in (200, 404, 500):
            http.observe("GET", route, status, 0.002)
    registry = registry_for(lambda: snapshot(50), http, samples)
    size = len(generate_latest(registry))
    best = float("inf")
    for _ in range(5):
        with gc_paused():
            began = time.process_time()
            for _ in range(rounds):
                generate_latest(registry)
            best = min(best, time.process_time() - began)
    return best / rounds * 1e3, size


async def main(quick: bool) -> None:
    calls = 20_000 if quick else 100_000
    sink = io.StringIO()
    handler = configure_logging(level=logging.INFO, fmt=LogFormat.JSON, stream=sink)
    access = logging.getLogger("megatrio.access")
    rows: list[tuple[str, float]] = []
    rows.append(("bare ASGI app", await per_request_us(hello, calls)))
    rows.append(
        (
            "prometheus-client Counter + Histogram",
            await per_request_us(prometheus_instrumented(), calls),
        )
    )
    rows.append(
        (
            "megatrio App front: request id + metrics, access log off",
            await per_request_us(observed(hello, HttpMetrics(), access_log=False), calls),
        )
    )
    access.setLevel(logging.WARNING)
    rows.append(
        (
            "megatrio App front: access log on, level warning (skipped)",
            await per_request_us(observed(hello, HttpMetrics(), access_log=True), calls),
        )
    )
    access.setLevel(logging.NOTSET)
    rows.append(
        (
            "megatrio App front: access log on, JSON records written",
            await per_request_us(observed(hello, HttpMetrics(), access_log=True), calls // 4),
        )
    )
    logging.getLogger().removeHandler(handler)
    assert sink.getvalue().count("\n") >= calls // 4, "the access log wrote nothing"
    bare = rows[0][1]
    prom = rows[1][1] - bare
    table = [
        (
            name,
            f"{us:.2f}",
            "-" if i == 0 else f"{us - bare:+.2f}",
            "-" if i < 2 else f"{(us - bare) / prom:.2f}x",
        )
        for i, (name, us) in enumerate(rows)
    ]
    print(f"# bench_observe — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"python {platform.python_version()}, trio {trio.__version__}, {calls:,} calls/row")
    print()
    print(
        markdown_table(
            ["layer", "CPU us/request", "over bare", "overhead vs prometheus-client's"],
            table,
            right={1, 2, 3},
        )
    )
    ms, size = scrape_ms(50 if quick else 200)
    print()
    what = "50 children + 27 service samples + 9 HTTP series"
    print(f"/metrics scrape, {what}: {ms:.2f} ms CPU, {size:,} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    trio.run(main, parser.parse_args().quick)
