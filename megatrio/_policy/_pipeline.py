"""Auto-pipelining, sans-IO: the commands of one Redis connection and the replies they await.

Redis answers the commands of a connection in the order it received them, so matching a reply
to its command is a FIFO: :class:`InFlight` holds every command issued on a connection, in
order, from :meth:`~InFlight.issue` until its reply has been read. The connection's writer
takes all the commands issued since its last write at once (:meth:`~InFlight.take_writes`),
so the commands of many tasks go out in one write; its reader hands each reply to
:meth:`~InFlight.reply`, which returns the slot it answers.

The invariant that keeps a connection in sync: **a slot leaves the sent FIFO only when its
reply is read** (or the connection is given up with :meth:`~InFlight.fail_all`). A caller that
stops waiting — cancelled, or past its deadline — only marks its slot abandoned; its reply is
still read and dropped, never handed to the next command. A command cancelled before it was
written is taken out and never sent at all.

:func:`choose_connection` is the pool's decision: which connection a command goes to, and
when the pool opens one more (never beyond its cap). Time is an argument everywhere.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Sequence
from typing import Any, Final, final


class SlotState(enum.Enum):
    UNSENT = "unsent"  # issued, not yet handed to the writer
    SENT = "sent"  # written (or being written); its caller waits for the reply
    ABANDONED = "abandoned"  # written, its caller gone: the reply is read and dropped
    DONE = "done"  # answered (reply or error), or failed with the connection
    WITHDRAWN = "withdrawn"  # cancelled or expired before it was written: never sent


@final
class Slot:
    """One command on one connection. Only :class:`InFlight` changes its state.

    *outcome* is the reply (or the error to raise) once the state is ``DONE``; *waiter* is
    whatever the IO layer uses to wake the caller (an event), untouched here.
    """

    __slots__ = ("deadline", "outcome", "payload", "state", "waiter")

    def __init__(self, payload: bytes, deadline: float, waiter: Any) -> None:
        self.payload = payload
        self.deadline = deadline
        self.state = SlotState.UNSENT
        self.outcome: Any = None
        self.waiter = waiter

    def __repr__(self) -> str:
        return f"<Slot {self.state.value} deadline={self.deadline}>"


class Desync(Exception):
    """A reply arrived with no command waiting for it: the connection must be discarded."""


@final
class InFlight:
    """The FIFO of one connection's commands; see the module docstring for the invariant."""

    __slots__ = ("_sent", "_unsent")

    def __init__(self) -> None:
        self._unsent: collections.deque[Slot] = collections.deque()
        self._sent: collections.deque[Slot] = collections.deque()

    @property
    def outstanding(self) -> int:
        """Commands issued whose replies have not been read yet (abandoned ones included):
        what occupies the connection."""
        return len(self._unsent) + len(self._sent)

    @property
    def has_unsent(self) -> bool:
        return bool(self._unsent)

    def issue(self, payload: bytes, deadline: float, waiter: Any = None) -> Slot:
        """Queue the encoded command *payload*; its caller gives up at *deadline*."""
        slot = Slot(payload, deadline, waiter)
        self._unsent.append(slot)
        return slot

    def take_writes(self) -> list[bytes]:
        """The payloads of every unsent command, in issue order; they are sent from now on."""
        unsent = self._unsent
        payloads = []
        sent = self._sent
        while unsent:
            slot = unsent.popleft()
            slot.state = SlotState.SENT
            sent.append(slot)
            payloads.append(slot.payload)
        return payloads

    def reply(self, outcome: Any) -> Slot | None:
        """Match the next reply read: the slot it answers (now ``DONE`` with *outcome*), or
        None when that slot was abandoned (the reply is dropped).

        Raises:
            Desync: no written command is waiting for a reply.
        """
        if not self._sent:
            raise Desync("a reply arrived with no command waiting for it")
        slot = self._sent.popleft()
        if slot.state is SlotState.ABANDONED:
            return None
        slot.state = SlotState.DONE
        slot.outcome = outcome
        return slot

    def cancel(self, slot: Slot) -> None:
        """The caller of *slot* stopped waiting: withdraw it if unsent, else abandon it."""
        if slot.state is SlotState.UNSENT:
            self._unsent.remove(slot)
            slot.state = SlotState.WITHDRAWN
        elif slot.state is SlotState.SENT:
            slot.state = SlotState.ABANDONED

    def next_deadline(self) -> float | None:
        """The earliest deadline of a slot whose caller still waits, or None.

        Scans every slot (deadlines need not follow issue order); the connection asks only
        when its deadline watcher wakes, about once per stream timeout.
        """
        deadlines = [
            slot.deadline
            for queue in (self._sent, self._unsent)
            for slot in queue
            if slot.state is SlotState.SENT or slot.state is SlotState.UNSENT
        ]
        return min(deadlines, default=None)

    def expire(self, now: float) -> list[Slot]:
        """Give up every slot whose deadline has passed (``deadline <= now``): sent ones are
        abandoned (their replies will be dropped), unsent ones withdrawn. Returns them, sent
        ones first, each in issue order, for their callers to be told."""
        expired = []
        for slot in self._sent:
            if slot.state is SlotState.SENT and slot.deadline <= now:
                slot.state = SlotState.ABANDONED
                expired.append(slot)
        withdrawn = [slot for slot in self._unsent if slot.deadline <= now]
        for slot in withdrawn:
            self._unsent.remove(slot)
            slot.state = SlotState.WITHDRAWN
        expired.extend(withdrawn)
        return expired

    def fail_all(self) -> list[Slot]:
        """The connection is gone: every slot whose caller still waits, in order; all cleared.

        The returned slots are ``DONE`` (their outcome is for the IO layer to set)."""
        failed = [s for s in self._sent if s.state is SlotState.SENT]
        failed.extend(self._unsent)
        for slot in self._sent:
            if slot.state is SlotState.ABANDONED:
                slot.state = SlotState.DONE
        for slot in failed:
            slot.state = SlotState.DONE
        self._sent.clear()
        self._unsent.clear()
        return failed


class Connect(enum.Enum):
    NO = "no"
    BACKGROUND = "background"  # use the chosen connection; open one more meanwhile
    HERE = "here"  # no connection to use: the caller opens one and uses it
    WAIT = "wait"  # at the cap and none usable: wait until a connection frees or closes


CHOOSE_WAIT: Final = (None, Connect.WAIT)


def choose_connection(
    loads: Sequence[int],
    connecting: int,
    max_connections: int,
    *,
    pipelined: bool,
    grow_at: int = 1,
) -> tuple[int | None, Connect]:
    """Which connection a new command goes to, and whether to open another.

    *loads* are the open connections' outstanding commands, *connecting* the connections being
    opened. Never more than *max_connections* open plus opening.

    - Pipelined: the least loaded connection; one more is opened in the background when even
      that one has *grow_at* or more commands outstanding. With none open, the caller opens one
      (or waits for those being opened when at the cap).
    - Not pipelined: an idle connection (no command outstanding); else the caller opens one;
      at the cap, it waits.
    """
    room = len(loads) + connecting < max_connections
    if pipelined and loads:
        best = min(range(len(loads)), key=loads.__getitem__)
        if loads[best] >= grow_at and room:
            return best, Connect.BACKGROUND
        return best, Connect.NO
    if not pipelined:
        for index, load in enumerate(loads):
            if load == 0:
                return index, Connect.NO
    return (None, Connect.HERE) if room else CHOOSE_WAIT
