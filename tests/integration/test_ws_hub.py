"""The WebSocket hub served by serve_app on the HTTP port, with real trio-websocket clients
over loopback sockets: handshakes, channels, backpressure, limits, heartbeats, stop."""

from __future__ import annotations

import json
import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio_websocket

import megatrio
from megatrio import App, Config, Serving, serve_app
from megatrio.services.stores._redis import open_redis
from megatrio.services.ws._roster import Roster

from ..servers import NatsServer, RedisServer
from .cli_support import Server
from .scrape import get, metrics_of

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


CONFIG = Config(bind=("127.0.0.1:0",), admin_bind="127.0.0.1:0", grace_seconds=3)


def chat_app(**settings: Any) -> App:
    app = App("chat")
    chat = app.ws("/chat/<room>", **settings)

    @chat.on_connect
    async def connect(conn: megatrio.Connection) -> None:
        if conn.query.get("token") == "bad":
            raise megatrio.Reject(403, "bad token")
        if conn.cookies.get("kind") == "muted":
            conn.state["muted"] = True
        conn.join(conn.params["room"])

    @chat.on_message
    async def message(conn: megatrio.Connection, data: Any) -> None:
        if data == "boom":
            raise RuntimeError("handler bug")
        if data == "whoami":
            conn.send({"id": conn.id, "room": conn.params["room"], "state": conn.state})
            return
        app.hub.broadcast(conn.params["room"], {"from": conn.id, "data": data})

    @app.get("/")
    async def index() -> str:
        return "plain http still works"

    return app


@asynccontextmanager
async def client(url: str, **options: Any) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """trio-websocket's client, whose socket is closed on exit however the connection ended:
    trio-websocket 0.12 leaves it open when the server closed first."""
    ws: trio_websocket.WebSocketConnection | None = None
    try:
        async with trio_websocket.open_websocket_url(url, **options) as ws:
            yield ws
    finally:
        if ws is not None:
            with trio.CancelScope(shield=True):
                await ws._stream.aclose()


@asynccontextmanager
async def serving(app: App, config: Config = CONFIG) -> AsyncIterator[tuple[Serving, str]]:
    async with trio.open_nursery() as nursery:
        serving: Serving = await nursery.start(
            lambda task_status: serve_app(
                app, config, handle_signals=False, task_status=task_status
            )
        )
        url = serving.http[0].replace("http://", "ws://")
        try:
            yield serving, url
        finally:
            app.rt.stop()


def hub_info(app: App) -> dict[str, Any]:
    [ws] = [c for c in app.rt.snapshot()["children"] if c["name"] == "ws"]
    app.hub._annotate()
    [ws] = [c for c in app.rt.snapshot()["children"] if c["name"] == "ws"]
    return ws["info"]  # type: ignore[no-any-return]


async def closed_with(ws: trio_websocket.WebSocketConnection) -> tuple[int, str]:
    with trio.fail_after(10):
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                await ws.get_message()
    return closed.value.reason.code, closed.value.reason.reason or ""


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda ws: ws.send_message("x" * 2000), 1009),  # over max_message_bytes
        (lambda ws: ws.send_message("{not json"), 1007),
        (lambda ws: ws.send_message(b"\x00binary"), 1003),
        (lambda ws: ws.send_message(json.dumps("boom")), 1011),  # the handler raised
    ],
)
async def test_bad_input_closes_that_connection_with_its_code_and_nothing_else(
    send: Any, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="megatrio.ws")
    app = chat_app(max_message_bytes=1000)
    with trio.fail_after(30):
        async with serving(app) as (_, url):
            async with (
                client(f"{url}/chat/a") as bystander,
                client(f"{url}/chat/a") as culprit,
            ):
                await send(culprit)
                assert (await closed_with(culprit))[0] == code
                # The server and the other connection are unaffected.
                await bystander.send_message(json.dumps("still here"))
                assert (await receive_json(bystander))["data"] == "still here"
            assert hub_info(app)["connection_errors"] == 0
    # Logged once, with its code.
    closes = [r for r in caplog.records if r.name == "megatrio.ws" and "closed" in r.getMessage()]
    assert len(closes) == 1
    assert f"closed {code} " in closes[0].getMessage()


