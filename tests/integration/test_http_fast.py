"""The fast HTTP/1.1 front over real loopback sockets: framing, smuggling, limits, timeouts.

Each test serves a raw ASGI app with ``serve_http`` on the fast front and talks exact bytes to
it; every test runs with both parsers (llhttp through httptools, and the h11 fallback).
Timeout tests run on trio's autojump ``MockClock``: loopback bytes are in the peer's buffer
when ``send`` returns, so the clock only jumps when both ends really wait.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import megatrio.services.http._h1parse as h1parse
from megatrio.services.http._admin import serve_lifespan
from megatrio.services.http._front import HttpFront
from megatrio.services.http._server import HttpOptions, serve_http

from ..raw_http import connect, exchange, read_to_eof, responses_in, split_response

pytestmark = pytest.mark.anyio

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets; the timeout tests install a MockClock themselves


@pytest.fixture(params=["httptools", "h11"], autouse=True)
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "h11":
        monkeypatch.setattr(h1parse, "httptools", None)
    return str(request.param)


class Recorder:
    """A raw ASGI app: records each request's scope and body, answers ``<method> <path>``."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.bodies: list[list[bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        self.scopes.append(scope)
        chunks: list[bytes] = []
        self.bodies.append(chunks)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message["body"])
            if not message.get("more_body", False):
                break
        body = f"{scope['method']} {scope['path']} {sum(map(len, chunks))}".encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(serve_http, options=HttpOptions(front=HttpFront.FAST, **options))
        [url] = await nursery.start(serve, app, ["127.0.0.1:0"], "test", 2.0)
        yield url
        nursery.cancel_scope.cancel()


HEAD = b"POST / HTTP/1.1\r\nHost: x\r\n"

