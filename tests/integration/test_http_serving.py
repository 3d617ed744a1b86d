"""The public listener over real sockets: lifespan, stopping, cancellation.

Each test serves an App in-process with ``serve_app`` and talks raw HTTP/1.1 to it.
"""

from __future__ import annotations

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


def config(**options: object) -> Config:
    values: dict[str, object] = {"bind": ("127.0.0.1:0",), "admin_bind": "", "grace_seconds": 5}
    values.update(options)
    return Config(**values)  # type: ignore[arg-type]


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
