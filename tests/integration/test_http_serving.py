"""The public listener over real sockets: error pages, lifespan, stopping, cancellation.

Each test serves an App in-process with ``serve_app`` and talks raw HTTP/1.1 to it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from megatrio import App, Config
from megatrio.services._admin import serve_lifespan

from ..raw_http import (
    connect,
    exchange,
    get,
    split_response,
    start,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


JSON = "Accept: application/json"


def config(**options: object) -> Config:
    values: dict[str, object] = {"bind": ("127.0.0.1:0",), "admin_bind": "", "grace_seconds": 5}
    values.update(options)
    return Config(**values)  # type: ignore[arg-type]


def error_app() -> App:
    app = App("pages")

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("db password=hunter2 at 10.1.2.3")

    @app.post("/only-post")
    async def only_post() -> str:
        return "posted"

    return app


# -- error pages ------------------------------------------------------------------------------


async def test_404_405_and_500_are_json_when_accept_prefers_it() -> None:
    app = error_app()
    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, config())).http
        status, headers, body = split_response(await exchange(url, get("/nope", JSON)))
        assert (status, headers["content-type"]) == (404, "application/json")
        assert json.loads(body)["status"] == 404
        assert json.loads(body)["error"] == "Not Found"
        status, headers, body = split_response(await exchange(url, get("/only-post", JSON)))
        assert (status, headers["content-type"]) == (405, "application/json")
        assert set(headers["allow"].replace(" ", "").split(",")) == {"OPTIONS", "POST"}
        status, headers, body = split_response(await exchange(url, get("/boom", JSON)))
        assert (status, headers["content-type"]) == (500, "application/json")
        assert json.loads(body) == {
            "status": 500,
            "error": "Internal Server Error",
            "message": "The server could not complete the request.",
        }
        app.rt.stop()


async def test_error_pages_are_html_otherwise_and_a_500_never_shows_the_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = error_app()
    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, config())).http
        for accept in ("", "Accept: */*", "Accept: text/html,application/json;q=0.9"):
            lines = (accept,) if accept else ()
            status, headers, body = split_response(await exchange(url, get("/boom", *lines)))
            assert (status, headers["content-type"]) == (500, "text/html; charset=utf-8")
            assert b"<h1>Internal Server Error</h1>" in body
            assert b"hunter2" not in body
            assert b"RuntimeError" not in body
        status, headers, body = split_response(await exchange(url, get("/nope")))
        assert (status, headers["content-type"]) == (404, "text/html; charset=utf-8")
        assert b"<title>404 Not Found</title>" in body
        app.rt.stop()
    # The exception went to the log (the logging pipeline redacts it), not to the client.
    assert any("hunter2" in (r.exc_text or "") or r.exc_info for r in caplog.records)


async def test_an_apps_own_error_handler_replaces_megatrios() -> None:
    app = error_app()

    @app.http.errorhandler(404)
    async def mine(error: Exception) -> tuple[str, int]:
        return "custom", 404

    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, config())).http
        assert split_response(await exchange(url, get("/nope", JSON)))[2] == b"custom"
        app.rt.stop()


# -- lifespan ------------------------------------------------------------


async def test_the_apps_lifespan_runs_around_serving() -> None:
    journal: list[str] = []
    app = App("lifespan")

    @app.http.before_serving
    async def up() -> None:
        journal.append("before_serving")

    @app.http.after_serving
    async def down() -> None:
        journal.append("after_serving")

    async with trio.open_nursery() as nursery:
        await start(nursery, app, config())
        assert journal == ["before_serving"]
        app.rt.stop()
    assert journal == ["before_serving", "after_serving"]


# -- stopping -----------------------------------------------------------------------------------


async def test_stop_refuses_new_connections_while_in_flight_requests_finish() -> None:
    app = App("drain")
    entered = trio.Event()

    @app.get("/slow")
    async def slow() -> str:
        entered.set()
        await trio.sleep(0.5)
        return "done"

    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, config())).http
        result: list[bytes] = []

        async def in_flight() -> None:
            result.append(await exchange(url, get("/slow")))

        nursery.start_soon(in_flight)
        await entered.wait()
        app.rt.stop()
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with trio.fail_after(2):
            # Until the stop request reaches the listener, connections are still accepted.
            while True:
                with trio.socket.socket() as probe:
                    try:
                        await probe.connect((host, int(port)))
                    except ConnectionRefusedError:
                        break
                await trio.sleep(0.01)
        assert not result  # refused while the in-flight request was still running
    assert split_response(result[0])[2] == b"done"


async def test_a_peer_that_never_reads_cannot_hold_the_stop_past_the_grace() -> None:
    app = App("stuck")
    chunk = b"x" * 65536

    @app.get("/forever")
    async def forever() -> object:
        async def body() -> object:
            while True:
                yield chunk

        return body()

    grace = 0.5
    rescued = False
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as nursery:
            [url] = (await start(nursery, app, config(grace_seconds=grace))).http
            stream = await connect(url)
            await stream.send_all(get("/forever"))
            await stream.receive_some(1)  # the response started; from now on nobody reads it
            await trio.sleep(0.2)  # the socket buffers fill; hypercorn's send blocks, shielded

            async def rescue() -> None:
                # A shielded send cannot be cancelled, not even by this test's own deadline:
                # if the server does not close the socket, only the peer going away ends it.
                nonlocal rescued
                await trio.sleep(grace + 5)
                rescued = True
                await stream.aclose()

            outer.start_soon(rescue)
            stopped_at = trio.current_time()
            app.rt.stop()
        took = trio.current_time() - stopped_at
        outer.cancel_scope.cancel()
    await stream.aclose()
    assert not rescued, "the stop waited for the peer"
    assert took < grace + 1.5, f"the stop took {took:.2f} s"


async def test_cancelling_serve_http_closes_every_connection_at_once() -> None:
    from megatrio.services._http import serve_http

    async def endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})

    with trio.fail_after(10):  # a shielded send left behind would hang past this
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(serve_http, endless, ["127.0.0.1:0"], "test", 30.0)
            idle = await connect(url)
            stream = await connect(url)
            await stream.send_all(get("/"))
            await stream.receive_some(1)
            await trio.sleep(0.2)  # the socket buffers fill; hypercorn's send blocks, shielded
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
        took = trio.current_time() - cancelled_at
    assert took < 1.0, f"the cancellation took {took:.2f} s"
    assert await idle.receive_some() == b""  # closed by the server
    await idle.aclose()
    await stream.aclose()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with trio.socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        await probe.connect((host, int(port)))
