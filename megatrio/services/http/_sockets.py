"""Listening sockets that megatrio owns: bound once, closed on every path."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import weakref
from collections.abc import Iterator, Sequence

from ..._exceptions import ListenError
from ._addresses import parse_address

BACKLOG = 1024

# Unix socket files this process created, by socket: closing_all removes the file, but only
# while it is still the one bound here (same device and inode), never a successor's.
_bound_paths: weakref.WeakKeyDictionary[socket.socket, tuple[str, int, int]] = (
    weakref.WeakKeyDictionary()
)


def bind_listeners(binds: Sequence[str], *, backlog: int = BACKLOG) -> list[socket.socket]:
    """Bind and listen on every ``HOST:PORT``, ``unix:PATH`` (a Unix domain socket) or
    ``fd://N`` (an inherited listening socket).

    Sockets are non-blocking and inheritable (a supervising primary hands them to workers).
    If any bind fails, the sockets already created are closed before the error propagates.
    A ``unix:PATH`` whose file is a stale socket (nobody accepts on it) replaces that file;
    the file is removed again by :func:`closing_all`.

    Raises:
        ListenError: a bind or listen failed (address in use — for ``unix:PATH`` also a live
            socket or another kind of file at PATH —, unknown host, an address not on this
            machine, permission denied, ...); an ``OSError`` naming the address.
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
            _close(sock)
        raise
    return sockets


def _listener(bind: str, backlog: int) -> socket.socket:
    if bind.startswith("fd://"):
        sock = socket.socket(fileno=int(bind.removeprefix("fd://")))
    elif bind.startswith("unix:"):
        sock = _unix_listener(bind.removeprefix("unix:"), backlog)
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


def _unix_listener(path: str, backlog: int) -> socket.socket:
    if not path:
        raise ValueError("expected unix:PATH with a non-empty PATH")
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        info = os.stat(path)
        _bound_paths[sock] = (path, info.st_dev, info.st_ino)
        sock.listen(backlog)
    except BaseException:
        _close(sock)
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # a socket file nobody listens on: left by a process that died
            return
    raise OSError(errno.EADDRINUSE, f"{path}: another process is listening on it")


def _close(sock: socket.socket) -> None:
    sock.close()
    bound = _bound_paths.pop(sock, None)
    if bound is None:
        return
    path, device, inode = bound
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if (info.st_dev, info.st_ino) == (device, inode):
            os.unlink(path)


def socket_url(sock: socket.socket, *, tls: bool = False) -> str:
    """``http://HOST:PORT`` (``https://`` with *tls*) or ``unix:PATH`` of a listening socket."""
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@contextlib.contextmanager
def closing_all(sockets: Sequence[socket.socket]) -> Iterator[Sequence[socket.socket]]:
    """Close every socket on exit, whatever happens inside; remove the files of the Unix
    sockets :func:`bind_listeners` created."""
    try:
        yield sockets
    finally:
        for sock in sockets:
            _close(sock)