SMUGGLING = {
    "content-length-and-chunked": HEAD
    + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunked-and-content-length": HEAD
    + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    "two-content-lengths": HEAD + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "content-length-list": HEAD + b"Content-Length: 3, 4\r\n\r\nabcd",
    "chunked-not-last": HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\tc\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    "bare-lf-everywhere": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare-cr": b"GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
    "bad-chunk-size": HEAD + b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "http-0.9": b"GET /\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_ambiguous_framing_is_answered_400_and_the_connection_closed(
    request_bytes: bytes,
) -> None:
    app = Recorder()
    async with serving(app) as url:
        # A well-formed request follows: it must not be served on this connection.
        response = await exchange(url, request_bytes + b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = split_response(response)
    assert (status, headers["connection"]) == (400, "close")
    assert responses_in(response) == [400]
    assert app.scopes == []


async def test_an_unsupported_version_is_505() -> None:
    async with serving(Recorder()) as url:
        response = await exchange(url, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
    assert split_response(response)[0] == 505


async def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    app = Recorder()
    requests = b"".join(
        f"POST /{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {i}\r\n\r\n{'x' * i}".encode()
        for i in range(3)
    )
    async with serving(app) as url:
        last = b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        response = await exchange(url, requests + last)
    bodies = re.findall(rb"\r\n\r\n([A-Z]+ /\w+ \d+)", response)
    assert bodies == [b"POST /0 0", b"POST /1 1", b"POST /2 2", b"GET /end 0"]


async def test_a_chunked_body_streams_to_the_app_and_a_chunked_response_is_framed() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            message = await receive()
            await send({"type": "http.response.body", "body": message["body"], "more_body": True})
            if not message["more_body"]:
                break
        await send({"type": "http.response.body", "body": b""})

    async with serving(app) as url:
        stream = await connect(url)
        async with stream:
            await stream.send_all(HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            received = b""
            while b"abc" not in received:  # echoed before the rest of the body was sent
                received += await stream.receive_some()
            await stream.send_all(b"2\r\nde\r\n0\r\n\r\n")
            while not received.endswith(b"0\r\n\r\n"):
                received += await stream.receive_some()
    status, headers, body = split_response(received)
    assert (status, headers["transfer-encoding"]) == (200, "chunked")
    assert body == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


async def test_expect_100_continue_is_answered_when_the_app_reads_the_body() -> None:
    app = Recorder()
    async with serving(app) as url:
        stream = await connect(url)
        async with stream:
            await stream.send_all(HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            interim = await stream.receive_some()
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            await stream.send_all(b"hello")
            response = b""
            while not response.endswith(b"POST / 5"):
                response += await stream.receive_some()
    assert app.bodies == [[b"hello"]]


GET = b"GET / HTTP/1.1\r\nHost: x\r\n"
LIMITS = {
    "header-count": ({"max_header_count": 3}, GET + b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431),
    "head-size": ({"max_head_bytes": 1024}, GET + b"A: " + b"a" * 2000 + b"\r\n\r\n", 431),
    "content-length": ({"max_body_bytes": 4}, HEAD + b"Content-Length: 5\r\n\r\nhello", 413),
    "chunked-body": (
        {"max_body_bytes": 4},
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        413,
    ),
}


@pytest.mark.parametrize(("options", "request_bytes", "status"), LIMITS.values(), ids=LIMITS.keys())
async def test_limits_are_answered_with_their_status_and_a_close(
    options: dict[str, int], request_bytes: bytes, status: int
) -> None:
    async with serving(Recorder(), **options) as url:
        response = await exchange(url, request_bytes)
    assert split_response(response)[0] == status
    assert split_response(response)[1]["connection"] == "close"


async def test_a_content_length_over_the_limit_is_refused_before_the_body_is_sent() -> None:
    app = Recorder()
    async with serving(app, max_body_bytes=1000) as url:
        response = await exchange(url, HEAD + b"Content-Length: 1000000\r\n\r\n")
    assert split_response(response)[0] == 413
    assert app.scopes == []


async def test_an_endless_head_is_cut_off_at_the_limit() -> None:
    async with serving(Recorder(), max_head_bytes=4096) as url:
        stream = await connect(url)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX: ")
            for _ in range(8):  # never a line end: 128 KiB of one header value
                await stream.send_all(b"a" * 16384)
            response = await read_to_eof(stream)
    assert split_response(response)[0] == 431


async def test_scope_carries_path_query_addresses_and_lifespan_state() -> None:
    app = Recorder()
    async with serving(app, root_path="/api") as url:
        await exchange(
            url, b"GET /a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    [scope] = app.scopes
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/api/a b/c", b"/api/a%20b/c", b"x=1&y=%20",
    )  # fmt: skip
    assert (scope["root_path"], scope["http_version"], scope["scheme"]) == ("/api", "1.1", "http")
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"][1] == int(url.rsplit(":", 1)[1])
    assert scope["headers"][0] == (b"host", b"x")
    assert scope["state"] == {}


async def test_an_app_waiting_in_receive_learns_that_the_peer_left() -> None:
    left = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"  # a long poll, abandoned
        left.set()

    async with serving(app) as url:
        stream = await connect(url)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await trio.sleep(0.2)  # past the watch's first tick: the app's receive() is parked
        await stream.aclose()
        with trio.fail_after(2):
            await left.wait()


async def test_head_responses_and_204_carry_no_body() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        status = 204 if scope["path"] == "/none" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"" if status == 204 else b"body"})

    async with serving(app) as url:
        last = b"GET /none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        response = await exchange(url, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + last)
    assert responses_in(response) == [200, 204]
    assert b"body" not in response


async def test_an_app_that_sends_nothing_is_a_500_and_a_failing_app_fails_its_connection() -> None:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["path"] == "/boom":
            raise RuntimeError("boom")

    async with serving(app) as url:
        assert split_response(await exchange(url, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 500
        response = await exchange(url, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert split_response(response)[:2] == (
            500, {"content-type": "text/plain; charset=utf-8", "content-length": "22",
                  "connection": "close", "date": split_response(response)[1]["date"]},
        )  # fmt: skip


# -- timeouts and draining, on the autojump clock -------------------------------------------------


async def _idle_then_slow_head() -> None:
    async with serving(Recorder(), keep_alive_timeout_seconds=5, request_timeout_seconds=10) as url:
        stream = await connect(url)
        began = trio.current_time()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await read_to_eof(stream, within_seconds=60)
        assert responses_in(response) == [200]
        assert 5 <= trio.current_time() - began < 6  # the idle keep-alive connection closed
        await stream.aclose()
        slow = await connect(url)
        began = trio.current_time()
        await slow.send_all(b"GET / HTTP/1.1\r\nHost:")  # and never the rest
        response = await read_to_eof(slow, within_seconds=60)
        assert split_response(response)[0] == 408
        assert 10 <= trio.current_time() - began < 11
        await slow.aclose()


def test_idle_keep_alive_connections_close_and_a_slow_head_is_a_408(parser: str) -> None:
    trio.run(_idle_then_slow_head, clock=trio.testing.MockClock(autojump_threshold=0))


async def _receiver_released() -> None:
    delays: list[float] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return

        async def receiver() -> None:  # as Quart's: receives until http.disconnect
            while (await receive())["type"] != "http.disconnect":
                pass
            delays.append(trio.current_time() - sent_at)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.sleep(0.01)  # the receiver has taken the body and waits
            await send({"type": "http.response.start", "status": 200, "headers": []})
            sent_at = trio.current_time()
            await send({"type": "http.response.body", "body": b"ok"})

    async with serving(app) as url:
        response = await exchange(url, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert split_response(response)[2] == b"ok"
    assert delays == [0.0]  # released by the response itself, not by a later tick


def test_a_complete_response_releases_a_pending_receive_at_once(parser: str) -> None:
    trio.run(_receiver_released, clock=trio.testing.MockClock(autojump_threshold=0))


async def _drain() -> None:
    entered = trio.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        entered.set()
        await trio.sleep(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    from megatrio.services.http import _server

    async with trio.open_nursery() as nursery:
        drain_called = trio.Event()
        original = _server._Server._wait_stopping

        async def wait_stopping(self: Any) -> None:
            await drain_called.wait()

        _server._Server._wait_stopping = wait_stopping  # type: ignore[method-assign]
        try:
            serve = functools.partial(
                serve_http, options=HttpOptions(front=HttpFront.FAST, keep_alive_timeout_seconds=60)
            )
            [url] = await nursery.start(serve, app, ["127.0.0.1:0"], "test", 30.0)
            idle = await connect(url)
            busy = await connect(url)
            await busy.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await entered.wait()
            began = trio.current_time()
            drain_called.set()
            assert await read_to_eof(idle) == b""  # closed at once
            assert trio.current_time() - began < 0.5
            response = await read_to_eof(busy)
            status, headers, body = split_response(response)
            assert (status, headers["connection"], body) == (200, "close", b"done")
            await idle.aclose()
            await busy.aclose()
        finally:
            _server._Server._wait_stopping = original  # type: ignore[method-assign]


def test_a_stop_closes_idle_connections_at_once_and_finishes_in_flight_ones(parser: str) -> None:
    trio.run(_drain, clock=trio.testing.MockClock(autojump_threshold=0))


# -- Hypothesis: any request with ambiguous framing is refused, whatever else it carries -------

FRAMING_FAULTS = st.sampled_from(
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        b"Content-Length: 3\r\nContent-Length: 3\r\n",
        b"X-Fold: a\r\n b\r\n",
        b"X-Bare-LF: a\n",
        b"X-Bare-CR: a\rb\r\n",
    ]
)
BENIGN = st.lists(
    st.sampled_from(
        [b"Accept: */*\r\n", b"X-Y: z\r\n", b"Connection: keep-alive\r\n", b"A: b\r\n"]
    ),
    max_size=4,
)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(before=BENIGN, fault=FRAMING_FAULTS, after=BENIGN, split=st.integers(1, 200))
def test_ambiguous_framing_anywhere_in_the_head_is_refused(
    parser: str, before: list[bytes], fault: bytes, after: list[bytes], split: int
) -> None:
    request_bytes = HEAD + b"".join(before) + fault + b"".join(after) + b"\r\n0\r\n\r\n"

    async def main() -> None:
        app = Recorder()
        async with serving(app) as url:
            stream = await connect(url)
            async with stream:
                # In two writes, so that the fault may straddle two reads.
                await stream.send_all(request_bytes[:split])
                await stream.send_all(request_bytes[split:])
                response = await read_to_eof(stream)
        assert responses_in(response) == [400], response
        assert app.scopes == []

    trio.run(main)


# -- the socket wire: pieces of a response checkpoint, the last need not --------------------


def _declining_router(head: Any) -> None:
    return None  # every connection stays with the HTTP front, after its head was read


@pytest.mark.parametrize("router", [None, _declining_router], ids=["plain", "after-a-router"])
async def test_a_streamed_response_checkpoints_between_pieces_and_its_last_piece_need_not(
    router: Any,
) -> None:
    """A handler streaming to a peer that reads as fast as it sends still lets other tasks
    run (each piece is a checkpoint); the piece that ends a response is sent without one,
    the connection's next read being one. Behind a router, the bytes it read come first."""
    checked: list[str] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"a", b"b", b"c"):
            with trio.testing.assert_checkpoints():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        with trio.testing.assert_no_checkpoints():
            await send({"type": "http.response.body", "body": b"d"})
        checked.append(scope["path"])

    async with serving(app, upgrade=router) as url:
        first = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
        last = b"GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        response = await exchange(url, first + last)
    assert responses_in(response) == [200, 200]
    assert response.count(b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n1\r\nd\r\n0\r\n\r\n") == 2
    assert checked == ["/1", "/2"]


async def test_a_response_to_a_peer_that_never_reads_ends_when_the_server_is_cancelled() -> None:
    """A frozen client: the write waits for room that never comes, and the server's
    cancellation still ends the connection (and the app's send with it) at once."""
    sending = trio.Event()
    outcomes: list[str] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sending.set()
        try:
            await send({"type": "http.response.body", "body": b"x" * (64 << 20)})
        except trio.Cancelled:
            outcomes.append("cancelled")
            raise
        outcomes.append("sent")

    with trio.fail_after(10):
        async with serving(app) as url:
            stream = await connect(url)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await sending.wait()
            await trio.testing.wait_all_tasks_blocked()
        # The server is gone while its peer is still connected, reading nothing.
        await stream.aclose()
    assert outcomes == ["cancelled"]
