"""The coredis internals megatrio relies on exist, and a missing one is named loudly."""

from __future__ import annotations

import importlib.metadata
import re

import coredis.parser
import pytest
from coredis.exceptions import (
    AuthenticationFailureError,
    ConnectionError,
    ReadOnlyError,
    ResponseError,
    UnknownCommandError,
    WrongTypeError,
)

from megatrio.services.stores import _coredis
from megatrio.services.stores._redis import open_redis

pytestmark = pytest.mark.anyio


def test_every_internal_megatrio_uses_exists_in_this_coredis() -> None:
    missing = _coredis.missing_internals()
    version = importlib.metadata.version("coredis")
    assert missing == [], f"coredis {version} renamed or removed: {', '.join(missing)}"
    _coredis.check_internals()


@pytest.mark.parametrize(
    ("message", "cls", "text"),
    [
        ("WRONGTYPE Operation against a key", WrongTypeError, "Operation against a key"),
        ("READONLY You can't write", ReadOnlyError, "You can't write"),
        ("WRONGPASS invalid username-password", AuthenticationFailureError, "invalid"),
        ("ERR unknown command 'NOPE'", UnknownCommandError, "unknown command 'NOPE'"),
        ("ERR max number of clients reached", ConnectionError, "max number"),
        ("ERR syntax error", ResponseError, "syntax error"),
        ("OOM command not allowed", ResponseError, "OOM command not allowed"),
    ],
)
def test_error_replies_become_the_classes_coredis_raises(
    message: str, cls: type[Exception], text: str
) -> None:
    error = _coredis.error_from_reply(message)
    assert type(error) is cls
    assert str(error).startswith(text)
    # The same class as coredis' own parser would have made.
    assert type(coredis.parser.Parser().parse_error(message)) is cls


def test_a_missing_class_attribute_is_named_with_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(coredis.parser.Parser, "EXCEPTION_CLASSES")
    assert _coredis.missing_internals() == ["coredis.parser:Parser.EXCEPTION_CLASSES"]
    version = re.escape(importlib.metadata.version("coredis"))
    with pytest.raises(
        RuntimeError, match=rf"coredis {version} lacks internals .*Parser\.EXCEPTION_CLASSES"
    ):
        _coredis.check_internals()


def test_a_missing_module_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_coredis, "REQUIRED", (*_coredis.REQUIRED, "coredis.nope:Thing"))
    assert _coredis.missing_internals() == ["coredis.nope:Thing"]


def test_a_table_of_another_shape_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coredis.parser.Parser, "EXCEPTION_CLASSES", {"WRONGTYPE": "a string"})
    [message] = _coredis.missing_internals()
    assert message.startswith("coredis.parser:Parser.EXCEPTION_CLASSES as")


async def test_open_redis_refuses_to_start_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(coredis.parser.Parser, "EXCEPTION_CLASSES")
    with pytest.raises(RuntimeError, match=r"lacks internals .*EXCEPTION_CLASSES"):
        async with open_redis("redis://127.0.0.1:1/0"):
            pass
