"""Error pages: JSON when Accept prefers it, HTML otherwise; never the exception's text."""

from __future__ import annotations

import json

import pytest

from megatrio.services.http._error_pages import accept_of, prefers_json, render_error


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/html,application/xhtml+xml,*/*;q=0.8", False),
        ("application/json", True),
        ("application/json, text/plain, */*", True),
        ("text/html;q=0.5, application/json", True),
        ("text/html, application/json;q=0.9", False),
    ],
)
def test_prefers_json(accept: str | None, expected: bool) -> None:
    assert prefers_json(accept) is expected


def test_render_error_escapes_and_negotiates() -> None:
    body, content_type = render_error(404, "no <b>user</b>", as_json=False)
    assert content_type == "text/html; charset=utf-8"
    assert b"<title>404 Not Found</title>" in body
    assert b"no &lt;b&gt;user&lt;/b&gt;" in body
    body, content_type = render_error(404, "gone", as_json=True)
    assert content_type == "application/json"
    assert json.loads(body) == {"status": 404, "error": "Not Found", "message": "gone"}


def test_accept_of_joins_repeated_headers() -> None:
    headers = [(b"Accept", b"text/html"), (b"host", b"x"), (b"accept", b"application/json")]
    assert accept_of(headers) == "text/html, application/json"
    assert accept_of([]) is None
