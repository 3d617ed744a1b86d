"""The admin listener: introspection endpoints, served on loopback by default.

Everything it returns passes through the log redaction first: error texts in the tree can
carry whatever an exception message carried.
"""

from __future__ import annotations

import functools
import importlib.resources
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import generate_latest

from ..._samples import Sample
from ..logs._redact import Redactor
from ..logs._tree import format_tree
from ._access import HttpMetrics
from ._metrics import CONTENT_TYPE, registry_for
from ._server import ASGIApp, Receive, Scope, Send, send_body, send_json

TREE_PATH = "/_megatrio/tree"
METRICS_PATH = "/metrics"
PAGE_PATH = "/_megatrio/"
"""The live tree page: a static page, shipped with the package, that polls :data:`TREE_PATH`."""


@functools.cache
def _page() -> bytes:
    return importlib.resources.files(__package__).joinpath("_static/tree.html").read_bytes()


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """A complete ASGI lifespan protocol for an app with nothing to start or stop.

    hypercorn's trio worker treats an app that simply returns from the lifespan scope as a
    failed startup, so the protocol is answered in full.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def admin_app(
    snapshot: Callable[[], dict[str, Any]],
    redactor: Redactor,
    http_metrics: HttpMetrics | Callable[[], HttpMetrics] | None = None,
    samples: Callable[[], Iterable[Sample]] | None = None,
) -> ASGIApp:
    """ASGI app for ``GET /_megatrio/tree`` (JSON; ``?format=text`` for a tree), the live tree
    page ``/_megatrio/`` (it polls the tree twice a second; no build step, no CDN),
    ``/metrics`` (Prometheus text, :mod:`._metrics`; with *http_metrics*, the public
    listener's requests too; with *samples*, the services' counters) and ``/healthz``."""
    registry = registry_for(snapshot, http_metrics, samples)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] not in {"GET", "HEAD"}:
            await send_body(send, 405, b"method not allowed\n")
            return
        path = scope["path"]
        if path == "/healthz":
            await send_body(send, 200, b"ok\n")
        elif path == PAGE_PATH:
            await send_body(send, 200, _page(), b"text/html; charset=utf-8")
        elif path == PAGE_PATH.rstrip("/"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 308,
                    "headers": [(b"location", PAGE_PATH.encode()), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
        elif path == METRICS_PATH:
            body = generate_latest(registry)
            await send_body(send, 200, body, CONTENT_TYPE.encode())
        elif path == TREE_PATH:
            tree = redactor.redact(snapshot())
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if query.get("format") == ["text"]:
                await send_body(send, 200, (format_tree(tree) + "\n").encode())
            else:
                await send_json(send, 200, tree)
        else:
            await send_body(send, 404, b"not found\n")

    return app
