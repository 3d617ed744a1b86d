"""serve_app in-process over real loopback sockets: readiness, admin redaction, drain, errors."""

from __future__ import annotations

import functools
import json
import socket

import pytest
import trio

import megatrio
from megatrio import App, ChildSpec, Config, Serving, serve_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


CONFIG = Config(bind=("127.0.0.1:0",), admin_bind="127.0.0.1:0", grace_seconds=5)


async def http_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with Connection: close, reading to EOF (so a connection left open fails the test)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def start(nursery: trio.Nursery, app: App, config: Config = CONFIG) -> Serving:
    serving: Serving = await nursery.start(
        lambda task_status: serve_app(app, config, handle_signals=False, task_status=task_status)
    )
    return serving


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_readyz_is_503_until_every_child_has_started() -> None:
    app = App("ready")
    release = trio.Event()
    entered = trio.Event()

    @app.child(shutdown_seconds=0)
    async def slow_to_start(*, task_status: trio.TaskStatus[None]) -> None:
        entered.set()
        await release.wait()
        task_status.started()
        await trio.sleep_forever()

    url = f"http://127.0.0.1:{free_port()}"
    config = Config(bind=(url.removeprefix("http://"),), admin_bind="")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(serve_app, app, config, handle_signals=False))
        await entered.wait()  # HTTP is up; the app's child is still starting
        status, body = await http_get(url, "/readyz")
        assert status == 503
        assert json.loads(body)["not_ready"] == ["ready/slow_to_start", "ready (starting)"]
        assert (await http_get(url, "/healthz")) == (200, b"ok\n")
        release.set()
        with trio.fail_after(5):
            # Polling a real HTTP endpoint over a socket: there is no event to wait on.
            while (await http_get(url, "/readyz"))[0] != 200:  # noqa: ASYNC110
                await trio.sleep(0.01)
        app.rt.stop()


async def test_admin_tree_redacts_error_texts() -> None:
    app = App("admin")
    crashes = 0

    @app.child(shutdown_seconds=0)
    async def leaky(*, task_status: trio.TaskStatus[None]) -> None:
        nonlocal crashes
        task_status.started()
        if crashes == 0:
            crashes += 1
            raise RuntimeError("connect failed: password=hunter2")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        serving = await start(nursery, app)
        [admin] = serving.admin
        await trio.sleep(0.3)  # the first restart is immediate; give it a moment to happen
        status, body = await http_get(admin, "/_megatrio/tree")
        assert status == 200
        [entry] = [c for c in json.loads(body)["children"] if c["name"] == "leaky"]
        assert entry["restarts"] == 1
        assert entry["last_error"] == "RuntimeError: connect failed: password=[REDACTED]"
        status, text = await http_get(admin, "/_megatrio/tree?format=text")
        assert b"leaky  running" in text
        assert b"hunter2" not in text
        assert (await http_get(admin, "/nope"))[0] == 404
        app.rt.stop()


async def test_stop_drains_in_flight_requests_and_runs_hooks_in_order() -> None:
    journal: list[str] = []

    class Hooks(App):
        async def on_start(self, rt: megatrio.Runtime) -> None:
            journal.append("on_start")

        async def on_stop(self, rt: megatrio.Runtime) -> None:
            journal.append("on_stop")

    app = Hooks("hooks")

    @app.get("/slow")
    async def slow() -> str:
        await trio.sleep(0.5)
        journal.append("slow done")
        return "done"

    async with trio.open_nursery() as nursery:
        serving = await start(nursery, app)
        [url] = serving.http
        result: list[tuple[int, bytes]] = []

        async def request() -> None:
            result.append(await http_get(url, "/slow"))

        nursery.start_soon(request)
        await trio.sleep(0.1)
        app.rt.stop()
    assert result == [(200, b"done")]
    assert journal == ["on_start", "slow done", "on_stop"]


async def test_an_on_start_error_is_fatal_and_reraised() -> None:
    class Broken(App):
        async def on_start(self, rt: megatrio.Runtime) -> None:
            raise RuntimeError("cannot open pool")

    with pytest.raises(RuntimeError, match="cannot open pool"):
        await serve_app(Broken("broken"), CONFIG, handle_signals=False)


async def test_port_already_in_use_fails_the_start_naming_the_address() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        config = Config(bind=(f"127.0.0.1:{port}",), admin_bind="")
        with pytest.raises(megatrio.ListenError, match=f"cannot listen on 127.0.0.1:{port}: "):
            await serve_app(App("busy"), config, handle_signals=False)


async def test_app_children_start_after_http_and_appear_in_the_tree() -> None:
    app = App("order")
    app.add_child(
        ChildSpec("tick", megatrio.ready_immediately(trio.sleep_forever), shutdown_seconds=0)
    )
    async with trio.open_nursery() as nursery:
        serving = await start(nursery, app, Config(bind=("127.0.0.1:0",), admin_bind=""))
        assert serving.admin == ()
        names = [c["name"] for c in app.rt.snapshot()["children"]]
        assert names == ["cache-default", "http", "tick"]
        assert app.cache() is app.rt.cache("default")
        app.rt.stop()
