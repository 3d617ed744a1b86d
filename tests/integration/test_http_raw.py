"""Lean routes (``raw=True``) and inline requests over real sockets, on both HTTP fronts.

What a lean handler gets and may return, its place beside Quart's routes (405, HEAD, a path
shared with a Quart route), request ids, the access log and metrics by rule, error pages, and
cancellation: a peer that leaves mid-handler, a handler that fails while being cancelled, a
stop while handlers run. Quart routes served inline on the fast front are cancelled by a peer
that leaves, as quart-trio's own receiver cancels them.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.exceptions import NotFound

import megatrio
from megatrio import App, Config, RawRequest, Serving

from ..raw_http import connect, exchange, get, read_to_eof, split_response, start

pytestmark = pytest.mark.anyio

JSON = "Accept: application/json"
CONFIG = Config(bind=("127.0.0.1:0",), admin_bind="127.0.0.1:0", grace_seconds=3)


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


def lean_app() -> App:
    app = App("lean")

    @app.http.after_request
    async def mark(response: Any) -> Any:
        response.headers["X-Via"] = "quart"  # a lean route's response never has it
        return response

    @app.get("/", raw=True)
    async def index(request: RawRequest) -> str:
        return "hello"

    @app.get("/users/<int:user_id>", raw=True)
    async def user(request: RawRequest, user_id: int) -> dict[str, Any]:
        return {
            "id": user_id,
            "params": request.params,
            "q": request.query.getlist("q"),
            "agent": request.headers.get("USER-AGENT"),
            "client": list(request.client or ()),
            "method": request.method,
            "path": request.path,
            "request_id": request.request_id,
        }

    @app.post("/users/<int:user_id>")
    async def quart_post(user_id: int) -> str:
        return f"quart saw {user_id}"

    @app.route("/echo", methods=["POST", "PUT"], raw=True)
    async def echo(request: RawRequest) -> tuple[Any, int, dict[str, str]]:
        return await request.json(), 201, {"X-Echo": request.method}

    @app.post("/bytes", raw=True)
    async def raw_bytes(request: RawRequest) -> tuple[bytes, dict[str, str]]:
        return await request.body(), {"Content-Type": "application/octet-stream"}

    @app.get("/teapot", raw=True)
    async def teapot(request: RawRequest) -> tuple[list[int], int]:
        return [4, 1, 8], 418

    @app.get("/boom", raw=True)
    async def boom(request: RawRequest) -> str:
        raise RuntimeError("db password=hunter2")

    @app.get("/missing", raw=True)
    async def missing(request: RawRequest) -> str:
        raise NotFound("no such thing")

    @app.get("/none", raw=True)
    async def returns_none(request: RawRequest) -> None:
        return None

    return app


@asynccontextmanager
async def serving(app: App, config: Config = CONFIG) -> AsyncIterator[Serving]:
    async with trio.open_nursery() as nursery:
        served = await start(nursery, app, config)
        try:
            yield served
        finally:
            app.rt.stop()


def request_bytes(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close", *headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def call(url: str, method: str, path: str, body: bytes = b"", *headers: str) -> Any:
    return split_response(await exchange(url, request_bytes(method, path, body, *headers)))


async def test_a_lean_handler_gets_the_request_and_its_return_value_is_quarts_convention() -> None:
    app = lean_app()
    async with serving(app) as served:
        [url] = served.http
        status, headers, body = await call(url, "GET", "/")
        assert (status, headers["content-type"], body) == (
            200,
            "text/html; charset=utf-8",
            b"hello",
        )
        assert headers["content-length"] == "5"
        status, headers, body = await call(
            url, "GET", "/users/7?q=a&q=b%20c", b"", "User-Agent: probe/1", "X-Request-ID: rid-1"
        )
        assert (status, headers["content-type"]) == (200, "application/json")
        assert body.endswith(b"}\n")  # Quart's JSON: compact, a final newline
        seen = json.loads(body)
        assert (seen["id"], seen["params"]) == (7, {"user_id": 7})
        assert (seen["q"], seen["agent"]) == (["a", "b c"], "probe/1")
        assert (seen["client"][0], seen["method"]) == ("127.0.0.1", "GET")
        assert (seen["path"], seen["request_id"]) == ("/users/7", "rid-1")
        assert headers["x-request-id"] == "rid-1"
        status, headers, body = await call(url, "PUT", "/echo", b'{"a": [1, 2]}')
        assert (status, headers["x-echo"], json.loads(body)) == (201, "PUT", {"a": [1, 2]})
        status, headers, body = await call(url, "POST", "/bytes", b"\x00\x01raw")
        assert (status, headers["content-type"], body) == (
            200,
            "application/octet-stream",
            b"\x00\x01raw",
        )
        status, _, body = await call(url, "GET", "/teapot")
        assert (status, body) == (418, b"[4,1,8]\n")


async def test_a_quart_route_shares_a_path_and_wrong_methods_are_405_with_every_allowed_one() -> (
    None
):
    app = lean_app()
    async with serving(app) as served:
        [url] = served.http
        status, headers, body = await call(url, "POST", "/users/3")
        assert (status, body, headers["x-via"]) == (200, b"quart saw 3", "quart")
        status, headers, _ = await call(url, "GET", "/users/3")
        assert (status, "x-via" in headers) == (200, False)
        status, headers, body = await call(url, "DELETE", "/users/3", b"", JSON)
        assert status == 405
        assert set(headers["allow"].replace(" ", "").split(",")) >= {"GET", "HEAD", "POST"}
        assert json.loads(body)["error"] == "Method Not Allowed"
        status, headers, _ = await call(url, "GET", "/echo")
        assert status == 405
        assert {"POST", "PUT"} <= set(headers["allow"].replace(" ", "").split(","))
        status, _, _ = await call(url, "GET", "/users/not-a-number")
        assert status == 404


async def test_head_is_served_by_a_get_route_without_a_body() -> None:
    app = lean_app()
    async with serving(app) as served:
        for path in ("/", "/users/1"):
            response = await exchange(served.http[0], request_bytes("HEAD", path))
            status, headers, body = split_response(response)
            assert (status, body, "x-via" in headers) == (200, b"", False)  # the lean route's
        assert headers["content-type"] == "application/json"


async def test_on_the_fast_front_handlers_run_in_the_connections_task(http_front: str) -> None:
    if http_front != "fast":
        pytest.skip("hypercorn runs the app in a task of its own per request")
    app = App("inline")
    tasks: list[tuple[str, trio.lowlevel.Task, int]] = []

    @app.get("/quart")
    async def quart_route() -> str:
        task = trio.lowlevel.current_task()
        tasks.append(("quart", task, len(task.child_nurseries)))
        return "ok"

    @app.post("/lean", raw=True)
    async def lean(request: RawRequest) -> bytes:
        task = trio.lowlevel.current_task()
        tasks.append(("lean", task, len(task.child_nurseries)))
        return await request.body()

    async with serving(app) as served:
        stream = await connect(served.http[0])
        async with stream:
            await stream.send_all(
                b"GET /quart HTTP/1.1\r\nHost: t\r\n\r\n"
                b"POST /quart HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
                b"GET /quart HTTP/1.1\r\nHost: t\r\n\r\n"
                b"POST /lean HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
                b"POST /lean HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                b"Content-Length: 2\r\n\r\nho"
            )
            data = await read_to_eof(stream)
    assert data.count(b"HTTP/1.1 200") == 4  # the POST to the Quart route is a 405
    assert data.endswith(b"ho")
    # No task per request: every handler ran in the connection's own task, with no
    # nursery (a receiver beside it) open.
    assert [(kind, children) for kind, _, children in tasks] == [
        ("quart", 0),
        ("quart", 0),
        ("lean", 0),
        ("lean", 0),
    ]
    assert len({task for _, task, _ in tasks}) == 1


async def test_errors_are_megatrios_pages_logged_not_shown_and_the_connection_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = lean_app()
    async with serving(app) as served:
        stream = await connect(served.http[0])
        async with stream:
            # One keep-alive connection: the failing request, then a good one.
            await stream.send_all(
                b"GET /boom HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            data = await read_to_eof(stream)
        first, _, second = data.partition(b"HTTP/1.1 200")
        status, headers, body = split_response(first)
        assert (status, headers["content-type"]) == (500, "application/json")
        assert json.loads(body)["error"] == "Internal Server Error"
        assert b"hunter2" not in data
        assert b"RuntimeError" not in data
        assert second.endswith(b"hello")
        status, headers, body = await call(served.http[0], "GET", "/boom")
        assert (status, headers["content-type"]) == (500, "text/html; charset=utf-8")
        status, _, body = await call(served.http[0], "GET", "/missing", b"", JSON)
        assert (status, json.loads(body)["message"]) == (404, "no such thing")
        status, _, body = await call(served.http[0], "POST", "/echo", b"{not json")
        assert status == 400
        status, _, _ = await call(served.http[0], "GET", "/none")
        assert status == 500
    failures = [r for r in caplog.records if r.exc_info and "hunter2" in str(r.exc_info[1])]
    assert [r.name for r in failures] == ["megatrio.http"] * 2
    assert any(r.exc_info and isinstance(r.exc_info[1], TypeError) for r in caplog.records)


async def test_access_log_request_ids_and_metrics_by_rule_cover_lean_routes() -> None:
    app = lean_app()
    stream = io.StringIO()
    handler = megatrio.configure_logging(fmt=megatrio.LogFormat.JSON, stream=stream)
    try:
        async with serving(app) as served:
            [url] = served.http
            await call(url, "GET", "/users/1", b"", "X-Request-ID: abc-123")
            await call(url, "GET", "/users/2")
            await call(url, "GET", "/boom")
            _, _, text = await call(served.admin[0], "GET", "/metrics")
    finally:
        logging.getLogger().removeHandler(handler)
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line[:1] == "{"]
    access = [r for r in records if r.get("logger") == "megatrio.access"]
    assert [(r["path"], r["status"]) for r in access] == [
        ("/users/1", 200),
        ("/users/2", 200),
        ("/boom", 500),
    ]
    assert access[0]["request_id"] == "abc-123"
    [failure] = [r for r in records if r.get("logger") == "megatrio.http" and r.get("exception")]
    assert failure["request_id"] == access[2]["request_id"]  # the error's record has the id
    counted = {
        (s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == "megatrio_http_requests_total"
    }
    assert counted[("/users/<int:user_id>", "200")] == 2
    assert counted[("/boom", "500")] == 1


async def test_a_peer_that_leaves_mid_handler_cancels_a_lean_and_a_quart_handler() -> None:
    app = App("leaving")
    entered = {"raw": trio.Event(), "quart": trio.Event()}
    cancelled = {"raw": trio.Event(), "quart": trio.Event()}

    @app.get("/raw", raw=True)
    async def lean(request: RawRequest) -> str:
        entered["raw"].set()
        try:
            await trio.sleep(30)
        except trio.Cancelled:
            cancelled["raw"].set()
            raise
        return "never"

    @app.get("/quart")
    async def quart_route() -> str:
        entered["quart"].set()
        try:
            await trio.sleep(30)
        except trio.Cancelled:
            cancelled["quart"].set()
            raise
        return "never"

    async with serving(app) as served:
        for kind in ("raw", "quart"):
            stream = await connect(served.http[0])
            await stream.send_all(get(f"/{kind}", close=False))
            await entered[kind].wait()
            await stream.aclose()
            with trio.fail_after(2):
                await cancelled[kind].wait()
        status, _, _ = await call(served.http[0], "GET", "/healthz")
        assert status == 200


async def test_a_handler_failing_while_cancelled_is_logged_and_serving_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("cleanup")
    entered = trio.Event()
    failing = trio.Event()

    @app.get("/slow", raw=True)
    async def slow(request: RawRequest) -> str:
        entered.set()
        try:
            await trio.sleep(30)
        finally:
            failing.set()  # the failure is logged before the next checkpoint
            raise RuntimeError("cleanup failed")
        return "never"

    @app.get("/", raw=True)
    async def index(request: RawRequest) -> str:
        return "still here"

    async with serving(app) as served:
        stream = await connect(served.http[0])
        await stream.send_all(get("/slow", close=False))
        await entered.wait()
        await stream.aclose()
        with trio.fail_after(2):
            await failing.wait()
        await trio.lowlevel.checkpoint()
        assert any("cleanup failed" in str(r.exc_info and r.exc_info[1]) for r in caplog.records)
        status, _, body = await call(served.http[0], "GET", "/")
        assert (status, body) == (200, b"still here")
        [http] = [c for c in app.rt.snapshot()["children"] if c["name"] == "http"]
        assert http["restarts"] == 0


async def test_a_stop_lets_running_lean_handlers_finish_and_closes_their_connections(
    http_front: str,
) -> None:
    app = App("draining")
    entered = trio.Event()

    @app.get("/slow", raw=True)
    async def slow(request: RawRequest) -> str:
        entered.set()
        await trio.sleep(0.3)
        return "finished"

    async with trio.open_nursery() as nursery:
        served = await start(nursery, app, CONFIG)
        stream = await connect(served.http[0])
        async with stream:
            await stream.send_all(get("/slow", close=False))  # a keep-alive request
            await entered.wait()
            app.rt.stop()
            response = await read_to_eof(stream)  # the server closes after the response
    status, headers, body = split_response(response)
    assert (status, body) == (200, b"finished")
    if http_front == "fast":  # hypercorn closes without saying so
        assert headers.get("connection") == "close"


async def test_a_lean_route_answers_through_quarts_test_client_too() -> None:
    app = lean_app()
    client = app.http.test_client()
    response = await client.get("/users/5?q=x")
    assert response.status_code == 200
    seen = await response.get_json()
    assert (seen["id"], seen["q"]) == (5, ["x"])


async def test_quart_routes_stream_and_send_partial_content_as_before() -> None:
    app = App("bodies")

    @app.get("/stream")
    async def stream() -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"one,", b"two,", b"three"):
                yield part

        return chunks(), 200, {"Content-Type": "text/plain"}

    @app.get("/range")
    async def ranged() -> Any:
        from quart import request

        response = await app.http.make_response(b"0123456789")
        await response.make_conditional(request, accept_ranges=True, complete_length=10)
        return response

    async with serving(app) as served:
        [url] = served.http
        status, headers, body = await call(url, "GET", "/stream")
        assert status == 200
        if headers.get("transfer-encoding") == "chunked":
            assert body == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"
        else:  # hypercorn may close instead of chunking a Connection: close response
            assert body == b"one,two,three"
        status, headers, body = await call(url, "GET", "/range", b"", "Range: bytes=2-4")
        assert (status, headers["content-range"], body) == (206, "bytes 2-4/10", b"234")


async def test_lean_routes_are_matched_under_the_root_path_either_way_a_proxy_sends_it() -> None:
    app = lean_app()
    async with serving(app, Config(bind=("127.0.0.1:0",), admin_bind="", root_path="/api")) as s:
        [url] = s.http
        for path in ("/api/users/5", "/users/5"):  # the prefix forwarded, or stripped
            status, headers, body = await call(url, "GET", path)
            assert (status, "x-via" in headers) == (200, False)
            assert json.loads(body)["path"] == "/api/users/5"
