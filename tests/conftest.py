"""Shared fixtures.

Async tests use anyio's pytest plugin (``pytest.mark.anyio``). By default they run on trio with
an autojump ``MockClock``: time only moves when every task is blocked, so timing logic is tested
exactly and without real sleeps. Modules that must also run on asyncio override
``anyio_backend`` with both backends; modules that touch real I/O (processes, sockets) override
it with a real clock.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio.testing

from .servers import NatsServer, RedisServer


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session (tests flush it via ``redis``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied; restarted first if a fault test stopped it."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A private nats-server with JetStream for one test (its own store in a temp dir)."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other socket is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
