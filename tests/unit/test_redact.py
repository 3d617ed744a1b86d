"""Redactor examples; the exhaustive property lives in tests/property/test_redaction.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from megatrio import Redactor
from megatrio.services.logs._redact import MASK


@pytest.mark.parametrize(
    "key",
    [
        "Authorization",
        "COOKIE",
        "Set-Cookie",
        "set_cookie",
        "setCookie",
        "password",
        "Passwd",
        "X-Auth-Token",
        "client_secret",
        "SecretKey",
        "refresh-token",
        "apiKey",
        "API_KEY",
        "private key",
        "db_password_hash",
    ],
)
def test_sensitive_keys_in_any_style(key: str) -> None:
    assert Redactor().redact({key: "value-1"}) == {key: MASK}


def test_nested_structures_and_non_string_values() -> None:
    data = {"a": [{"b": ({"token": {"deep": 1}},)}], "ok": 3, "list": ["password=x"]}
    assert Redactor().redact(data) == {
        "a": [{"b": ({"token": MASK},)}],
        "ok": 3,
        "list": [f"password={MASK}"],
    }


def test_user_keys_and_cycles() -> None:
    data: dict[str, object] = {"session_id": "s", "name": "n"}
    data["self"] = data
    redacted = Redactor(["session-id"]).redact(data)
    assert redacted["session_id"] == MASK
    assert redacted["name"] == "n"
    assert redacted["self"] == MASK


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcdefgh123", f"Authorization: {MASK}"),
        ("sent Bearer abcdefgh123 upstream", f"sent Bearer {MASK} upstream"),
        ("the bearer of news", "the bearer of news"),
        ("Basic dXNlcjpwYXNz", f"Basic {MASK}"),
        ("Basic setup done", "Basic setup done"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-part_1 end", f"jwt {MASK} end"),
        ("postgres://app:p4ss@db:5432/x", f"postgres://app:{MASK}@db:5432/x"),
        ('{"client_secret": "shh", "user": "u"}', f'{{"client_secret": "{MASK}", "user": "u"}}'),
        ("ValueError: token=abc", f"ValueError: token={MASK}"),
        ("Cookie: a=1; b=2\nnext", f"Cookie: {MASK}\nnext"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_scrubbing_free_text(text: str, expected: str) -> None:
    assert Redactor().scrub(text) == expected


_FRAGMENTS = [
    "Bearer abcdefgh12345",
    "bEaReR\tabcdefgh12345",
    "Basic dXNlcjpwYXNz",
    "eyJhbGciOi.eyJzdWIiOi.sig",
    "eyJ0eXAiOi.eyJzdWIiOi.sig",
    "postgres://user:hunter2@db/x",
    "password=hunter2",
    '"api_key": "k-123"',
    "Cookie: a=1; b=2",
    "T11:06:16Z",
    "127.0.0.1:5555",
    "GET /items/7 200",
    " ",
    "\n",
    ":",
    "=",
]


def _scrub_unfiltered(redactor: Redactor, text: str) -> str:
    """Every pattern on every string: what scrub's substring tests must never change."""
    from megatrio.services.logs import _redact as r

    text = r._BEARER.sub(rf"\1\2{MASK}", text)
    text = r._BASIC.sub(r._mask_basic, text)
    text = r._JWT.sub(MASK, text)
    text = r._URL_PASSWORD.sub(rf"\1{MASK}@", text)
    return redactor._mask_pairs(text)


@given(
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=12)), max_size=8).map("".join)
)
def test_scrub_skips_a_pattern_only_where_it_cannot_match(text: str) -> None:
    redactor = Redactor()
    assert redactor.scrub(text) == _scrub_unfiltered(redactor, text)


@pytest.mark.parametrize("fragment", _FRAGMENTS)
def test_scrub_finds_each_pattern_alone_whatever_the_case(fragment: str) -> None:
    redactor = Redactor()
    for text in (fragment, f"x {fragment} y", fragment.upper(), fragment.lower()):
        assert redactor.scrub(text) == _scrub_unfiltered(redactor, text)
