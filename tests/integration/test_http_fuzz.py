"""Hostile HTTP/1.1 over real loopback sockets: the listener keeps serving, nothing restarts.

One App is served in-process per test and reused across that test's Hypothesis examples:
Hypothesis runs in a worker thread and sends each example through the server's own trio loop
(``trio.from_thread.run``). After every example a normal GET must be answered within 2 s and
the HTTP child must not have restarted — whatever a peer sends fails, at worst, its own
connection.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import request, websocket

import megatrio.services.http._hypercorn as hypercorn_glue
from megatrio import App, Config

from ..raw_http import (
    assert_serving,
    child_info,
    connect,
    exchange,
    http_child,
    read_to_eof,
    start,
    status_of,
)

pytestmark = pytest.mark.anyio

CONFIG = Config(bind=("127.0.0.1:0",), admin_bind="", grace_seconds=2)
ZZZ = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n"

FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


def fuzz_app() -> App:
    app = App("fuzz")

    @app.route("/", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def index() -> str:
        return "ok"

    @app.post("/echo")
    async def echo() -> dict[str, int]:
        return {"received": len(await request.get_data())}

    @app.http.websocket("/ws")
    async def ws() -> None:
        while True:
            await websocket.send(await websocket.receive())

    return app


# -- what a hostile peer sends -----------------------------------------------------------------

EOL = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n"])
METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"OPTIONS", b"PRI", b"CONNECT", b"get"])
TARGETS = st.sampled_from(
    [b"/", b"/echo", b"/ws", b"/healthz", b"*", b"http://x/", b"/%zz%00", b"/a?b#c", b"//"]
)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/x", b""])
NAMES = st.sampled_from(
    [
        b"Host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Connection",
        b"Upgrade",
        b"Expect",
        b"HTTP2-Settings",
        b"Sec-WebSocket-Key",
        b"Sec-WebSocket-Version",
        b"Accept",
    ]
)
VALUES = st.sampled_from(
    [
        b"chunked",
        b"gzip, chunked",
        b"chunked, gzip",
        b"close",
        b"keep-alive, Upgrade",
        b"Upgrade",
        b"websocket",
        b"h2c",
        b"100-continue",
        b"0",
        b"5",
        b"-1",
        b"99999999999999999999",
        b"5, 6",
        b"13",
        b"dGhlIHNhbXBsZSBub25jZQ==",
        b"application/json",
        b"",
    ]
)


def tokens(base: st.SearchStrategy[bytes], max_size: int = 12) -> st.SearchStrategy[bytes]:
    return base | st.binary(max_size=max_size)


request_lines = st.builds(
    lambda method, sep, target, version: method + sep + target + sep + version,
    tokens(METHODS),
    st.sampled_from([b" ", b"  ", b"\t", b""]),
    tokens(TARGETS, 40),
    tokens(VERSIONS),
)
header_lines = st.builds(
    lambda name, sep, value: name + sep + value,
    tokens(NAMES),
    st.sampled_from([b": ", b":", b" : ", b"", b":\r\n "]),
    tokens(VALUES, 30),
) | st.sampled_from([b"X-Big: " + b"a" * 20_000, b" folded continuation", b":", b"\x00"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request line and a header block, each piece possibly malformed."""
    eol = draw(EOL)
    lines = [draw(request_lines), *draw(st.lists(header_lines, max_size=8))]
    return eol.join(lines) + eol + draw(EOL)


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    """A POST with ``Transfer-Encoding: chunked`` and chunk framing, valid or not."""
    chunks = []
    for _ in range(draw(st.integers(0, 5))):
        data = draw(st.binary(max_size=24))
        size = draw(
            st.sampled_from([b"%x" % len(data), b"%X" % len(data)])
            | st.sampled_from(
                [b"ZZZ", b"-1", b"f" * 20, b"", b" 5", b"5 ", b"0x5", b"1;ext=1", b"5;\x00"]
            )
            | st.binary(max_size=6)
        )
        chunks.append(size + draw(EOL) + data + draw(EOL))
    end = draw(
        st.sampled_from([b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n", b"", b"0\r\n", b"xx\r\n"])
    )
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(chunks) + end


def get_request(path: bytes = b"/") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"


@st.composite
def pipelined(draw: st.DrawFn) -> bytes:
    """Valid keep-alive requests with garbage (or a malformed request) in between."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        parts.append(
            draw(
                st.sampled_from([get_request(), get_request(b"/healthz"), ZZZ])
                | st.binary(min_size=1, max_size=40)
                | heads()
            )
        )
    return b"".join(parts)


WS_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@st.composite
def websocket_frames(draw: st.DrawFn) -> bytes:
    """A valid WebSocket upgrade followed by frames, well-formed or not."""
    frames = []
    for _ in range(draw(st.integers(0, 4))):
        opcode = draw(st.sampled_from([0x1, 0x2, 0x8, 0x9, 0xA, 0x0, 0x3, 0xF]))
        fin = draw(st.booleans())
        masked = draw(st.booleans())
        payload = draw(st.binary(max_size=30))
        length = draw(st.sampled_from([len(payload), len(payload) + 3, 126, 127]))
        frame = bytes([(0x80 if fin else 0) | opcode, (0x80 if masked else 0) | min(length, 127)])
        if length == 126:
            frame += struct.pack("!H", len(payload))
        elif length == 127:
            frame += struct.pack("!Q", draw(st.sampled_from([len(payload), 2**63 - 1])))
        if masked:
            frame += b"\x01\x02\x03\x04"
        frames.append(frame + payload)
    return WS_UPGRADE + b"".join(frames)


@st.composite
def early_closes(draw: st.DrawFn) -> bytes:
    """A prefix of a valid request (often one promising a body it never sends)."""
    whole = draw(
        st.sampled_from(
            [
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 100,
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
                WS_UPGRADE + b"\x81\x85\x01\x02\x03\x04abcde",
            ]
        )
    )
    return whole[: draw(st.integers(0, len(whole)))]


# -- how it is delivered -----------------------------------------------------------------------

ENDINGS = st.sampled_from(["eof", "close", "reset"])
"""After sending: half-close and read until the server closes (it must, within 3 s); close;
or reset (RST, SO_LINGER 0) without reading."""


async def deliver(url: str, data: bytes, cuts: list[int], ending: str) -> None:
    stream = await connect(url)
    assert isinstance(stream, trio.SocketStream)
    try:
        start_at = 0
        for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
            piece = data[start_at:cut]
            start_at = cut
            if piece:
                await stream.send_all(piece)
                await trio.lowlevel.checkpoint()
        if ending == "eof":
            await stream.send_eof()
            await read_to_eof(stream, within_seconds=3)
        elif ending == "reset":
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except trio.BrokenResourceError:
        pass  # the server already gave up on this connection: its right
    finally:
        await stream.aclose()


def fuzz_against_one_server(
    data: st.SearchStrategy[bytes],
) -> Callable[[], Awaitable[None]]:
    """A test body: serve one App and throw every example of *data* at it."""

    async def body() -> None:
        app = fuzz_app()
        async with trio.open_nursery() as nursery:
            [url] = (await start(nursery, app, CONFIG)).http

            @FUZZ_SETTINGS
            @given(data=data, cuts=st.lists(st.integers(0, 1 << 16), max_size=3), ending=ENDINGS)
            def example(data: bytes, cuts: list[int], ending: str) -> None:
                trio.from_thread.run(deliver, url, data, cuts, ending)
                trio.from_thread.run(assert_serving, app, url)

            await trio.to_thread.run_sync(example)
            app.rt.stop()

    return body


test_malformed_request_lines_and_header_blocks = fuzz_against_one_server(heads())
test_chunked_framing = fuzz_against_one_server(chunked_bodies())
test_pipelined_garbage = fuzz_against_one_server(pipelined())
test_early_closes = fuzz_against_one_server(early_closes())
test_websocket_frames = fuzz_against_one_server(websocket_frames())


# -- the regression: hypercorn's 400 racing the app's response ---------------------------------


async def zzz_burst(url: str, count: int) -> list[bytes]:
    responses: list[bytes] = []

    async def one() -> None:
        responses.append(await exchange(url, ZZZ, within_seconds=5))

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return responses


async def test_a_burst_of_malformed_chunked_bodies_is_answered_400_and_serving_goes_on() -> None:
    app = fuzz_app()
    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, CONFIG)).http
        responses = await zzz_burst(url, 30)
        # One complete response each — the 400, or the app's, whichever h11 let out first —
        # and no connection failed: the EOF waits for a send in progress.
        assert all(status_of(r) in (200, 400) for r in responses), responses
        await assert_serving(app, url)
        assert child_info(app)["connection_errors"] == 0
        app.rt.stop()


async def test_with_the_send_race_exposed_the_failure_stays_with_its_connection(
    monkeypatch: pytest.MonkeyPatch, http_front: str
) -> None:
    if http_front == "fast":
        pytest.skip("hypercorn's race: the fast front sends a connection's bytes from one task")

    # hypercorn's own behaviour: send_eof does not wait for a send in progress, so the 400's
    # send_all can meet the app task's send_eof and raise BusyResourceError.
    async def unordered_send_all(self: Any, data: bytes) -> None:
        await self.transport.send_all(data)

    async def unordered_send_eof(self: Any) -> None:
        await self.transport.send_eof()

    monkeypatch.setattr(hypercorn_glue.OrderedSendStream, "send_all", unordered_send_all)
    monkeypatch.setattr(hypercorn_glue.OrderedSendStream, "send_eof", unordered_send_eof)
    app = fuzz_app()
    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, CONFIG)).http
        # The race fires on about one request in five here; bursts until it has, bounded.
        for _ in range(10):
            await zzz_burst(url, 30)
            await assert_serving(app, url)
            if child_info(app)["connection_errors"]:
                break
        assert child_info(app)["connection_errors"] > 0, "the race never fired"
        assert http_child(app)["restarts"] == 0
        app.rt.stop()


async def test_websocket_frames_before_the_accept_fail_only_their_connection() -> None:
    # hypercorn answers frames that arrive before the app accepted with a 400 that h11 can no
    # longer send; the LocalProtocolError escapes hypercorn's connection handler.
    app = fuzz_app()
    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, CONFIG)).http
        for _ in range(5):
            await deliver(url, WS_UPGRADE + b"\x81\x85\x01\x02\x03\x04abcde", [], "eof")
            await assert_serving(app, url)
        assert child_info(app)["connection_errors"] == 5
        app.rt.stop()
