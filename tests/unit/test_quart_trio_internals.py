"""The quart/quart-trio internals the inline requests and the App's Quart classes use exist,
and a missing one is named."""

from __future__ import annotations

import logging

import pytest
import quart.asgi
import quart.helpers
import quart.wrappers.response
import quart_trio.asgi

from megatrio import App
from megatrio._util import missing_references
from megatrio.services.http import _quart_classes, _quart_trio


def test_every_internal_megatrio_uses_exists_in_this_quart_trio() -> None:
    missing = _quart_trio.missing_internals()
    assert missing == [], f"quart/quart-trio renamed or removed: {', '.join(missing)}"
    assert _quart_trio.inline_connection_class() is _quart_trio.InlineHTTPConnection
    assert App("inline").http.asgi_http_class is _quart_trio.InlineHTTPConnection


def test_a_missing_internal_is_named_and_requests_take_quart_trios_own_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(quart.asgi.ASGIHTTPConnection, "_send_response")
    assert _quart_trio.missing_internals() == ["quart.asgi:ASGIHTTPConnection._send_response"]
    with caplog.at_level(logging.WARNING, logger="megatrio.http"):
        chosen = _quart_trio.inline_connection_class()
    assert chosen is quart_trio.asgi.TrioASGIHTTPConnection
    assert "ASGIHTTPConnection._send_response" in caplog.text


def test_a_missing_body_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    original = quart.wrappers.response.DataBody.__init__

    def init_without_begin(self: object, data: bytes) -> None:
        original(self, data)  # type: ignore[arg-type]
        del self.begin  # type: ignore[attr-defined]

    monkeypatch.setattr(quart.wrappers.response.DataBody, "__init__", init_without_begin)
    assert _quart_trio.missing_internals() == ['DataBody(b"").begin']


def test_the_apps_quart_classes_find_their_internal_and_serve() -> None:
    assert missing_references(_quart_classes.REQUIRED) == []
    app = App("classes").http
    assert isinstance(app, _quart_classes.AppQuart)
    assert (app.request_class, app.response_class) == (
        _quart_classes.AppRequest,
        _quart_classes.AppResponse,
    )
    assert isinstance(app.url_map, _quart_classes.AppMap)


def test_without_their_internal_the_app_takes_quarts_own_classes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(quart.helpers, "_split_blueprint_path")
    with caplog.at_level(logging.WARNING, logger="megatrio.http"):
        app = App("plain").http
    assert type(app) is quart_trio.QuartTrio
    assert "quart.helpers:_split_blueprint_path" in caplog.text
