"""The access log, request ids and Prometheus ``/metrics`` of a served app, over real sockets;
the metrics text is read back with prometheus-client's own parser."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import megatrio
from megatrio import App, Config, Serving, serve_app

from ..browser import Page, chromium_page
from .scrape import get, metrics_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


CONFIG = Config(bind=("127.0.0.1:0",), admin_bind="127.0.0.1:0", grace_seconds=3)


def observed_app() -> App:
    app = App("obs")
    log = logging.getLogger("obs.handler")

    @app.get("/items/<int:item_id>")
    async def item(item_id: int) -> dict[str, int]:
        log.info("looking up item %d", item_id)
        return {"id": item_id}

    @app.get("/crash")
    async def crash() -> str:
        raise RuntimeError("boom")

    flaky = {"runs": 0}

    @app.child()
    async def flaky_child(*, task_status: trio.TaskStatus[None]) -> None:
        flaky["runs"] += 1
        task_status.started()
        if flaky["runs"] == 1:
            raise RuntimeError("first run fails")
        await trio.sleep_forever()

    return app


@asynccontextmanager
async def serving(app: App, config: Config = CONFIG) -> AsyncIterator[Serving]:
    async with trio.open_nursery() as nursery:
        serving: Serving = await nursery.start(
            lambda task_status: serve_app(
                app, config, handle_signals=False, task_status=task_status
            )
        )
        try:
            yield serving
        finally:
            app.rt.stop()


@asynccontextmanager
async def captured_logs() -> AsyncIterator[io.StringIO]:
    stream = io.StringIO()
    handler = megatrio.configure_logging(fmt=megatrio.LogFormat.JSON, stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def test_one_access_record_per_request_with_its_request_id_everywhere() -> None:
    app = observed_app()
    async with captured_logs() as logs:
        with trio.fail_after(30):
            async with serving(app) as served:
                status, headers, _ = await get(
                    served.http[0], "/items/7?token=s3cret", {"X-Request-ID": "abc-123"}
                )
                assert status == 200
                assert headers["x-request-id"] == "abc-123"
                # A hostile id is replaced, not echoed (control characters never get this far:
                # the HTTP front answers 400 to them).
                hostile = "<script>alert(1)</script> " + "x" * 200
                _, headers, _ = await get(served.http[0], "/items/8", {"X-Request-ID": hostile})
                made = headers["x-request-id"]
                assert made != hostile
                assert len(made) == 16
    found = records(logs)
    access = [r for r in found if r.get("logger") == "megatrio.access"]
    assert len(access) == 2
    first = access[0]
    assert (first["method"], first["path"], first["status"]) == ("GET", "/items/7", 200)
    assert first["request_id"] == "abc-123"
    assert first["bytes"] > 0
    assert first["duration_ms"] >= 0
    assert first["remote"].startswith("127.0.0.1:")
    assert "s3cret" not in json.dumps(found)  # the query string is not logged
    # The handler's own record carries the request id too.
    [handler_record] = [r for r in found if r.get("logger") == "obs.handler" and "7" in r["event"]]
    assert handler_record["request_id"] == "abc-123"
    assert access[1]["request_id"] == made


async def test_the_access_log_can_be_turned_off() -> None:
    app = observed_app()
    async with captured_logs() as logs:
        with trio.fail_after(30):
            async with serving(app, attrs.evolve(CONFIG, access_log=False)) as served:
                status, headers, _ = await get(served.http[0], "/items/1")
                assert status == 200
                assert "x-request-id" in headers  # ids stay: they are for the app's own records
    assert not [r for r in records(logs) if r.get("logger") == "megatrio.access"]


async def test_metrics_cover_children_restarts_and_requests_by_route_template() -> None:
    app = observed_app()
    with trio.fail_after(30):
        async with serving(app) as served:
            for n in (1, 2, 3):
                await get(served.http[0], f"/items/{n}")
            await get(served.http[0], "/nope")
            await get(served.http[0], "/crash")
            status, headers, body = await get(served.admin[0], "/metrics")
            assert status == 200
            assert headers["content-type"].startswith("text/plain; version=0.0.4")
            metrics = metrics_of(body)
    requests = metrics["megatrio_http_requests_total"]
    assert requests[(("method", "GET"), ("route", "/items/<int:item_id>"), ("status", "200"))] == 3
    assert requests[(("method", "GET"), ("route", "<unmatched>"), ("status", "404"))] == 1
    assert requests[(("method", "GET"), ("route", "/crash"), ("status", "500"))] == 1
    assert metrics["megatrio_http_request_duration_seconds_count"][()] == 5
    assert metrics["megatrio_http_requests_in_flight"][()] == 0
    # The child that crashed once was restarted: the counter says so, and it is up.
    assert metrics["megatrio_child_restarts_total"][(("path", "obs/flaky_child"),)] == 1
    assert metrics["megatrio_child_up"][(("path", "obs/flaky_child"),)] == 1
    assert metrics["megatrio_child_up"][(("path", "obs/http"),)] == 1
    # Annotations are stats: the listener's connection counters, by name.
    stats = metrics["megatrio_child_stat"]
    assert (("path", "obs/http"), ("stat", "connection_errors")) in stats


async def test_metrics_count_the_stores_and_a_supervisor_that_gave_up() -> None:
    from megatrio import Restart, Supervisor
    from megatrio._config import CacheConfig

    app = App("stores")
    runs = {"n": 0}
    restarted = trio.Event()

    async def crash_once(*, task_status: trio.TaskStatus[None]) -> None:
        runs["n"] += 1
        task_status.started()
        if runs["n"] == 1:
            await trio.sleep(0.05)  # up first: a crash during start would fail the app's start
            raise RuntimeError("first run fails")
        restarted.set()
        await trio.sleep_forever()

    # max_restarts=0: the first crash makes the pool give up; the app restarts the pool.
    pool = Supervisor([megatrio.ChildSpec("flaky", crash_once)], max_restarts=0, name="pool")
    app.add_child(pool.child_spec(restart=Restart.PERMANENT))

    @app.get("/lookup/<key>")
    async def lookup(key: str) -> dict[str, object]:
        cache = app.cache("small")
        found = await cache.get(key)
        if found is None:
            await cache.set(key, key * 10)
        verdict = await app.rt.nonces.check("peer", key, time.time())
        return {"found": found, "verdict": verdict.value}

    config = attrs.evolve(CONFIG, cache={"small": CacheConfig(max_entries=2)}, nonce_max_entries=3)
    with trio.fail_after(30):
        async with serving(app, config) as served:
            for key in ("a", "a", "b", "c", "d"):  # a: miss then hit; c and d evict a and b
                await get(served.http[0], f"/lookup/{key}")
            await restarted.wait()
            status, _, body = await get(served.admin[0], "/metrics")
            assert status == 200
            metrics = metrics_of(body)
    requests = metrics["megatrio_cache_requests_total"]
    assert requests[(("alias", "small"), ("result", "hit"))] == 1
    assert requests[(("alias", "small"), ("result", "miss"))] == 4
    assert metrics["megatrio_cache_evictions_total"] == {
        (("alias", "small"), ("reason", "capacity")): 2
    }
    assert metrics["megatrio_cache_entries"][(("alias", "small"),)] == 2
    assert metrics["megatrio_cache_bytes"][(("alias", "small"),)] == 2 * len(b'"cccccccccc"')
    # The default cache is there too, untouched.
    assert requests[(("alias", "default"), ("result", "hit"))] == 0
    checks = metrics["megatrio_nonce_checks_total"]
    assert {labels[0][1]: n for labels, n in checks.items()} == {
        "accepted": 3,  # a, b, c
        "replay": 1,  # a again
        "full": 1,  # d: the store is at its cap of 3
        "stale": 0,
    }
    give_ups = metrics["megatrio_supervisor_give_ups_total"]
    assert give_ups[(("path", "stores/pool"),)] == 1
    assert give_ups[(("path", "stores"),)] == 0
    assert metrics["megatrio_child_restarts_total"][(("path", "stores/pool"),)] == 1


async def test_the_live_tree_page_shows_every_child_and_a_crash_and_restart_within_2s() -> None:
    app = App("live")
    crash = trio.Event()

    @app.child()
    async def worker(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await crash.wait()
        raise RuntimeError("worker fell over (token=s3cret)")

    @app.get("/crash")
    async def crash_it() -> str:
        nonlocal crash
        crash.set()
        crash = trio.Event()  # the restarted worker waits on a fresh one
        return "ok"

    async def visible(page: Page) -> dict[str, Any]:
        found = await page.evaluate(
            "JSON.stringify(Array.from(document.querySelectorAll('li')).map(li => "
            "[li.dataset.path, li.dataset.state, li.dataset.restarts, li.textContent]))"
        )
        return {
            path: (state, int(restarts), text)
            for path, state, restarts, text in json.loads(found or "[]")
        }

    with trio.fail_after(60):
        async with serving(app) as served, chromium_page() as page:
            await page.goto(served.admin[0] + "/_megatrio/")
            while "live/worker" not in (shown := await visible(page)):  # noqa: ASYNC110
                await trio.sleep(0.1)
            children = {c["name"] for c in app.rt.snapshot()["children"]}
            assert {path.removeprefix("live/") for path in shown} >= children
            assert shown["live/worker"][:2] == ("running", 0)
            await get(served.http[0], "/crash")
            # The page polls by itself: within two seconds it shows the crash and the restart.
            with trio.move_on_after(2.0):
                while (await visible(page))["live/worker"][1] < 1:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            _, restarts, text = (await visible(page))["live/worker"]
            assert restarts == 1
            assert "worker fell over" in text
            assert "s3cret" not in text  # the page shows the redacted error
