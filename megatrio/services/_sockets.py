"""Listening sockets that megatrio owns: bound once, closed on every path."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence

from .._config import parse_address
from .._exceptions import ListenError

BACKLOG = 1024


def bind_listeners(binds: Sequence[str], *, backlog: int = BACKLOG) -> list[socket.socket]:
    """Bind and listen on every ``HOST:PORT`` (or ``fd://N``, an inherited listening socket).

    Sockets are non-blocking and inheritable (a supervising primary hands them to workers).
    If any bind fails, the sockets already created are closed before the error propagates.

    Raises:
        ListenError: a bind or listen failed (address in use, unknown host, an address not
            on this machine, permission denied, ...); an ``OSError`` naming the address.
        ValueError: a bind string is malformed.
    """
    sockets: list[socket.socket] = []
    try:
        for bind in binds:
            try:
                sockets.append(_listener(bind, backlog))
            except OSError as exc:
                raise ListenError(bind, exc) from exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listener(bind: str, backlog: int) -> socket.socket:
    if bind.startswith("fd://"):
        sock = socket.socket(fileno=int(bind.removeprefix("fd://")))
    else:
        host, port = parse_address(bind)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def closing_all(sockets: Sequence[socket.socket]) -> Iterator[Sequence[socket.socket]]:
    """Close every socket on exit, whatever happens inside."""
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