async def test_invalid_utf8_ends_the_connection_as_1007() -> None:
    app = chat_app()
    with trio.fail_after(30):
        async with serving(app) as (_, url):
            mask = b"\x01\x02\x03\x04"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\xff\xfe"))
            frame = b"\x81\x82" + mask + payload  # FIN, text, masked, 2 bytes
            answer = await handshake_answer(url, "/chat/a", frame)
            # trio-websocket 0.12 drops the TCP connection on invalid UTF-8 without a close
            # frame (wsproto reports the failure as a close event); the hub records it as 1007.
            assert answer.startswith(b"HTTP/1.1 101 ")
            while not hub_info(app)["closes"]:  # noqa: ASYNC110
                await trio.sleep(0.02)
            assert hub_info(app)["closes"] == {"1007": 1}


async def test_a_peer_that_never_answers_pings_is_closed_1011() -> None:
    app = chat_app(ping_interval_seconds=0.2, ping_timeout_seconds=0.3)
    with trio.fail_after(30):
        async with serving(app) as (_, url):
            silent = await _raw_handshake(url, "/chat/a")  # never reads: never pongs
            async with _closing(silent), client(f"{url}/chat/a") as lively:
                while not hub_info(app)["closes"]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                assert hub_info(app)["closes"] == {"1011": 1}
                # trio-websocket answers pings: the lively one stays.
                await lively.send_message(json.dumps("whoami"))
                assert (await receive_json(lively))["room"] == "a"


async def test_a_flood_past_the_inbound_rate_is_closed_1008() -> None:
    app = chat_app(rate_per_second=5, rate_burst=3)
    with trio.fail_after(30):
        async with serving(app) as (_, url), client(f"{url}/chat/a") as ws:
            for _ in range(10):
                await ws.send_message(json.dumps("whoami"))
            assert (await closed_with(ws))[0] == 1008


async def test_a_graceful_stop_sends_1001_after_what_was_queued() -> None:
    app = chat_app()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            serving_: Serving = await nursery.start(
                lambda task_status: serve_app(
                    app, CONFIG, handle_signals=False, task_status=task_status
                )
            )
            url = serving_.http[0].replace("http://", "ws://")
            async with client(f"{url}/chat/a") as ws:
                while not app.hub.members("a"):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                for n in range(5):
                    app.hub.broadcast("a", {"n": n})
                app.rt.stop()
                got = [json.loads(await ws.get_message())["n"] for _ in range(5)]
                assert got == [0, 1, 2, 3, 4]
                assert await closed_with(ws) == (1001, "server going away")


async def test_a_drop_oldest_channel_keeps_the_newest_instead_of_closing() -> None:
    app = chat_app(max_buffered_bytes=4096)
    with trio.fail_after(30):
        async with serving(app) as (_, url):
            stalled = await _raw_handshake(url, "/chat/ticks")
            async with _closing(stalled):
                while not app.hub.members("ticks"):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                app.hub.configure_channel("ticks", drop_oldest=True)
                [conn] = app.hub.connections.values()
                for n in range(20_000):
                    app.hub.broadcast("ticks", {"tick": n, "pad": "x" * 100})
                    if n % 100 == 0:
                        await trio.lowlevel.checkpoint()
                assert conn.conn_state.value == "open"  # ephemeral data never closes it
                assert conn.dropped > 0
                assert conn.queued_bytes <= 4096
                newest = conn._queue.take()
                assert newest is not None


def fast_id(app: App) -> str:
    [conn] = [c for c in app.hub.connections.values() if c.conn_state.value == "open"]
    return conn.id


async def receive_json(ws: trio_websocket.WebSocketConnection) -> Any:
    with trio.fail_after(5):
        return json.loads(await ws.get_message())


