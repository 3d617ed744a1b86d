"""The public listener over real sockets: error pages, serving options, TLS, Unix sockets, drain.

Each test serves an App in-process with ``serve_app`` and talks raw HTTP/1.1 to it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from quart import request, url_for

import megatrio
from megatrio import App, Config
from megatrio.services.http._admin import serve_lifespan

from ..raw_http import (
    assert_serving,
    child_info,
    connect,
    exchange,
    get,
    read_to_eof,
    responses_in,
    split_response,
    start,
    status_of,
)

pytestmark = pytest.mark.anyio

JSON = "Accept: application/json"


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets need the real clock


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


async def test_a_host_that_is_no_host_name_is_answered_400_and_the_connection_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``Host: a..b`` cannot be IDNA-encoded to bind the URL map: Quart let that escape its
    handlers (a 500 and a logged connection failure); the App answers 400 and keeps serving."""
    app = error_app()

    @app.get("/ok")
    async def ok() -> str:
        return "ok"

    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, config())).http
        bad = b"GET /ok HTTP/1.1\r\nHost: a..b\r\n\r\n"
        response = await exchange(url, bad + get("/ok"))
        assert responses_in(response) == [400, 200], response
        assert b"not a valid host name" in response
        assert response.endswith(b"ok")
        app.rt.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


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


# -- keep-alive, lifespan, root_path ------------------------------------------------------------


async def test_keep_alive_serves_several_requests_then_closes_when_idle() -> None:
    app = App("keepalive")
    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, config(keep_alive_timeout_seconds=0.3))).http
        stream = await connect(url)
        async with stream:
            await stream.send_all(get("/healthz", close=False) * 2)
            sent_at = trio.current_time()
            data = await read_to_eof(stream, within_seconds=3)
            idle_closed_after = trio.current_time() - sent_at
        assert responses_in(data) == [200, 200]
        assert 0.25 < idle_closed_after < 2.5
        app.rt.stop()


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


async def test_root_path_mounts_the_app_under_a_prefix() -> None:
    app = App("mounted")

    @app.get("/where")
    async def where() -> dict[str, str]:
        return {"root": request.root_path, "url": url_for("where")}

    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, config(root_path="/api/"))).http
        for path in ("/api/where", "/where"):  # a proxy may or may not strip the prefix
            status, _, body = split_response(await exchange(url, get(path)))
            assert (status, json.loads(body)) == (200, {"root": "/api", "url": "/api/where"})
        assert status_of(await exchange(url, get("/api/healthz"))) == 200
        assert status_of(await exchange(url, get("/healthz"))) == 200
        app.rt.stop()


# -- proxy headers ------------------------------------------------------------------------------


def whoami_app() -> App:
    app = App("whoami")

    @app.get("/whoami")
    async def whoami() -> dict[str, str]:
        return {"addr": request.remote_addr or "", "scheme": request.scheme}

    return app


FORWARDED = ("X-Forwarded-For: 198.51.100.1, 203.0.113.9", "X-Forwarded-Proto: https")


@pytest.mark.parametrize(
    ("allow", "expected"),
    [
        ((), {"addr": "127.0.0.1", "scheme": "http"}),
        (("10.0.0.0/8",), {"addr": "127.0.0.1", "scheme": "http"}),
        (("127.0.0.1",), {"addr": "203.0.113.9", "scheme": "https"}),
        (("127.0.0.0/8", "203.0.113.0/24"), {"addr": "198.51.100.1", "scheme": "https"}),
    ],
    ids=["off", "peer-not-listed", "peer-listed", "chain-of-trusted-proxies"],
)
async def test_proxy_headers_are_honoured_only_from_listed_peers(
    allow: tuple[str, ...], expected: dict[str, str]
) -> None:
    app = whoami_app()
    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, config(forwarded_allow_ips=allow))).http
        body = split_response(await exchange(url, get("/whoami", *FORWARDED)))[2]
        assert json.loads(body) == expected
        app.rt.stop()


# -- the connection limit -----------------------------------------------------------------------


