"""A fast connection's reads and writes, made on its socket's file descriptor.

trio's ``SocketStream`` is general: every ``receive_some`` first tries the read (which, on a
keep-alive connection whose response was just sent, nearly always fails with ``EAGAIN``
before the readiness wait), and every ``send_all`` the kernel takes at once still ends in a
trip through the scheduler; both pass three wrappers on the way. Without them a raw ASGI app
on the fast front served ~30% more hello-world requests per second, the App ~8% (measured in
back-to-back pairs under wrk: ``bench/RESULTS.md``). :class:`SocketWire` does only what one
connection task needs:

- **receive** waits for readability, then reads once: one readiness registration and one
  read per request, never a failing read first. A spurious wakeup waits again.
- **send** writes at once; a write the kernel takes whole is *not* a checkpoint unless the
  caller asks (``checkpoint=True``), because the connection's next receive is one. A
  response sent in pieces asks for it between pieces, so that a peer reading as fast as a
  handler streams cannot hold the event loop. A write the kernel takes only in part waits
  for writability for the rest.
- **the fd is looked up at every operation**: once another task has closed the socket (the
  listener closes stragglers at the end of a stop), its number may already belong to a new
  connection, so an operation on a closed socket raises ``ClosedResourceError`` and never
  touches the number. trio wakes a task waiting on a socket that is closed with the same
  error.

Errors are those of a trio stream: ``BrokenResourceError`` for a reset or broken pipe,
``ClosedResourceError`` for a closed socket.
"""

from __future__ import annotations

import errno
import os

import trio


class SocketWire:
    """Reads and writes on *sock*, after *prefix* (bytes already read from it) is received
    first. Only one task may use a wire, and never at the same time as a stream on the same
    socket."""

    __slots__ = ("_prefix", "_sock")

    def __init__(self, sock: trio.socket.SocketType, prefix: bytes = b"") -> None:
        self._sock = sock
        self._prefix = prefix

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to *max_bytes* bytes once some have arrived; ``b""`` at the peer's EOF."""
        if self._prefix:
            await trio.lowlevel.checkpoint()
            data, self._prefix = self._prefix, b""
            return data
        sock = self._sock
        while True:
            await trio.lowlevel.wait_readable(_fd(sock))
            try:
                return os.read(_fd(sock), max_bytes)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _translated(exc) from exc

    async def send_all(self, data: bytes, *, checkpoint: bool = False) -> None:
        """Send every byte of *data*; a checkpoint only when *checkpoint* is true or the kernel
        cannot take it all at once."""
        if checkpoint:
            await trio.lowlevel.checkpoint()
        sock = self._sock
        try:
            sent = os.write(_fd(sock), data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise _translated(exc) from exc
        if sent == len(data):
            return
        with memoryview(data) as view:
            while sent < len(view):
                await trio.lowlevel.wait_writable(_fd(sock))
                try:
                    with view[sent:] as rest:
                        sent += os.write(_fd(sock), rest)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise _translated(exc) from exc


def _fd(sock: trio.socket.SocketType) -> int:
    fd = sock.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("the connection's socket was closed")
    return fd


def _translated(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the connection's socket was closed")
    return trio.BrokenResourceError(f"socket error: {exc}")
