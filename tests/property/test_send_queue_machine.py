"""The WebSocket send queue (``megatrio._policy._send_queue``) under a Hypothesis state
machine, against a reference model written from the rules rather than from the code.

Checked after every step: queued bytes and messages never exceed the caps; the queue closes
exactly when a non-ephemeral offer would exceed them (and then the connection is to be closed
with 1013); nothing is queued after the close; ``drop_oldest`` drops the fewest of the oldest
ephemeral messages that make the new one fit, so the newest are kept; takes come out in offer
order; every offered message is taken, dropped, cleared or still queued — exactly one of them.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from megatrio._policy._send_queue import Offered, SendQueue

sizes = st.integers(min_value=0, max_value=40)


class Model:
    """The queue as a list of (id, size, ephemeral), decided from the module's rules."""

    def __init__(self, max_bytes: int, max_messages: int) -> None:
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.items: list[tuple[int, int, bool]] = []
        self.closed = False

    def fits(self, items: list[tuple[int, int, bool]], size: int) -> bool:
        return (
            sum(s for _, s, _ in items) + size <= self.max_bytes and len(items) < self.max_messages
        )

    def offer(self, ident: int, size: int, ephemeral: bool) -> tuple[Offered, int]:
        if self.closed:
            return Offered.CLOSED, 0
        if self.fits(self.items, size):
            self.items.append((ident, size, ephemeral))
            return Offered.QUEUED, 0
        if not ephemeral:
            self.closed = True
            return Offered.OVERFLOW, 0
        # The fewest of the oldest ephemeral ones whose removal makes room, if any does.
        ephemeral_ids = [i for i, _, e in self.items if e]
        for k in range(1, len(ephemeral_ids) + 1):
            gone = set(ephemeral_ids[:k])
            kept = [item for item in self.items if item[0] not in gone]
            if self.fits(kept, size):
                self.items = [*kept, (ident, size, ephemeral)]
                return Offered.DROPPED, k
        return Offered.DROPPED_NEW, 0


class SendQueueMachine(RuleBasedStateMachine):
    @initialize(
        max_bytes=st.integers(min_value=1, max_value=100),
        max_messages=st.integers(min_value=1, max_value=6),
    )
    def setup(self, max_bytes: int, max_messages: int) -> None:
        self.queue: SendQueue[int] = SendQueue(max_bytes=max_bytes, max_messages=max_messages)
        self.model = Model(max_bytes, max_messages)
        self.next_id = 0
        self.taken: list[int] = []
        self.dropped: set[int] = set()
        self.cleared: set[int] = set()
        self.offered: list[int] = []

    @rule(size=sizes, ephemeral=st.booleans())
    def offer(self, size: int, ephemeral: bool) -> None:
        ident = self.next_id
        self.next_id += 1
        self.offered.append(ident)
        before = {i for i, _, _ in self.model.items}
        expected, count = self.model.offer(ident, size, ephemeral)
        got = self.queue.offer(ident, size, drop_oldest=ephemeral)
        assert got.outcome is (
            Offered.QUEUED if expected is Offered.DROPPED and not count else expected
        )
        assert got.dropped == count
        after = {i for i, _, _ in self.model.items}
        self.dropped |= before - after
        if expected in (Offered.DROPPED_NEW, Offered.OVERFLOW, Offered.CLOSED):
            self.dropped.add(ident)

    @rule()
    def take(self) -> None:
        got = self.queue.take()
        if not self.model.items:
            assert got is None
            return
        ident, size, _ = self.model.items.pop(0)
        assert got == (ident, size)
        self.taken.append(ident)

    @rule()
    def close(self) -> None:
        self.queue.close()
        self.model.closed = True

    @rule()
    def clear(self) -> None:
        count = self.queue.clear()
        assert count == len(self.model.items)
        self.cleared |= {i for i, _, _ in self.model.items}
        self.model.items = []

    @invariant()
    def within_the_caps_and_as_modelled(self) -> None:
        assert 0 <= self.queue.queued_bytes <= self.queue.max_bytes
        assert 0 <= len(self.queue) <= self.queue.max_messages
        assert self.queue.queued_bytes == sum(s for _, s, _ in self.model.items)
        assert len(self.queue) == len(self.model.items)
        assert self.queue.closed == self.model.closed

    @invariant()
    def every_message_has_exactly_one_fate(self) -> None:
        queued = [i for i, _, _ in self.model.items]
        fates = [*self.taken, *self.dropped, *self.cleared, *queued]
        assert sorted(fates) == self.offered
        assert self.taken == sorted(self.taken)  # offer order


TestSendQueue = SendQueueMachine.TestCase
