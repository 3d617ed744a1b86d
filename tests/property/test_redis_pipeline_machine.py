"""The auto-pipelining reply FIFO under a Hypothesis state machine of issue/write/reply/cancel
orders, against a model of one Redis server that answers every command it received, in order.

The real :class:`~megatrio._policy._pipeline.InFlight` is driven directly (it is what every
Redis connection uses). Rules issue commands, write what is unsent (as the connection's writer
does), deliver the server's next reply, cancel a waiting caller (before or after its command
was written), move the clock past deadlines, and drop the connection. Checked at every step:

- a reply is handed to exactly the command the server answered, never to another: the
  connection never desynchronises, whatever was cancelled or timed out in between;
- a command cancelled (or expired) before it was written never reaches the server;
- the reply to a command whose caller stopped waiting is read and dropped;
- every caller ends exactly once: a reply, a timeout, a withdrawal or the connection's failure;
- the occupancy the pool sees (``outstanding``) is exactly unsent plus unanswered commands,
  and the next deadline is the earliest of the callers still waiting.
"""

from __future__ import annotations

import collections

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from megatrio._policy._pipeline import Desync, InFlight, Slot, SlotState


class PipelineMachine(RuleBasedStateMachine):
    waiting = Bundle("waiting")

    def __init__(self) -> None:
        super().__init__()
        self.queue = InFlight()
        self.now = 0.0
        self.next_id = 0
        self.slots: dict[int, Slot] = {}
        self.deadlines: dict[int, float] = {}
        self.unsent: list[int] = []  # issued, not written, caller waiting
        self.server: collections.deque[int] = collections.deque()  # written, not answered
        self.on_server: set[int] = set()  # every command the server ever received
        self.waiting_ids: set[int] = set()
        self.ended: dict[int, str] = {}  # id -> how its caller ended

    def _end(self, ident: int, how: str) -> None:
        assert ident not in self.ended, f"caller {ident} ended twice ({self.ended[ident]}, {how})"
        self.ended[ident] = how
        self.waiting_ids.discard(ident)

    @rule(target=waiting, timeout=st.sampled_from([0.5, 1.0, 2.0]))
    def issue(self, timeout: float) -> int:
        ident = self.next_id
        self.next_id += 1
        slot = self.queue.issue(b"cmd %d" % ident, self.now + timeout, waiter=ident)
        self.slots[ident] = slot
        self.deadlines[ident] = self.now + timeout
        self.unsent.append(ident)
        self.waiting_ids.add(ident)
        return ident

    @rule()
    def write(self) -> None:
        written = [int(payload.split()[1]) for payload in self.queue.take_writes()]
        assert written == self.unsent, "the writer sends exactly the unsent commands, in order"
        for ident in written:
            assert ident in self.waiting_ids, f"command {ident} sent after its caller left"
        self.server.extend(written)
        self.on_server.update(written)
        self.unsent = []

    @precondition(lambda self: bool(self.server))
    @rule(error=st.booleans())
    def reply(self, error: bool) -> None:
        answered = self.server.popleft()
        outcome = ("error" if error else "reply", answered)
        slot = self.queue.reply(outcome)
        if answered in self.waiting_ids:
            assert slot is not None, f"the reply for waiting caller {answered} was dropped"
            assert slot.waiter == answered, f"reply to {answered} handed to {slot.waiter}"
            assert slot.state is SlotState.DONE
            assert slot.outcome == outcome
            self._end(answered, "reply")
        else:
            assert slot is None, f"the reply to {answered} (caller gone) reached {slot}"

    @precondition(lambda self: not self.server)
    @rule()
    def stray_reply(self) -> None:
        # Nothing written is unanswered: a reply now cannot belong to any command.
        with pytest.raises(Desync):
            self.queue.reply(("stray", -1))

    @rule(ident=consumes(waiting))
    def cancel(self, ident: int) -> None:
        self.queue.cancel(self.slots[ident])
        if ident in self.waiting_ids:
            if ident in self.unsent:
                self.unsent.remove(ident)
                assert self.slots[ident].state is SlotState.WITHDRAWN
                self._end(ident, "withdrawn")
            else:
                assert self.slots[ident].state is SlotState.ABANDONED
                self._end(ident, "cancelled")

    @rule(seconds=st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        expired = self.queue.expire(self.now)
        expected = sorted(
            (i for i in self.waiting_ids if self.deadlines[i] <= self.now),
            key=lambda i: (i in self.unsent, i),  # sent ones first, each in issue order
        )
        assert [slot.waiter for slot in expired] == expected
        for slot in expired:
            ident = slot.waiter
            if ident in self.unsent:
                self.unsent.remove(ident)
                assert slot.state is SlotState.WITHDRAWN
            else:
                assert slot.state is SlotState.ABANDONED
            self._end(ident, "timed out")

    @rule()
    def connection_lost(self) -> None:
        failed = [slot.waiter for slot in self.queue.fail_all()]
        assert sorted(failed) == sorted(self.waiting_ids)
        for ident in failed:
            self._end(ident, "connection lost")
        # A new connection: whatever the old server had is gone with it.
        self.server.clear()
        self.unsent = []

    @invariant()
    def occupancy_is_unsent_plus_unanswered(self) -> None:
        assert self.queue.outstanding == len(self.unsent) + len(self.server)
        assert self.queue.has_unsent == bool(self.unsent)

    @invariant()
    def withdrawn_commands_never_reach_the_server(self) -> None:
        for ident, how in self.ended.items():
            if how == "withdrawn" or (how == "timed out" and ident not in self.on_server):
                assert ident not in self.on_server

    @invariant()
    def next_deadline_is_the_earliest_waiting_caller(self) -> None:
        expected = min((self.deadlines[i] for i in self.waiting_ids), default=None)
        assert self.queue.next_deadline() == expected

    @invariant()
    def every_caller_waits_or_ended_once(self) -> None:
        assert self.waiting_ids.isdisjoint(self.ended)
        assert len(self.waiting_ids) + len(self.ended) == self.next_id


PipelineMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40)
TestPipelineMachine = PipelineMachine.TestCase
