"""serve_app's listeners over real loopback sockets: bound up front, closed on every path."""

from __future__ import annotations

import errno
import socket

import pytest
import trio

import megatrio
from megatrio import App, Config, ListenError, Serving, serve_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def can_listen_on(port: int) -> bool:
    """Whether a listener (with SO_REUSEADDR, as megatrio's) can take *port* now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


async def test_a_busy_admin_port_fails_before_anything_starts_and_frees_the_public_one(
    busy_port: int,
) -> None:
    journal: list[str] = []

    class Recording(App):
        async def on_start(self, rt: megatrio.Runtime) -> None:
            journal.append("on_start")

    public = free_port()
    config = Config(bind=(f"127.0.0.1:{public}",), admin_bind=f"127.0.0.1:{busy_port}")
    with pytest.raises(ListenError) as info, trio.fail_after(10):
        await serve_app(Recording("busy"), config, handle_signals=False)
    assert str(info.value) == (
        f"cannot listen on 127.0.0.1:{busy_port}: [Errno 98] Address already in use"
    )
    assert info.value.errno == errno.EADDRINUSE
    assert isinstance(info.value, OSError)
    assert journal == []  # nothing started
    assert can_listen_on(public), "the public socket bound first was left open"


async def test_every_listener_is_closed_after_a_stop() -> None:
    config = Config(bind=("127.0.0.1:0",), admin_bind="127.0.0.1:0", grace_seconds=5)
    app = App("closing")
    async with trio.open_nursery() as nursery:
        serving: Serving = await nursery.start(
            lambda task_status: serve_app(
                app, config, handle_signals=False, task_status=task_status
            )
        )
        ports = [int(url.rsplit(":", 1)[1]) for url in (*serving.http, *serving.admin)]
        assert len(ports) == 2
        assert not any(can_listen_on(port) for port in ports)
        app.rt.stop()
    assert all(can_listen_on(port) for port in ports)


async def test_new_connections_are_refused_while_in_flight_requests_drain() -> None:
    app = App("draining")
    entered = trio.Event()
    release = trio.Event()

    @app.get("/slow")
    async def slow() -> str:
        entered.set()
        await release.wait()
        return "done"

    config = Config(bind=("127.0.0.1:0",), admin_bind="", grace_seconds=10)
    result: list[bytes] = []
    async with trio.open_nursery() as nursery:
        serving: Serving = await nursery.start(
            lambda task_status: serve_app(
                app, config, handle_signals=False, task_status=task_status
            )
        )
        port = int(serving.http[0].rsplit(":", 1)[1])

        async def request() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
                result.append(data)

        nursery.start_soon(request)
        await entered.wait()
        app.rt.stop()
        with trio.fail_after(5):
            # The listening socket closing has no event to wait on: connect until refused.
            while True:
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    break
                await probe.aclose()
                await trio.sleep(0.01)
        release.set()
    assert result[0].startswith(b"HTTP/1.1 200")
    assert result[0].endswith(b"done")


async def test_every_listener_is_closed_when_the_start_fails() -> None:
    class Broken(App):
        async def on_start(self, rt: megatrio.Runtime) -> None:
            raise RuntimeError("cannot open pool")

    ports = [free_port(), free_port()]
    config = Config(bind=(f"127.0.0.1:{ports[0]}",), admin_bind=f"127.0.0.1:{ports[1]}")
    with pytest.raises(RuntimeError, match="cannot open pool"), trio.fail_after(10):
        await serve_app(Broken("broken"), config, handle_signals=False)
    assert all(can_listen_on(port) for port in ports)
