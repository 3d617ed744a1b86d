"""Every use of coredis' internals, in one module.

megatrio talks to Redis through coredis' public client (``coredis.Redis``, its commands,
exceptions, retry policies). One thing it patches, through coredis' own extension point
(``coredis.Redis(connection_pool_cls=...)``) but relying on names that are not public API:

- **Connections release their buffers when connecting fails.** ``BaseConnection.__init__``
  creates three anyio memory-object stream pairs (``_write_buffer_in``/``_out``,
  ``_push_message_buffer_in``/``_out``, ``_streamed_message_buffer_in``/``_out``), and
  ``BaseConnection.run`` closes them only once the socket is open (they are entered in the same
  ``async with`` as the stream). After a refused or timed-out connect they stay open, and anyio
  warns (``ResourceWarning``) when they are collected: noise in production logs, an error in a
  test suite run with ``-W error``. :class:`_TCPConnection` and :class:`_UnixConnection`
  override ``run`` to close all six in a ``finally``; :class:`ConnectionPool` is coredis' pool
  constructed with those classes in place of ``TCPConnection`` / ``UnixDomainSocketConnection``
  (relying on ``coredis.Redis`` passing ``connection_class=`` to the pool it builds).

:data:`REQUIRED` lists every coredis name this module relies on and :func:`missing_internals`
reports those the installed coredis lacks. ``tests/unit/test_coredis_canary.py`` calls it, so
an upgrade that renames one fails that test with the name; :func:`~._redis.open_redis` calls
:func:`check_internals` too, so opening a client fails at once with the same message instead of
warning or misbehaving later.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, Final

import anyio
import anyio.abc
import coredis
from coredis.connection import (
    BaseConnection,
    TCPConnection,
    TCPLocation,
    UnixDomainSocketConnection,
)
from coredis.pool import ConnectionPool as _CoredisPool

from ..._util import missing_references

REQUIRED: Final = (
    "coredis.connection:BaseConnection.run",
    "coredis.connection:TCPConnection",
    "coredis.connection:TCPLocation",
    "coredis.connection:UnixDomainSocketConnection",
    "coredis.pool:ConnectionPool",
)
"""``module:attribute.path`` of every coredis name used here."""

BUFFER_ATTRIBUTES: Final = (
    "_write_buffer_in",
    "_write_buffer_out",
    "_push_message_buffer_in",
    "_push_message_buffer_out",
    "_streamed_message_buffer_in",
    "_streamed_message_buffer_out",
)
"""The memory streams a connection creates in ``__init__`` that :func:`_close_buffers` closes."""


def _close_buffers(connection: BaseConnection) -> None:
    for name in BUFFER_ATTRIBUTES:
        getattr(connection, name).close()


class _TCPConnection(TCPConnection):
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            _close_buffers(self)


class _UnixConnection(UnixDomainSocketConnection):
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            _close_buffers(self)


_CONNECTION_CLASSES: dict[type[BaseConnection], type[BaseConnection]] = {
    TCPConnection: _TCPConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


class ConnectionPool(_CoredisPool[Any]):
    """coredis' pool with connections that release their buffers even when connecting fails.

    Pass it as ``coredis.Redis(connection_pool_cls=ConnectionPool)``.
    """

    def __init__(self, *, connection_class: type[BaseConnection], **kwargs: Any) -> None:
        connection_class = _CONNECTION_CLASSES.get(connection_class, connection_class)
        super().__init__(connection_class=connection_class, **kwargs)


def missing_internals() -> list[str]:
    """The names of :data:`REQUIRED`, the buffer attributes and the pool wiring this coredis
    lacks, each as a readable reference. Not a checkpoint; opens no connection.
    """
    missing = missing_references(REQUIRED)
    if missing:
        return missing
    try:
        connection = TCPConnection(TCPLocation("127.0.0.1", 6379))
        client: coredis.Redis[bytes] = coredis.Redis(
            host="127.0.0.1", port=6379, connection_pool_cls=ConnectionPool
        )
    except Exception as exc:  # a changed constructor is as fatal as a missing name
        return [f"constructing TCPConnection(TCPLocation(...)), Redis(...): {exc!r}"]
    for name in BUFFER_ATTRIBUTES:
        stream = getattr(connection, name, None)
        if stream is None or not callable(getattr(stream, "close", None)):
            missing.append(f"TCPConnection(...).{name}")
        else:
            stream.close()  # never used: closed so that collecting it does not warn
    used = getattr(client.connection_pool, "connection_class", None)
    if used is not _TCPConnection:
        missing.append(
            "Redis(connection_pool_cls=...) building its pool with connection_class= "
            f"(the pool uses {used!r})"
        )
    return missing


def check_internals() -> None:
    """Raise RuntimeError naming every coredis internal megatrio needs but cannot find."""
    missing = missing_internals()
    if missing:
        version = importlib.metadata.version("coredis")
        raise RuntimeError(
            f"coredis {version} lacks internals megatrio relies on: {', '.join(missing)}"
        )
