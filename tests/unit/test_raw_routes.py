"""Lean routes without a server: matching, Quart's return conventions, declaration errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from megatrio import App, RawRequest
from megatrio.services.http._raw import RawRoutes, to_response


async def handler(request: RawRequest, **params: Any) -> str:
    return "ok"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_static_and_converter_rules_match_with_their_methods_and_get_serves_head() -> None:
    routes = RawRoutes(dumps)
    assert not routes
    index = routes.add("/", ["GET"], handler)
    user = routes.add("/users/<int:user_id>", ["GET", "PUT"], handler)
    assert routes
    assert routes.match("GET", "/") == (index, {})
    assert routes.match("HEAD", "/") == (index, {})
    assert routes.match("POST", "/") is None  # Quart's routes (or its 405) then
    assert routes.match("PUT", "/users/42") == (user, {"user_id": 42})
    assert routes.match("HEAD", "/users/42") == (user, {"user_id": 42})
    assert routes.match("DELETE", "/users/42") is None
    assert routes.match("GET", "/users/x") is None
    assert routes.match("GET", "/users/42/") is None  # Quart's redirect, not ours
    assert routes.match("GET", "/nowhere") is None
    assert user.rule == "/users/<int:user_id>"


def test_a_malformed_rule_is_refused_when_declared() -> None:
    routes = RawRoutes(dumps)
    with pytest.raises(ValueError, match="malformed"):
        routes.add("/a/<int:b", ["GET"], handler)
    with pytest.raises(LookupError):
        routes.add("/a/<nope:b>", ["GET"], handler)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("héllo", (200, [(b"content-type", b"text/html; charset=utf-8")], "héllo".encode())),
        (b"\x00", (200, [(b"content-type", b"text/html; charset=utf-8")], b"\x00")),
        ({"b": 1}, (200, [(b"content-type", b"application/json")], b'{"b":1}\n')),
        ([1, 2], (200, [(b"content-type", b"application/json")], b"[1,2]\n")),
        (("gone", 410), (410, [(b"content-type", b"text/html; charset=utf-8")], b"gone")),
        (
            ("x", {"X-A": "1", "Content-Type": "text/plain"}),
            (200, [(b"content-type", b"text/plain"), (b"x-a", b"1")], b"x"),
        ),
        (
            ({"a": 1}, 201, [("Location", "/a/1"), ("Content-Length", "99")]),
            (201, [(b"content-type", b"application/json"), (b"location", b"/a/1")], b'{"a":1}\n'),
        ),
    ],
)
def test_return_values_follow_quarts_conventions(value: Any, expected: Any) -> None:
    assert to_response(value, dumps) == expected


@pytest.mark.parametrize(
    "value", [None, 42, ("a", "200"), ("a", 200, {}, 1), (x for x in "ab"), {"a", "b"}]
)
def test_anything_else_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="raw route"):
        to_response(value, dumps)


def test_a_raw_route_takes_only_the_endpoint_option_and_methods_as_a_list() -> None:
    app = App("options")
    with pytest.raises(TypeError, match="no option strict_slashes"):
        app.get("/a", raw=True, strict_slashes=False)
    with pytest.raises(TypeError, match="list of method names"):
        app.route("/a", raw=True, methods="GET")
    app.route("/b", raw=True, methods=["POST"], endpoint="bee")(handler)
    assert {r.endpoint for r in app.http.url_map.iter_rules()} >= {"bee"}
