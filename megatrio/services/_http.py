"""HTTP serving as a supervised child: hypercorn's trio worker behind a small ASGI front.

The front answers ``/healthz`` and ``/readyz`` itself and works around a hypercorn 0.18 trio
worker trap. For a ``Connection: close`` (or HTTP/1.0) request, the app's ``send`` of the last
body chunk runs hypercorn's whole connection close — ``send_eof()`` then ``aclose()`` — inside
the app's own task. While that close is at its first checkpoint, hypercorn delivers
``http.disconnect`` to the app's pending ``receive()``, and an app that still awaits
``receive()`` (Quart does) cancels its request task group in response: the cancellation lands in
hypercorn's close, which is abandoned, and the socket stays open — clients reading to EOF (health
checks, HTTP/1.0) hang until they time out. The front shields that last ``send``, only for
requests whose connection closes after the response: shielding every request costs ~25% of
requests/s (hypercorn then completes its keep-alive bookkeeping on each one; measured with
bench/bench_http.py), and keep-alive responses are delimited by length, so clients do not hang.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import hypercorn.config
import trio
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from ..nursery._child import current_child
from ._sockets import bind_listeners, closing_all

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("megatrio.http")

_CLOSE_SECONDS = 10.0


async def send_body(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"
) -> None:
    """Send a complete response with *status* and *body*."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    await send_body(send, status, body, b"application/json")


def health_front(app: ASGIApp, readiness: Callable[[], tuple[bool, list[str]]]) -> ASGIApp:
    """Wrap *app*: serve ``/healthz`` and ``/readyz``, and shield the close of each response.

    ``/healthz`` is 200 while the process serves. ``/readyz`` is 200 only when *readiness*
    says so, else 503 with the names of what is not ready.
    """

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/healthz":
            await send_body(send, 200, b"ok\n")
            return
        if path == "/readyz":
            ready, waiting = readiness()
            await send_json(send, 200 if ready else 503, {"ready": ready, "not_ready": waiting})
            return
        if _closes_after_response(scope):
            await _call_shielding_the_end(app, scope, receive, send)
        else:
            await app(scope, receive, send)

    return front


def _closes_after_response(scope: Scope) -> bool:
    """Whether hypercorn will close this connection after the response (the trap's case)."""
    if scope.get("http_version") == "1.0":
        return True
    return any(
        name == b"connection" and b"close" in value.lower() for name, value in scope["headers"]
    )


async def _call_shielding_the_end(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    async def send_shielding_the_end(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            # This send runs hypercorn's connection close in the app's task; see the module
            # docstring. Bounded, so a peer that never reads cannot pin the task.
            with trio.move_on_after(_CLOSE_SECONDS, shield=True):
                await send(message)
        else:
            await send(message)

    await app(scope, receive, send_shielding_the_end)


async def serve_http(
    app: ASGIApp,
    binds: Sequence[str],
    label: str,
    graceful_seconds: float,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* on *binds* (``HOST:PORT`` or ``fd://N``) until this child is asked to stop.

    Reports started — with the bound URLs (real ports when port 0 was asked) — once the
    sockets listen. On the stop request it stops accepting and lets in-flight requests finish
    within *graceful_seconds*; what is left is cancelled by the child's own deadline.
    """
    ctx = current_child()
    config = hypercorn.config.Config()
    config.graceful_timeout = graceful_seconds
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")

    async def shutdown_trigger() -> None:
        if ctx is None:
            await trio.sleep_forever()
        else:
            await ctx.wait_stopping()

    with closing_all(bind_listeners(binds, backlog=config.backlog)) as sockets:
        async with trio.open_nursery() as nursery:
            bound: list[str] = await nursery.start(
                _serve, app, config, sockets, shutdown_trigger, name=f"hypercorn {label}"
            )
            log.info("serving %s on %s", label, ", ".join(bound))
            task_status.started(bound)


async def _serve(
    app: ASGIApp,
    config: hypercorn.config.Config,
    sockets: Sequence[socket.socket],
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    # hypercorn.trio.serve binds its own sockets and leaks one whose bind fails; its worker
    # entry point takes ours. It reports started with the bound URLs.
    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, "asgi"),  # type: ignore[arg-type]
        config,
        sockets=hypercorn.config.Sockets([], list(sockets), []),
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )
