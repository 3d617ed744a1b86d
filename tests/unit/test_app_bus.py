"""``rt.bus`` / ``app.bus`` without NATS: the error says what opens one; install and uninstall."""

from __future__ import annotations

from typing import cast

import pytest

import megatrio
from megatrio._config import Config
from megatrio.app._nats import open_bus, open_connection

pytestmark = pytest.mark.anyio

NEEDS_NATS = r"has no bus: the bus needs NATS — set nats_url .* or MEGATRIO_NATS_URL"


async def test_without_nats_url_the_bus_is_absent_and_the_error_names_the_setting() -> None:
    app = megatrio.App("shop")
    with pytest.raises(RuntimeError, match="not being served"):
        _ = app.bus
    async with megatrio.mega_runtime(name="shop") as rt:
        app._attach(rt)
        # Nothing is opened without nats_url: no connection, no bus, no `nats` child.
        assert await open_connection(rt, Config(), "shop") is None
        assert await open_bus(rt, Config(), "shop") is None
        with pytest.raises(LookupError, match=NEEDS_NATS) as info:
            _ = app.bus
        assert "runtime 'shop'" in str(info.value)
        with pytest.raises(LookupError, match=NEEDS_NATS):
            _ = rt.bus
        assert [c["name"] for c in rt.snapshot()["children"]] == []


async def test_install_bus_until_uninstalled() -> None:
    # The runtime only keeps the bus; it never looks inside, so any object stands in for one.
    bus = cast(megatrio.Bus, object())
    async with megatrio.mega_runtime(name="shop") as rt:
        rt.install_bus(bus)
        assert rt.bus is bus
        with pytest.raises(ValueError, match="already has a bus"):
            rt.install_bus(cast(megatrio.Bus, object()))
        rt.uninstall_bus(cast(megatrio.Bus, object()))  # not the installed one: kept
        assert rt.bus is bus
        rt.uninstall_bus(bus)
        rt.uninstall_bus(bus)  # idempotent
        with pytest.raises(LookupError, match=NEEDS_NATS):
            _ = rt.bus
