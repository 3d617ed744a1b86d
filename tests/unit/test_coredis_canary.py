"""The coredis internals megatrio patches exist, and a missing one is named loudly."""

from __future__ import annotations

import importlib.metadata
import re

import coredis.connection
import coredis.pool
import pytest

from megatrio.services.stores import _coredis
from megatrio.services.stores._redis import open_redis

pytestmark = pytest.mark.anyio


def test_every_internal_megatrio_uses_exists_in_this_coredis() -> None:
    missing = _coredis.missing_internals()
    version = importlib.metadata.version("coredis")
    assert missing == [], f"coredis {version} renamed or removed: {', '.join(missing)}"
    _coredis.check_internals()


def test_a_missing_class_attribute_is_named_with_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(coredis.connection.BaseConnection, "run")
    assert _coredis.missing_internals() == ["coredis.connection:BaseConnection.run"]
    version = re.escape(importlib.metadata.version("coredis"))
    with pytest.raises(
        RuntimeError, match=rf"coredis {version} lacks internals .*BaseConnection\.run"
    ):
        _coredis.check_internals()


def test_a_missing_module_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_coredis, "REQUIRED", (*_coredis.REQUIRED, "coredis.nope:Thing"))
    assert _coredis.missing_internals() == ["coredis.nope:Thing"]


def test_a_renamed_buffer_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    original = coredis.connection.TCPConnection.__init__

    def init_with_a_renamed_buffer(self: object, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        stream = self._push_message_buffer_out  # type: ignore[attr-defined]
        del self._push_message_buffer_out  # type: ignore[attr-defined]
        stream.close()

    monkeypatch.setattr(coredis.connection.TCPConnection, "__init__", init_with_a_renamed_buffer)
    assert _coredis.missing_internals() == ["TCPConnection(...)._push_message_buffer_out"]


def test_a_pool_that_ignores_connection_class_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # If coredis.Redis stopped passing connection_class= to the pool it builds, connections
    # would silently be coredis' own, without the buffer fix.
    original = coredis.pool.ConnectionPool.__init__

    def init_with_coredis_connections(self: object, **kwargs: object) -> None:
        kwargs["connection_class"] = coredis.connection.TCPConnection
        original(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(coredis.pool.ConnectionPool, "__init__", init_with_coredis_connections)
    [message] = _coredis.missing_internals()
    assert message.startswith("Redis(connection_pool_cls=...) building its pool")


async def test_open_redis_refuses_to_start_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(coredis.connection.BaseConnection, "run")
    with pytest.raises(RuntimeError, match=r"lacks internals .*BaseConnection\.run"):
        async with open_redis("redis://127.0.0.1:1/0"):
            pass