async def test_websocket_and_http_share_the_port_and_channels_fan_out() -> None:
    app = chat_app()
    with trio.fail_after(30):
        async with serving(app) as (serving_, url):
            async with (
                client(f"{url}/chat/a") as alice,
                client(f"{url}/chat/a") as bob,
                client(f"{url}/chat/b") as carol,
            ):
                await alice.send_message(json.dumps("whoami"))
                me = await receive_json(alice)
                assert me["room"] == "a"
                assert me["id"].startswith(app.hub.node + ":")
                await bob.send_message(json.dumps("hello"))
                for member in (alice, bob):
                    got = await receive_json(member)
                    assert got["data"] == "hello"
                with trio.move_on_after(0.3):
                    await carol.get_message()
                    pytest.fail("another room's broadcast reached carol")
                assert sorted(app.hub.channels().items()) == [("a", 2), ("b", 1)]
                info = hub_info(app)
                assert info["connections"] == 3
            # Plain HTTP on the very same port.
            host, port = serving_.http[0].removeprefix("http://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                data = b""
                with trio.fail_after(5):
                    while chunk := await stream.receive_some():
                        data += chunk
            assert data.startswith(b"HTTP/1.1 200")
            assert data.endswith(b"plain http still works")
            with trio.fail_after(5):
                while hub_info(app)["connections"]:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            assert hub_info(app)["closes"] == {"1000": 3}


async def test_on_connect_rejects_with_its_status_and_reads_cookies() -> None:
    app = chat_app()
    with trio.fail_after(30):
        async with serving(app) as (served, url):
            # A raw client: trio-websocket's own leaks its socket on a rejection.
            answer = await handshake_answer(url, "/chat/a?token=bad")
            assert answer.startswith(b"HTTP/1.1 403 ")
            assert answer.endswith(b"\r\n\r\nbad token")
            async with client(
                f"{url}/chat/a", extra_headers=[(b"cookie", b"kind=muted; x=1")]
            ) as ws:
                await ws.send_message(json.dumps("whoami"))
                assert (await receive_json(ws))["state"] == {"muted": True}
                metrics = metrics_of((await get(served.admin[0], "/metrics"))[2])
                assert metrics["megatrio_ws_connections"][()] == 1
                assert metrics["megatrio_ws_channels"][()] == 1
            assert hub_info(app)["rejected"] == {"403": 1}
            metrics = metrics_of((await get(served.admin[0], "/metrics"))[2])
    assert metrics["megatrio_ws_rejected_total"] == {(("status", "403"),): 1}
    assert metrics["megatrio_ws_accepted_total"][()] == 1


async def test_a_client_that_never_reads_is_closed_1013_and_the_others_get_everything() -> None:
    cap = 256 * 1024
    app = chat_app(max_buffered_bytes=cap, send_timeout_seconds=30)
    payload = "x" * 10_000
    count = 1000  # 10 MB: past the stalled client's socket buffers plus its queue
    with trio.fail_after(60):
        async with serving(app) as (_, url):
            stalled = await _raw_handshake(url, "/chat/r")  # never reads again
            async with (
                _closing(stalled),
                client(f"{url}/chat/r") as fast,
            ):
                while len(app.hub.members("r")) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                received = 0
                peak = 0

                async def read_all() -> None:
                    nonlocal received
                    while received < count:
                        assert await fast.get_message() == payload
                        received += 1

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_all)
                    for sent in range(1, count + 1):
                        app.hub.broadcast("r", payload)
                        peak = max(peak, app.hub.queued_bytes)
                        # A reader that keeps up: never more than 20 messages behind.
                        while sent - received > 20:  # noqa: ASYNC110
                            await trio.sleep(0.001)
                assert received == count
                # The stalled one left the channel at once; it is closed (1013) once its close
                # handshake, which it never answers, has had its bound.
                assert app.hub.members("r") == [fast_id(app)]
                while not hub_info(app)["closes"]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                info = hub_info(app)
                assert info["closes"] == {"1013": 1}
                assert info["connections"] == 1
                # Bounded: both queues together never held more than the cap plus the
                # fast one's 20 messages.
                assert peak <= cap + 21 * len(payload)


HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def handshake_answer(url: str, path: str, then: bytes = b"") -> bytes:
    """Everything the server answers a raw handshake for *path*, to EOF; *then* is sent once
    the answer's head has arrived (a client sends no frame before the 101)."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(HANDSHAKE.format(path=path).encode())
        data = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in data and (chunk := await stream.receive_some()):
                data += chunk
            if then:
                await stream.send_all(then)
            while chunk := await stream.receive_some():
                data += chunk
    return data


@asynccontextmanager
async def _closing(sock: socket.socket) -> AsyncIterator[None]:
    try:
        yield
    finally:
        sock.close()


async def _raw_handshake(url: str, path: str) -> socket.socket:
    """A WebSocket client that completes its handshake and then never reads: a plain
    blocking socket with a small receive buffer."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(HANDSHAKE.format(path=path).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await trio.to_thread.run_sync(sock.recv, 1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


async def test_the_readme_example_chat_room_works() -> None:
    from examples.hello import app as hello

    with trio.fail_after(30):
        async with serving(hello) as (serving_, url):
            async with client(f"{url}/chat/lobby") as ada, client(f"{url}/chat/lobby") as bob:
                joined = await receive_json(ada)  # bob joined after ada
                assert "joined" in joined
                await bob.send_message(json.dumps("hi ada"))
                assert (await receive_json(ada))["text"] == "hi ada"
                assert (await receive_json(bob))["text"] == "hi ada"
            host, port = serving_.http[0].removeprefix("http://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                page = b""
                with trio.fail_after(5):
                    while chunk := await stream.receive_some():
                        page += chunk
            assert b"new WebSocket(" in page


async def test_malformed_handshakes_and_garbage_frames_fail_alone() -> None:
    app = chat_app()
    with trio.fail_after(30):
        async with serving(app) as (_, url):
            host, port = url.removeprefix("ws://").rsplit(":", 1)
            for bad, status in (
                (
                    b"GET /chat/a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    b"400",  # no Sec-WebSocket-Key
                ),
                (
                    HANDSHAKE.format(path="/chat/a").replace("Version: 13", "Version: 99").encode(),
                    b"426",
                ),
            ):
                stream = await trio.open_tcp_stream(host, int(port))
                async with stream:
                    await stream.send_all(bad)
                    answer = b""
                    with trio.fail_after(10):
                        while chunk := await stream.receive_some():
                            answer += chunk
                assert answer.split()[1] == status
            # Garbage where frames should be (an unmasked, reserved-opcode frame): closed.
            answer = await handshake_answer(url, "/chat/a", b"\xff" * 64)
            assert answer.startswith(b"HTTP/1.1 101 ")
            # The hub is alive and serves the next client.
            async with client(f"{url}/chat/a") as ws:
                await ws.send_message(json.dumps("whoami"))
                assert (await receive_json(ws))["room"] == "a"
            assert hub_info(app)["connection_errors"] == 0


async def test_a_broadcast_reaches_every_node_exactly_once_over_the_bus(nats: NatsServer) -> None:
    # Two nodes of one app on one NATS: each a served app of its own (ports, hub, bus).
    config = attrs.evolve(CONFIG, nats_url=nats.url)
    first, second = chat_app(), chat_app()
    with trio.fail_after(60):
        async with serving(first, config) as (_, url1), serving(second, config) as (_, url2):
            assert first.hub.node != second.hub.node
            async with (
                client(f"{url1}/chat/a") as here,
                client(f"{url2}/chat/a") as there,
                client(f"{url2}/chat/b") as elsewhere,
            ):
                while not (first.hub.members("a") and second.hub.members("a")):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                for n in range(20):
                    await here.send_message(json.dumps(n))  # first node's on_message broadcasts
                got_here = [(await receive_json(here))["data"] for _ in range(20)]
                got_there = [(await receive_json(there))["data"] for _ in range(20)]
                assert got_here == got_there == list(range(20))
                # Exactly once: nothing more arrives on either node, and not in another room.
                for ws in (here, there, elsewhere):
                    with trio.move_on_after(0.5):
                        extra = await ws.get_message()
                        pytest.fail(f"a broadcast arrived twice or elsewhere: {extra}")
                info = hub_info(first)
                assert (info["fanout_sent"], info["fanout_dropped"]) == (20, 0)
                assert hub_info(second)["fanout_received"] == 20


async def test_the_roster_shows_both_nodes_in_one_round_trip_and_a_stop_removes_its_own(
    nats: NatsServer, redis: RedisServer
) -> None:
    config = attrs.evolve(CONFIG, nats_url=nats.url, redis_url=redis.url)
    first, second = chat_app(), chat_app()
    rooms = [f"r{n}" for n in range(10)]
    with trio.fail_after(60):
        async with serving(first, config) as (_, url1):
            async with (
                serving(second, config) as (_, url2),
                client(f"{url1}/chat/r0") as a,
                client(f"{url2}/chat/r0") as b,
                client(f"{url2}/chat/r7") as c,
            ):
                ids = {}
                for name, ws in (("a", a), ("b", b), ("c", c)):
                    await ws.send_message(json.dumps("whoami"))
                    ids[name] = (await receive_json(ws))["id"]
                expected = {room: [] for room in rooms}
                expected["r0"] = sorted([ids["a"], ids["b"]])
                expected["r7"] = [ids["c"]]
                while await first.hub.lookup(rooms) != expected:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                roster = first.hub.roster
                assert roster is not None
                redis_client = roster._client
                before = redis_client.writes  # type: ignore[attr-defined]
                assert await first.hub.lookup(rooms) == expected
                # Ten channels, one socket write: the ZRANGEs went out together.
                assert redis_client.writes - before == 1  # type: ignore[attr-defined]
            # The second node stopped gracefully: its members left the roster at once.
            remaining = {room: [] for room in rooms}
            with trio.fail_after(5):
                while (found := await first.hub.lookup(rooms)) != remaining:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert found == remaining


async def test_a_killed_nodes_members_vanish_after_the_ttl_and_broadcasts_cross_processes(
    nats: NatsServer, redis: RedisServer
) -> None:
    env = {
        "MEGATRIO_NATS_URL": nats.url,
        "MEGATRIO_REDIS_URL": redis.url,
        "MEGATRIO_WS_ROSTER_TTL_SECONDS": "1.5",
        "MEGATRIO_WS_ROSTER_REFRESH_SECONDS": "0.3",
    }
    nodes = [Server("ws_app:app", env=env), Server("ws_app:app", env=env)]
    try:
        urls = [node.url.replace("http://", "ws://") for node in nodes]
        with trio.fail_after(60):
            async with client(f"{urls[0]}/chat/lobby") as a, client(f"{urls[1]}/chat/lobby") as b:
                ids = []
                for ws in (a, b):
                    await ws.send_message(json.dumps("whoami"))
                    ids.append((await receive_json(ws))["id"])
                assert ids[0].rsplit(":", 1)[0] != ids[1].rsplit(":", 1)[0]  # two nodes
                async with open_redis(redis.url) as redis_client:
                    roster = Roster(redis_client, namespace="wsnodes")
                    while (await roster.lookup(["lobby"]))["lobby"] != sorted(ids):  # noqa: ASYNC110
                        await trio.sleep(0.05)
                    # One process's broadcast reaches the other's member, once.
                    await b.send_message(json.dumps("across"))
                    assert (await receive_json(a))["data"] == "across"
                    assert (await receive_json(b))["data"] == "across"
                    # kill -9: no graceful removal; its entry expires by its score.
                    nodes[1].proc.send_signal(signal.SIGKILL)
                    killed_at = trio.current_time()
                    while (await roster.lookup(["lobby"]))["lobby"] != [ids[0]]:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                    # Between TTL - refresh and TTL after the kill (plus polling).
                    assert 1.5 - 0.3 - 0.1 < trio.current_time() - killed_at < 1.5 + 1.0
    finally:
        for node in nodes:
            node.kill()


async def test_presence_events_tell_the_other_members_who_joins_and_leaves() -> None:
    app = chat_app()
    with trio.fail_after(30):
        async with serving(app) as (_, url):
            app.hub.configure_channel("p", presence=True)
            async with client(f"{url}/chat/p") as first:
                await first.send_message(json.dumps("whoami"))
                me = (await receive_json(first))["id"]
                async with client(f"{url}/chat/p") as second:
                    joined = await receive_json(first)
                    assert joined["presence"] == "join"
                    assert joined["channel"] == "p"
                    other = joined["id"]
                    assert other != me
                    with trio.move_on_after(0.3):
                        await second.get_message()  # its own join is not announced to it
                        pytest.fail("a member was told of its own join")
                left = await receive_json(first)
                assert left == {"presence": "leave", "channel": "p", "id": other}


async def test_under_workers_each_worker_is_a_node_and_broadcasts_reach_all(
    nats: NatsServer, redis: RedisServer
) -> None:
    env = {"MEGATRIO_NATS_URL": nats.url, "MEGATRIO_REDIS_URL": redis.url}
    server = Server("ws_app:app", "--workers", "2", env=env)
    url = server.url.replace("http://", "ws://")

    def workers_ready() -> int:
        tree = json.loads(server.get("/_megatrio/tree", base=server.admin)[1])
        [workers] = [c for c in tree["children"] if c["name"] == "workers"]
        return sum(1 for w in workers["supervisor"]["children"] if w.get("info", {}).get("ready"))

    # "serving" is announced once the first worker is ready: until the second one is, the
    # first accepts every connection.
    await trio.to_thread.run_sync(
        lambda: server.wait_for(lambda: workers_ready() == 2, 30, "both workers ready")
    )
    nodes: list[str] = []
    got: list[Any] = []
    go = trio.Event()

    async def member() -> None:
        async with client(f"{url}/chat/all") as ws:
            await ws.send_message(json.dumps("whoami"))
            nodes.append((await receive_json(ws))["id"].rsplit(":", 1)[0])
            await go.wait()
            got.append((await receive_json(ws))["data"])
            with trio.move_on_after(0.3):
                extra = await ws.get_message()
                got.append(f"twice: {extra}")

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                # The workers share one listening socket and whichever wakes first accepts:
                # concurrent bursts of connections reach both.
                while len(set(nodes)) < 2 and len(nodes) < 80:
                    before = len(nodes)
                    for _ in range(8):
                        nursery.start_soon(member)
                    while len(nodes) < before + 8:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                assert len(set(nodes)) == 2
                async with client(f"{url}/chat/all") as sender:
                    await trio.sleep(0.2)  # every member has joined on its node
                    go.set()
                    await sender.send_message(json.dumps("to everyone"))
                    assert (await receive_json(sender))["data"] == "to everyone"
        assert got == ["to everyone"] * len(nodes)
    finally:
        server.kill()


async def test_a_redis_outage_costs_the_roster_not_the_connections(redis: RedisServer) -> None:
    config = attrs.evolve(
        CONFIG,
        redis_url=redis.url,
        ws_roster_ttl_seconds=3.0,
        ws_roster_refresh_seconds=0.3,
    )
    app = chat_app()
    with trio.fail_after(60):
        async with serving(app, config) as (_, url):
            redis.stop()
            async with client(f"{url}/chat/x") as ws:
                await ws.send_message(json.dumps("whoami"))
                me = (await receive_json(ws))["id"]
                while not hub_info(app)["roster_failures"]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                await trio.to_thread.run_sync(redis.start)
                # The next refresh rewrites the entry: the roster knows it again.
                while (await _lookup_or_none(app, ["x"])) != {"x": [me]}:  # noqa: ASYNC110
                    await trio.sleep(0.1)
                await ws.send_message(json.dumps("whoami"))
                assert (await receive_json(ws))["id"] == me


async def _lookup_or_none(app: App, channels: list[str]) -> dict[str, list[str]] | None:
    try:
        return await app.hub.lookup(channels)
    except Exception:
        return None
