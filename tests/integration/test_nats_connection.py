"""The NATS connection on a real nats-server: open, fail to open, lose and regain it."""

from __future__ import annotations

import functools
import logging
import socket

import pytest
import trio
import trio.lowlevel

import megatrio
from megatrio import ChildSpec, Supervisor
from megatrio.services.nats._connection import open_nats, serve_nats_status

from ..servers import NatsServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


def with_credentials(server: NatsServer) -> str:
    # The test server has no authorization configured: it accepts and ignores credentials.
    return f"nats://alice:hunter2-secret@{server.host}:{server.port}"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_open_gives_a_connected_client_and_its_jetstream(nats: NatsServer) -> None:
    with trio.fail_after(20):
        async with open_nats(nats.url, name="t-open") as conn:
            assert conn.status.state == "connected"
            assert conn.status.reconnects == 0
            assert conn.client.is_connected
            await conn.run(conn.client.flush)
            info = await conn.run(conn.jetstream().account_info)
            assert info.limits is not None
        assert conn.status.state == "closed"
        assert conn.client.is_closed


async def test_an_unreachable_server_fails_the_open_naming_the_redacted_url() -> None:
    url = f"nats://alice:hunter2-secret@127.0.0.1:{unused_port()}"
    with trio.fail_after(10), pytest.raises(megatrio.BackendUnavailable) as caught:
        async with open_nats(url, name="t-down"):
            pytest.fail("opened a connection to nothing")  # pragma: no cover
    message = str(caught.value)
    assert "nats://alice:***@127.0.0.1" in message
    assert "hunter2" not in message
    assert caught.value.__cause__ is not None


async def test_a_restart_is_seen_as_a_disconnect_then_a_reconnect(
    nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="megatrio.nats")
    with trio.fail_after(30):
        async with open_nats(with_credentials(nats), name="t-restart") as conn:
            supervisor = Supervisor(name="t")
            async with trio.open_nursery() as nursery:
                await nursery.start(supervisor.run)
                await supervisor.start_child(
                    ChildSpec("nats", functools.partial(serve_nats_status, conn))
                )
                (child,) = supervisor.snapshot()["children"]
                assert child["info"] == {
                    "nats_url": f"nats://alice:***@{nats.host}:{nats.port}",
                    "nats_state": "connected",
                    "nats_reconnects": 0,
                    "nats_last_error": None,
                }

                await trio.to_thread.run_sync(nats.stop)
                status = conn.status
                while status.state != "disconnected":
                    status = await conn.wait_status_change(status)
                await trio.lowlevel.checkpoint()  # the child, woken with us, runs first
                (child,) = supervisor.snapshot()["children"]
                assert child["info"]["nats_state"] == "disconnected"
                assert child["info"]["nats_last_error"] is not None

                await trio.to_thread.run_sync(nats.start)
                while status.reconnects < 1:
                    status = await conn.wait_status_change(status)
                assert status.state == "connected"
                await trio.lowlevel.checkpoint()
                (child,) = supervisor.snapshot()["children"]
                assert child["info"]["nats_state"] == "connected"
                assert child["info"]["nats_reconnects"] == 1
                await conn.run(conn.client.flush)  # usable again
                supervisor.stop()
    messages = [record.getMessage() for record in caplog.records]
    assert any("lost" in m for m in messages)
    assert any("re-established" in m for m in messages)
    for record in caplog.records:
        assert "hunter2" not in record.getMessage()
        assert "alice:***@" in record.getMessage()
