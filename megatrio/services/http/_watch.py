"""What one listener's fast connections share: the drain and the watch over slow requests.

One watch task per listener wakes every :data:`WATCH_TICK_SECONDS`. It keeps the timers of
the connections (:meth:`Connections.cancel_at`: a keep-alive timeout, a response timeout),
which cancel a connection's own scope at their deadline, never before it and at most two
ticks after; registering and forgetting a timer costs two dict operations, where a cancel
scope per timed wait cost ~7 us and a deadline moved on an open scope ~4.5 us, per request
(measured on this 2-core machine, whose hello-world request costs ~100 us on the front).

A request's handler learns that its peer went away in one of two ways:

- **A parked receiver.** An ASGI app awaiting ``receive()`` with nothing left to deliver
  first only parks (no socket readiness registration: that costs ~20% of a hello-world
  request). A receiver still parked after a tick is woken to read the socket itself.
- **An inline handler.** A handler that runs in the connection's own task, with no receiver
  beside it (:class:`DisconnectWatch`), registers the connection's scope. A registration older
  than a tick has its socket polled, without reading: the peer's close (``POLLRDHUP``), a
  reset or an error cancels the connection (its handler with it); bytes waiting (a following
  request) mean the peer is still there, and the registration is dropped. A handler quicker
  than a tick costs two dict operations.
"""

from __future__ import annotations

import math
import select
from typing import Final

import outcome
import trio

WATCH_TICK_SECONDS: Final = 0.05

_WATCH: Final = object()
_GONE: Final = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR | select.POLLNVAL
_POLL_FOR: Final = select.POLLIN | getattr(select, "POLLRDHUP", 0)


class Connections:
    """The drain flag, idle connections' scopes, parked receivers and inline handlers of
    one listener (see the module docstring)."""

    def __init__(self) -> None:
        self.draining = False
        self.idle: set[trio.CancelScope] = set()
        self.parked: dict[trio.lowlevel.Task, int] = {}
        self.inline: dict[trio.CancelScope, tuple[int, int]] = {}
        """A connection running an inline handler: its scope -> (its socket's fd, the tick it
        registered at)."""
        self.tick = 0
        # The timers: slot n holds the scopes due in ((n - 1) * tick, n * tick]; the watch
        # cancels those of every slot up to the current time's.
        self._slots: dict[int, set[trio.CancelScope]] = {}
        self._done_slot: int | None = None

    def begin_drain(self) -> None:
        """Close idle connections now; others after their response. Not a checkpoint."""
        self.draining = True
        for scope in self.idle:
            scope.cancel()

    def cancel_at(self, scope: trio.CancelScope, deadline: float) -> int:
        """Have the watch cancel *scope* once the trio clock reaches *deadline* (never before,
        within two ticks after) unless :meth:`forget` is called first; returns the timer's
        slot, for :meth:`forget`. Not a checkpoint."""
        slot = math.ceil(deadline / WATCH_TICK_SECONDS)
        if self._done_slot is not None and slot <= self._done_slot:
            slot = self._done_slot + 1
        due = self._slots.get(slot)
        if due is None:
            self._slots[slot] = {scope}
        else:
            due.add(scope)
        return slot

    def forget(self, scope: trio.CancelScope, slot: int) -> None:
        """Drop the timer :meth:`cancel_at` set for *scope* in *slot*. Not a checkpoint."""
        due = self._slots.get(slot)
        if due is not None:
            due.discard(scope)

    def _fire(self) -> None:
        now = math.floor(trio.current_time() / WATCH_TICK_SECONDS)
        if self._slots:
            # cancel_at() never files a timer at or below _done_slot.
            first = min(self._slots) if self._done_slot is None else self._done_slot + 1
            for slot in range(first, now + 1):
                for scope in self._slots.pop(slot, ()):
                    scope.cancel()
        self._done_slot = now

    async def watch(self, until: trio.Event) -> None:
        """Each tick, fire the timers that are due, have receivers parked since the last
        tick watch their socket and poll the sockets of inline handlers registered since
        then; returns once *until* is set."""
        while not until.is_set():
            await trio.sleep(WATCH_TICK_SECONDS)
            self.tick += 1
            self._fire()
            due = [task for task, tick in self.parked.items() if tick < self.tick]
            for task in due:
                del self.parked[task]
                trio.lowlevel.reschedule(task, outcome.Value(_WATCH))
            if self.inline:
                self._poll_inline()

    def _poll_inline(self) -> None:
        due = [(scope, fd) for scope, (fd, tick) in self.inline.items() if tick < self.tick]
        if not due:
            return
        poller = select.poll()
        for _, fd in due:
            poller.register(fd, _POLL_FOR)
        ready = dict(poller.poll(0))
        for scope, fd in due:
            events = ready.get(fd, 0)
            if events & _GONE:
                del self.inline[scope]
                scope.cancel()
            elif events:
                del self.inline[scope]  # a following request: the peer is still there

    async def park(self) -> bool:
        """Wait for :meth:`unpark` (False) or the watch (True)."""
        task = trio.lowlevel.current_task()
        self.parked[task] = self.tick

        def abort(_: object) -> trio.lowlevel.Abort:
            self.parked.pop(task, None)
            return trio.lowlevel.Abort.SUCCEEDED

        reason = await trio.lowlevel.wait_task_rescheduled(abort)
        return reason is _WATCH

    def unpark(self, task: trio.lowlevel.Task) -> None:
        """Wake *task* parked in :meth:`park` (if it still is). Not a checkpoint."""
        if self.parked.pop(task, None) is not None:
            trio.lowlevel.reschedule(task, outcome.Value(None))


