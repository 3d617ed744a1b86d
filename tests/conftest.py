"""Shared fixtures.

Async tests use anyio's pytest plugin (``pytest.mark.anyio``). By default they run on trio with
an autojump ``MockClock``: time only moves when every task is blocked, so timing logic is tested
exactly and without real sleeps. Modules that must also run on asyncio override
``anyio_backend`` with both backends; modules that touch real I/O (processes, sockets) override
it with a real clock.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio.testing


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
