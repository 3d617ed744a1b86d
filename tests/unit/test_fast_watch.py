"""The fast front's listener watch: its timers, on the autojump clock."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from megatrio.services.http._watch import WATCH_TICK_SECONDS, Connections


async def _timers() -> None:
    connections = Connections()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connections.watch, stop)
        for delay in (0.0, 0.01, 0.05, 0.12, 1.0, 7.3):
            began = trio.current_time()
            with trio.CancelScope() as scope:
                connections.cancel_at(scope, began + delay)
                await trio.sleep_forever()
            waited = trio.current_time() - began
            assert delay <= waited <= delay + 2 * WATCH_TICK_SECONDS, (delay, waited)
        # A forgotten timer never fires.
        with trio.CancelScope() as kept:
            slot = connections.cancel_at(kept, trio.current_time() + 0.1)
            connections.forget(kept, slot)
            await trio.sleep(1.0)
        assert not kept.cancelled_caught
        # After a long quiet spell the next timer is neither early nor lost.
        await trio.sleep(3600)
        began = trio.current_time()
        with trio.CancelScope() as late:
            connections.cancel_at(late, began + 0.2)
            await trio.sleep(5)
        assert late.cancelled_caught
        assert 0.2 <= trio.current_time() - began <= 0.2 + 2 * WATCH_TICK_SECONDS
        stop.set()


def test_a_timer_fires_never_early_and_within_two_ticks_and_a_forgotten_one_never() -> None:
    trio.run(_timers, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("deadline", [0.0, 0.049, 0.05, 1e6 + 0.001])
def test_a_timer_is_filed_in_the_slot_of_its_deadline(deadline: float) -> None:
    connections = Connections()
    scope = trio.CancelScope()
    slot = connections.cancel_at(scope, deadline)
    assert slot == math.ceil(deadline / WATCH_TICK_SECONDS)
    assert slot * WATCH_TICK_SECONDS >= deadline