class DisconnectWatch:
    """What the fast front offers a handler that runs inline, in the connection's task: the
    ASGI scope's ``extensions[INLINE]``.

    Inside ``with watch.cancelled_on_disconnect():`` a peer that goes away (noticed within
    two watch ticks) cancels the *connection*: ``Cancelled`` then propagates out of the ASGI
    app to the front, which ends the connection (the peer is gone: nothing more can be
    served on it). ``with watch.cancelled_after(seconds):`` bounds a block the same way (a
    response that cannot be sent in time ends the connection, as a truncated response must).
    :meth:`body_buffered` says whether ``receive()`` would deliver the whole request body
    without waiting — then an inline handler needs no receiver task beside it. One request at
    a time: neither block may be nested in itself.
    """

    __slots__ = ("_after", "_connections", "_disconnect", "_fd", "_scope", "buffered")

    def __init__(self, connections: Connections, fd: int, scope: trio.CancelScope) -> None:
        self._connections = connections
        self._fd = fd
        self._scope = scope
        self._disconnect = _OnDisconnect(self)
        self._after = _After(connections, scope)
        self.buffered = False
        """Set by the connection for the request being served."""

    def body_buffered(self) -> bool:
        """Whether the request's whole body has been read (and not yet delivered)."""
        return self.buffered

    def cancelled_on_disconnect(self) -> _OnDisconnect:
        """A context manager: see the class docstring. Not a checkpoint."""
        return self._disconnect

    def cancelled_after(self, seconds: float) -> _After:
        """A context manager: see the class docstring. Not a checkpoint."""
        self._after.deadline = trio.current_time() + seconds
        return self._after


class _OnDisconnect:
    __slots__ = ("_watch",)

    def __init__(self, watch: DisconnectWatch) -> None:
        self._watch = watch

    def __enter__(self) -> None:
        watch = self._watch
        watch._connections.inline[watch._scope] = (watch._fd, watch._connections.tick)

    def __exit__(self, *exc_info: object) -> None:
        self._watch._connections.inline.pop(self._watch._scope, None)


class _After:
    __slots__ = ("_connections", "_scope", "_slot", "deadline")

    def __init__(self, connections: Connections, scope: trio.CancelScope) -> None:
        self._connections = connections
        self._scope = scope
        self.deadline = math.inf
        self._slot = 0

    def __enter__(self) -> None:
        self._slot = self._connections.cancel_at(self._scope, self.deadline)

    def __exit__(self, *exc_info: object) -> None:
        self._connections.forget(self._scope, self._slot)


INLINE: Final = "megatrio.inline"
"""The ASGI scope's ``extensions`` key of the fast front's :class:`DisconnectWatch`."""
