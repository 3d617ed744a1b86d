"""Raw HTTP/1.1 over real sockets (TCP or Unix) to an App served in-process: exact bytes."""

from __future__ import annotations

import functools
import re
import ssl
from typing import Any

import trio

from megatrio import App, Config, Serving, serve_app


async def start(nursery: trio.Nursery, app: App, config: Config) -> Serving:
    """Serve *app* in *nursery*; returns once every listener is up."""
    serving: Serving = await nursery.start(
        functools.partial(serve_app, app, config, handle_signals=False)
    )
    return serving


async def connect(url: str, *, tls: ssl.SSLContext | None = None) -> trio.abc.Stream:
    """A stream to ``http(s)://HOST:PORT`` or ``unix:PATH``."""
    if url.startswith("unix:"):
        return await trio.open_unix_socket(url.removeprefix("unix:"))
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    host = host.strip("[]")
    if tls is not None:
        return await trio.open_ssl_over_tcp_stream(
            host, int(port), ssl_context=tls, https_compatible=True
        )
    return await trio.open_tcp_stream(host, int(port))


async def read_to_eof(stream: trio.abc.Stream, within_seconds: float = 5.0) -> bytes:
    """Everything until the server closes; fails the test after *within_seconds*."""
    data = b""
    with trio.fail_after(within_seconds):
        while chunk := await stream.receive_some():
            data += chunk
    return data


async def exchange(
    url: str, request: bytes, *, tls: ssl.SSLContext | None = None, within_seconds: float = 5.0
) -> bytes:
    """Send *request* on a new connection and read until the server closes it."""
    stream = await connect(url, tls=tls)
    async with stream:
        await stream.send_all(request)
        return await read_to_eof(stream, within_seconds)


def get(path: str, *headers: str, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    assert match is not None, f"not an HTTP response: {response[:80]!r}"
    return int(match.group(1))


def split_response(response: bytes) -> tuple[int, dict[str, str], bytes]:
    """``(status, lower-cased headers, body)`` of one response (the body is what follows)."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status_of(response), headers, body


def responses_in(data: bytes) -> list[int]:
    """The statuses of every response in *data* (pipelined or keep-alive)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3})", data)]


def http_child(app: App) -> dict[str, Any]:
    """The ``http`` child's entry in the app's supervision snapshot."""
    [entry] = [c for c in app.rt.snapshot()["children"] if c["name"] == "http"]
    return entry


def child_info(app: App) -> dict[str, Any]:
    info: dict[str, Any] = http_child(app).get("info", {})
    return info


async def assert_serving(app: App, url: str, *, tls: ssl.SSLContext | None = None) -> None:
    """A normal GET is answered within 2 s and the HTTP child never restarted."""
    response = await exchange(url, get("/healthz"), tls=tls, within_seconds=2.0)
    assert status_of(response) == 200, response[:200]
    entry = http_child(app)
    assert entry["restarts"] == 0, entry
    assert entry["state"] == "running", entry
