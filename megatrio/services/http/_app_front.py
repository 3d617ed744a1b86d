"""The App's ASGI front: health, request ids, metrics, the access log and lean routes, in
one layer.

:func:`app_front` is one call per request where three nested layers (health, observability,
Quart) cost ~20 us per request more, measured on the ASGI callables: ``/healthz`` and
``/readyz``; then the request id, the metrics and the access log of :mod:`._access` around the
App's lean routes (:mod:`._raw`), dispatched before Quart, and Quart itself; and on hypercorn
the ``Connection: close`` trap's shield (see :mod:`._server`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..logs._context import REQUEST_ID
from ._access import ROUTE_KEY, UNMATCHED, HttpMetrics, request_id_of
from ._access import log as access_log_logger
from ._asgi import ASGIApp, Message, Receive, Scope, Send
from ._raw import RawRoutes
from ._server import closes_after_response, send_body, send_json, shielding_the_end
from ._watch import INLINE

Readiness = Callable[[], tuple[bool, list[str]]]


def app_front(
    app: ASGIApp,
    readiness: Readiness,
    metrics: HttpMetrics | None = None,
    *,
    access_log: bool = True,
    raw: RawRoutes | None = None,
) -> ASGIApp:
    """*app* (the Quart app) behind ``/healthz`` and ``/readyz``, request ids, *metrics*, the
    access log (unless *access_log* is False) and the lean routes *raw*.

    ``/healthz`` is 200 while the process serves; ``/readyz`` is 200 only when *readiness*
    says so, else 503 with the names of what is not ready. Both are answered first (at the
    root and under ``root_path``), outside the access log and the metrics.
    """
    routes = raw if raw else None

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        if path == "/healthz":
            await send_body(send, 200, b"ok\n")
            return
        if path == "/readyz":
            ready, waiting = readiness()
            await send_json(send, 200 if ready else 503, {"ready": ready, "not_ready": waiting})
            return
        request_id = request_id_of(scope)
        token = REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode())
        status = 0
        sent = 0
        began = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        if metrics is not None:
            metrics.in_flight += 1
        send_on: Send = send_observed
        if INLINE not in (scope.get("extensions") or ()) and closes_after_response(scope):
            send_on = shielding_the_end(send_observed)  # hypercorn's Connection: close trap
        try:
            if routes is None or (matched := routes.match(scope["method"], path)) is None:
                await app(scope, receive, send_on)
            else:
                route, params = matched
                scope[ROUTE_KEY] = route.rule
                await routes.serve(route, params, scope, receive, send_on, request_id)
        finally:
            REQUEST_ID.reset(token)
            seconds = time.perf_counter() - began
            if metrics is not None:
                metrics.in_flight -= 1
                metrics.observe(scope["method"], scope.get(ROUTE_KEY) or UNMATCHED, status, seconds)
            if access_log and access_log_logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log_logger.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "bytes": sent,
                        "remote": f"{client[0]}:{client[1]}" if client else None,
                        "request_id": request_id,
                    },
                )

    return front
