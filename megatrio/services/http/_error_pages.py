"""Error responses: JSON for clients that prefer it, a small HTML page for everyone else.

The same rendering serves the App's Quart error handlers (404, 405, 500) and the raw ASGI
answers of the serving layer (503 past the connection limit). A 500 never shows the
exception: it is logged (redacted) by Quart, and the client sees only the status.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from http import HTTPStatus

from quart import Quart, Response, has_websocket_context, request, websocket
from werkzeug.datastructures import Headers, MIMEAccept
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_accept_header

JSON = "application/json"
HTML = "text/html; charset=utf-8"

ERROR_PAGE_STATUSES = (404, 405, 500)
"""The statuses :func:`register_error_pages` answers for; an app's own handler for one of them
(registered later) replaces megatrio's."""


def prefers_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header ranks ``application/json`` above ``text/html``.

    No header, ``*/*`` and ties go to HTML (browsers, curl); ``application/json`` and
    ``application/json, */*`` go to JSON.
    """
    if not accept:
        return False
    best = parse_accept_header(accept, MIMEAccept).best_match(["text/html", JSON])
    return best == JSON


def render_error(status: int, message: str, *, as_json: bool) -> tuple[bytes, str]:
    """``(body, content_type)`` of the error page for *status* with *message* (escaped)."""
    title = _title(status)
    if as_json:
        payload = {"status": status, "error": title, "message": message}
        return json.dumps(payload, separators=(",", ":")).encode(), JSON
    page = (
        f"<!doctype html>\n<html lang=en><title>{status} {html.escape(title)}</title>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(message)}</p>\n</html>\n"
    )
    return page.encode(), HTML


def accept_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The ``Accept`` header of an ASGI scope's *headers* (joined when repeated)."""
    values = [value.decode("latin-1") for name, value in headers if name.lower() == b"accept"]
    return ", ".join(values) if values else None


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def register_error_pages(app: Quart) -> None:
    """Answer 404, 405 and 500 on *app* with :func:`render_error`, negotiated on ``Accept``.

    Headers the exception carries (``Allow`` of a 405) are kept. A 500's description is the
    generic one, whatever the exception said.
    """

    async def handle(error: HTTPException) -> Response:
        status = error.code or 500
        if status >= 500:
            message = "The server could not complete the request."
        else:
            message = error.description or _title(status)
        # A WebSocket handshake's error is answered over HTTP too, before any accept.
        incoming = websocket if has_websocket_context() else request
        body, content_type = render_error(
            status, message, as_json=prefers_json(incoming.headers.get("Accept"))
        )
        headers = Headers(
            [
                (name, value)
                for name, value in error.get_headers()
                if name.lower() not in {"content-type", "content-length"}
            ]
        )
        return Response(body, status=status, headers=headers, content_type=content_type)

    for status in ERROR_PAGE_STATUSES:
        app.register_error_handler(status, handle)
