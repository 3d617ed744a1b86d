"""The App's Quart classes answer as Quart's and werkzeug's own do: headers' lookups, the URL
map's binding, responses' headers, blueprints' hooks — compared on generated inputs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from quart import Blueprint
from quart_trio import QuartTrio
from quart_trio.wrappers.response import TrioResponse
from werkzeug.datastructures import Headers
from werkzeug.exceptions import BadHost
from werkzeug.routing import Map

from megatrio.services.http._quart_classes import (
    AppMap,
    AppQuart,
    AppResponse,
    FastHeaders,
    _BindingMap,
)

NAMES = ["Content-Length", "content-length", "CONTENT-TYPE", "Host", "X-Id", "x-ID", "Accept"]
names = st.sampled_from(NAMES) | st.text(alphabet="abcXYZ-", min_size=1, max_size=6)
header_lists = st.lists(st.tuples(names, st.text(alphabet="abc123 ;=", max_size=8)), max_size=6)
keys = names | st.integers(-3, 3) | st.none() | st.sampled_from([b"host", ("x",)])


def answer(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as exc:  # the same failure counts as the same answer
        return "raised", type(exc)


@given(items=header_lists, key=keys, default=st.sampled_from([None, "d", 0]))
def test_fast_headers_get_and_contains_answer_as_werkzeugs_headers(
    items: list[tuple[str, str]], key: object, default: object
) -> None:
    ours, theirs = FastHeaders(items), Headers(items)
    assert answer(lambda: ours.get(key, default)) == answer(lambda: theirs.get(key, default))  # type: ignore[call-overload]
    assert answer(lambda: key in ours) == answer(lambda: key in theirs)
    assert answer(lambda: ours.get(key, default, type=int)) == answer(  # type: ignore[call-overload]
        lambda: theirs.get(key, default, type=int)  # type: ignore[call-overload]
    )
    assert list(ours.items()) == list(theirs.items())


HOSTS = [
    "localhost",
    "Example.COM",
    "127.0.0.1:8000",
    "bücher.example",
    "BÜCHER.example:8080",
    "a..b",
    ".",
    "",
    "x" * 64 + ".example",
    "x" * 63 + ".example",
    "xn--bcher-kva.example",
    "[::1]:80",
    "host:",
    "a.b.c.d.e",
]
hosts = st.sampled_from(HOSTS) | st.text(alphabet="aZ.:-9ü", max_size=20)


def bound(map_class: type[Map], host: str, **options: Any) -> tuple[str, Any]:
    def bind() -> tuple[object, ...]:
        adapter = map_class(**options).bind(host, None, None, "https", "POST", None, "q=1")
        return (
            adapter.server_name,
            adapter.script_name,
            adapter.subdomain,
            adapter.url_scheme,
            adapter.path_info,
            adapter.default_method,
            adapter.query_args,
        )

    return answer(bind)


@given(host=hosts, host_matching=st.booleans(), subdomain=st.sampled_from(["", "www"]))
def test_the_binding_map_binds_as_werkzeugs_map(
    host: str, host_matching: bool, subdomain: str
) -> None:
    options = {"host_matching": host_matching, "default_subdomain": subdomain}
    assert bound(_BindingMap, host, **options) == bound(Map, host, **options)


def test_the_app_map_binds_through_the_memoised_encoder() -> None:
    assert [c.__name__ for c in AppMap.__mro__[:4]] == ["AppMap", "QuartMap", "_BindingMap", "Map"]
    with pytest.raises(BadHost, match="Host header"):
        AppMap().bind("a..b")


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"X-A": "1"}, [("X-A", "1"), ("x-a", "2")], {"Content-Type": "text/csv"}],
)
@pytest.mark.parametrize("body", ["text", b"bytes", None])
def test_a_response_has_the_headers_trio_response_would(headers: Any, body: Any) -> None:
    ours = AppResponse(body, 201, headers)
    theirs = TrioResponse(body, 201, headers)
    assert list(ours.headers.items()) == list(theirs.headers.items())
    assert isinstance(ours.headers, FastHeaders)


def test_a_response_keeps_the_headers_object_it_is_given() -> None:
    given_headers = Headers({"X-A": "1"})
    assert AppResponse("x", 200, given_headers).headers is given_headers


def blueprinted(app_class: type[QuartTrio]) -> QuartTrio:
    """An app with nested blueprints whose hooks record the order they run in."""
    app = app_class("bp")
    seen: list[str] = []
    app.config["SEEN"] = seen
    outer, inner = Blueprint("outer", __name__), Blueprint("inner", __name__)

    for name, target in (("app", app), ("outer", outer), ("inner", inner)):

        def before(name: str = name) -> None:
            seen.append(f"before {name}")

        def after(response: Any, name: str = name) -> Any:
            seen.append(f"after {name}")
            return response

        target.before_request(before)
        target.after_request(after)

    @inner.get("/deep")
    async def deep() -> str:
        from quart import request

        return ",".join(request.blueprints)

    outer.register_blueprint(inner, url_prefix="/inner")
    app.register_blueprint(outer, url_prefix="/outer")
    return app


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_blueprints_and_their_hooks_are_quarts(anyio_backend: str) -> None:
    answers = []
    for app_class in (QuartTrio, AppQuart):
        app = blueprinted(app_class)
        response = await app.test_client().get("/outer/inner/deep")
        answers.append((response.status_code, await response.get_data(), app.config["SEEN"]))
    assert answers[0] == answers[1]
    assert answers[1][1] == b"outer.inner,outer"