async def wait_for_connections(app: App, count: int) -> None:
    with trio.fail_after(5):
        # The count lives in the child's snapshot: polled, there is no event to wait on.
        while child_info(app)["connections"] != count:  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_connections_past_the_limit_get_503_and_past_twice_it_are_closed() -> None:
    app = App("limited")
    async with trio.open_nursery() as nursery:
        cfg = config(max_concurrent_connections=2, keep_alive_timeout_seconds=30)
        [url] = (await start(nursery, app, cfg)).http
        idle = [await connect(url) for _ in range(2)]  # they take both slots
        await wait_for_connections(app, 2)
        status, headers, body = split_response(await exchange(url, get("/healthz", JSON)))
        assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
        assert json.loads(body)["status"] == 503
        waiting = [await connect(url) for _ in range(2)]  # answered 503 once they ask
        await wait_for_connections(app, 4)
        assert await exchange(url, get("/healthz")) == b""  # closed unanswered
        info = child_info(app)
        assert (info["connections_rejected"], info["connections_dropped"]) == (3, 1)
        for stream in idle + waiting:
            await stream.aclose()
        await wait_for_connections(app, 0)
        await assert_serving(app, url)
        app.rt.stop()


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return ca, certfile, keyfile


async def test_tls_serves_https_and_negotiates_http2(
    tls_files: tuple[trustme.CA, Path, Path],
) -> None:
    ca, certfile, keyfile = tls_files
    client = ssl.create_default_context()
    ca.configure_trust(client)
    app = App("tls")
    async with trio.open_nursery() as nursery:
        cfg = config(certfile=str(certfile), keyfile=str(keyfile))
        [url] = (await start(nursery, app, cfg)).http
        assert url.startswith("https://127.0.0.1:")
        await assert_serving(app, url, tls=client)
        h2_client = ssl.create_default_context()
        ca.configure_trust(h2_client)
        h2_client.set_alpn_protocols(["h2", "http/1.1"])
        stream = await connect(url, tls=h2_client)
        async with stream:
            assert isinstance(stream, trio.SSLStream)
            await stream.do_handshake()
            assert stream.selected_alpn_protocol() == "h2"
        # A plaintext client on the TLS port fails alone.
        await exchange(url.replace("https://", "http://"), get("/healthz"))
        await assert_serving(app, url, tls=client)
        app.rt.stop()


async def test_an_unreadable_certificate_is_a_startup_failure(tmp_path: Path) -> None:
    cfg = config(certfile=str(tmp_path / "missing.pem"), keyfile=str(tmp_path / "key.pem"))
    with pytest.raises(megatrio.StartupFailed, match="'http' failed to start: FileNotFoundError"):
        await megatrio.serve_app(App("nocert"), cfg, handle_signals=False)


# -- Unix domain sockets -----------------------------------------------------------------------


async def test_uds_serves_on_a_unix_socket_and_removes_it_after(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a socket file nobody listens on, as a crashed process leaves it
    stale.close()
    app = whoami_app()
    async with trio.open_nursery() as nursery:
        serving = await start(nursery, app, config(uds=str(path)))
        assert serving.http[1] == f"unix:{path}"
        await assert_serving(app, serving.http[1])
        body = split_response(await exchange(serving.http[1], get("/whoami")))[2]
        assert json.loads(body) == {"addr": "<local>", "scheme": "http"}  # Quart's word
        await assert_serving(app, serving.http[0])  # the TCP bind still serves too
        app.rt.stop()
    assert not path.exists()


async def test_uds_refuses_a_path_someone_listens_on_or_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "taken.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(megatrio.ListenError, match="another process is listening"):
            await megatrio.serve_app(App("taken"), config(uds=str(path)), handle_signals=False)
    assert path.exists()
    os.unlink(path)
    path.write_text("not a socket")
    with pytest.raises(megatrio.ListenError, match="exists and is not a socket"):
        await megatrio.serve_app(App("file"), config(uds=str(path)), handle_signals=False)
    assert path.read_text() == "not a socket"


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
    from megatrio.services.http._server import serve_http

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


async def test_the_fast_fronts_limits_come_from_the_config(http_front: str) -> None:
    if http_front != "fast":
        pytest.skip("the limits are the fast front's (hypercorn has its own)")
    app = App("limits")

    @app.post("/upload")
    async def upload() -> str:
        return str(len(await request.get_data()))

    limited = config(max_body_bytes=8, max_header_count=3, max_head_bytes=300)
    async with trio.open_nursery() as nursery:
        [url] = (await start(nursery, app, limited)).http
        small = (
            b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Length: 8\r\n\r\n12345678"
        )
        assert split_response(await exchange(url, small))[::2] == (200, b"8")
        large = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n123456789"
        assert status_of(await exchange(url, large)) == 413
        many = get("/upload", "A: 1", "B: 2", "C: 3")
        assert status_of(await exchange(url, many)) == 431
        long_head = get("/upload", "X-Long: " + "x" * 400)
        assert status_of(await exchange(url, long_head)) == 431
        app.rt.stop()
