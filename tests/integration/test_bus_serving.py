"""``megatrio run`` of an App using ``app.bus`` on a real nats-server: publish reaches a
subscriber child, request/reply answers, jobs and the bus share one connection, and a queue
group splits the messages between two served processes."""

from __future__ import annotations

import json
import signal
import urllib.request
from typing import Any

import pytest

import megatrio
from megatrio import JobSettings
from megatrio._config import Config
from megatrio.app._jobs import open_job_engine
from megatrio.app._nats import open_bus, open_connection

from ..servers import NatsServer
from .cli_support import Server


def served(nats_server: NatsServer) -> Server:
    return Server("bus_app:app", "--grace-seconds", "5", env={"MEGATRIO_NATS_URL": nats_server.url})


def received(server: Server) -> list[str]:
    """The subjects the listener child logged, in order."""
    events = (str(record.get("event", "")) for record in server.records())
    return [event.split()[1] for event in events if event.startswith("got events.")]


def clients(nats_server: NatsServer, name: str) -> list[dict[str, Any]]:
    """The server's client connections named *name* (its monitoring endpoint)."""
    with urllib.request.urlopen(nats_server.monitor_url + "/connz", timeout=5) as response:
        connz = json.load(response)
    return [c for c in connz["connections"] or () if c.get("name") == name]


def test_publish_request_and_jobs_share_one_connection(nats: NatsServer) -> None:
    server = served(nats)
    try:
        server.wait_line("listener subscribed")
        assert json.loads(server.get("/publish?data=hello")[1]) == {"published": 1}
        server.wait_line("got events.0 hello")
        assert json.loads(server.get("/request?data=ping")[1]) == {"reply": "PING"}
        assert "sequence" in json.loads(server.get("/enqueue")[1])
        server.wait_line("noop job")
        tree = json.loads(server.get("/_megatrio/tree", base=server.admin)[1])
        names = [c["name"] for c in tree["children"]]
        # The bus and the JetStream engine run on one connection: one `nats` child in the
        # tree, one client at the server.
        assert names.count("nats") == 1
        assert {"jobs-advisories", "jobs", "listener", "responder"} <= set(names)
        [nats_child] = [c for c in tree["children"] if c["name"] == "nats"]
        assert nats_child["info"]["nats_state"] == "connected"
        assert len(clients(nats, "busapp")) == 1
        server.signal(signal.SIGTERM)
        assert server.finish() == 0
    finally:
        server.kill()


def test_a_queue_group_splits_the_messages_between_two_processes(nats: NatsServer) -> None:
    first, second = served(nats), served(nats)
    try:
        for server in (first, second):
            server.wait_line("listener subscribed")
        assert len(clients(nats, "busapp")) == 2
        assert json.loads(first.get("/publish?count=100&data=q")[1]) == {"published": 100}

        def all_arrived() -> bool:
            return len(received(first)) + len(received(second)) >= 100

        first.wait_for(all_arrived, what="100 messages across both listeners")
        a, b = received(first), received(second)
        # Each message reached exactly one member of the group, and each member got some.
        assert a, "the first listener got none"
        assert b, "the second listener got none"
        assert sorted(a + b) == sorted(f"events.{n}" for n in range(100))
        for server in (first, second):
            server.signal(signal.SIGTERM)
        assert (first.finish(), second.finish()) == (0, 0)
    finally:
        first.kill()
        second.kill()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])  # real sockets need the real clock
async def test_the_runtime_opens_one_connection_and_the_engine_shares_it(
    nats: NatsServer, anyio_backend: str
) -> None:
    config = Config(nats_url=nats.url)
    async with megatrio.mega_runtime(name="shared") as rt:
        bus = await open_bus(rt, config, "shared")
        conn = await open_connection(rt, config, "shared")
        assert conn is not None
        assert bus is rt.bus
        assert await open_connection(rt, config, "shared") is conn  # not a second one
        async with open_job_engine(config, "shared", connection=conn) as engine:
            assert engine.connection is conn
            await engine.driver.declare([JobSettings("j")])
            assert await engine.driver.enqueue("j", b"{}") == 1
        # The engine closed; the connection it was given is still the runtime's, and open.
        assert conn.status.state == "connected"
        await rt.bus.publish("after.engine", b"still open")
        assert [c["name"] for c in rt.snapshot()["children"]] == ["nats"]
        assert len(clients(nats, "shared")) == 1
    assert conn.status.state == "closed"
    with pytest.raises(LookupError, match="needs NATS"):
        _ = rt.bus


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_open_job_engine_alone_opens_and_closes_its_own_connection(
    nats: NatsServer, anyio_backend: str
) -> None:
    # The CLI's use: no runtime, no shared connection.
    async with open_job_engine(Config(nats_url=nats.url), "alone") as engine:
        assert engine.connection is not None
        assert len(clients(nats, "alone")) == 1
        await engine.driver.declare([JobSettings("j")])
    assert engine.connection.status.state == "closed"
