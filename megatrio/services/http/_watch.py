"""What one listener's fast connections share: the drain and the watch over slow requests.

A request's handler learns that its peer went away in one of two ways, both driven by one
watch task per listener that wakes every :data:`WATCH_TICK_SECONDS`:

- **A parked receiver.** An ASGI app awaiting ``receive()`` with nothing left to deliver
  first only parks (no socket readiness registration: that costs ~20% of a hello-world
  request). A receiver still parked after a tick is woken to read the socket itself.
- **An inline handler.** A handler that runs in the connection's own task, with no receiver
  beside it (:class:`DisconnectWatch`), registers a cancel scope. A registration older than a
  tick has its socket polled, without reading: the peer's close (``POLLRDHUP``), a reset or an
  error cancels the scope; bytes waiting (a following request) mean the peer is still there,
  and the registration is dropped. A handler quicker than a tick costs two dict operations.
"""

from __future__ import annotations

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
        """An inline handler's scope -> (its socket's fd, the tick it registered at)."""
        self.tick = 0

    def begin_drain(self) -> None:
        """Close idle connections now; others after their response. Not a checkpoint."""
        self.draining = True
        for scope in self.idle:
            scope.cancel()

    async def watch(self, until: trio.Event) -> None:
        """Each tick, have receivers parked since the last one watch their socket and poll the
        sockets of inline handlers registered since then; returns once *until* is set."""
        while not until.is_set():
            await trio.sleep(WATCH_TICK_SECONDS)
            self.tick += 1
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

    ``with watch.cancelled_on_disconnect():`` runs its body in a cancel scope that is
    cancelled when the peer goes away (noticed within two watch ticks); the block then ends
    quietly, as a cancel scope does. :meth:`body_buffered` says whether ``receive()`` would
    deliver the whole request body without waiting — then an inline handler needs no receiver
    task beside it.
    """

    __slots__ = ("_connections", "_fd", "buffered")

    def __init__(self, connections: Connections, fd: int) -> None:
        self._connections = connections
        self._fd = fd
        self.buffered = False
        """Set by the connection for the request being served."""

    def body_buffered(self) -> bool:
        """Whether the request's whole body has been read (and not yet delivered)."""
        return self.buffered

    def cancelled_on_disconnect(self) -> _Watched:
        """A context manager: see the class docstring. Not a checkpoint."""
        return _Watched(self._connections, self._fd)


class _Watched:
    __slots__ = ("_connections", "_fd", "_scope")

    def __init__(self, connections: Connections, fd: int) -> None:
        self._connections = connections
        self._fd = fd
        self._scope = trio.CancelScope()

    def __enter__(self) -> trio.CancelScope:
        scope = self._scope
        scope.__enter__()
        self._connections.inline[scope] = (self._fd, self._connections.tick)
        return scope

    def __exit__(self, *exc_info: object) -> bool:
        self._connections.inline.pop(self._scope, None)
        return self._scope.__exit__(*exc_info)  # type: ignore[arg-type]


INLINE: Final = "megatrio.inline"
"""The ASGI scope's ``extensions`` key of the fast front's :class:`DisconnectWatch`."""
