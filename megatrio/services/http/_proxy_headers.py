"""``X-Forwarded-For`` / ``X-Forwarded-Proto`` from trusted proxies only.

A request's ``client`` and ``scheme`` are rewritten only when the peer that connected is a
trusted proxy: anyone else could claim any address. ``X-Forwarded-For`` is read from the right
(the entry the nearest proxy appended) leftwards, skipping trusted proxies; the first address
that is not one is the client. When every entry is trusted (or ``*`` trusts everyone), the
leftmost entry is the client. ``X-Forwarded-Proto`` is taken from the nearest proxy (its last
value) when it is ``http`` or ``https`` (``ws``/``wss`` for WebSocket scopes).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import final

from ._asgi import ASGIApp, Receive, Scope, Send

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@final
class TrustedPeers:
    """Peers allowed to set proxy headers: IP addresses, networks (``10.0.0.0/8``), ``*``
    (every peer) or ``unix`` (peers on a Unix domain socket, which have no address).

    Raises:
        ValueError: an entry is none of those.
    """

    __slots__ = ("_any", "_networks", "_unix")

    def __init__(self, entries: Iterable[str]) -> None:
        self._any = False
        self._unix = False
        networks: list[_Network] = []
        for entry in entries:
            entry = entry.strip()
            if entry == "*":
                self._any = True
            elif entry == "unix":
                self._unix = True
            else:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(
                        f"expected an IP address, a network like 10.0.0.0/8, '*' or 'unix', "
                        f"got {entry!r}"
                    ) from None
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return self._any or self._unix or bool(self._networks)

    def trusts(self, host: str | None) -> bool:
        """Whether *host* (``None``: a Unix-socket peer) is trusted."""
        if host is None:
            return self._any or self._unix
        if self._any:
            return True
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in network for network in self._networks)


def proxy_headers(app: ASGIApp, trusted: TrustedPeers) -> ASGIApp:
    """Wrap *app*: apply proxy headers of requests whose peer *trusted* trusts."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if trusted.trusts(None if client is None else client[0]):
                scope = _forwarded(scope, trusted)
        await app(scope, receive, send)

    return middleware


def _forwarded(scope: Scope, trusted: TrustedPeers) -> Scope:
    forwarded_for: list[str] = []
    proto: str | None = None
    for name, value in scope["headers"]:
        name = name.lower()
        if name == b"x-forwarded-for":
            forwarded_for += _tokens(value)
        elif name == b"x-forwarded-proto":
            tokens = _tokens(value)
            if tokens:
                proto = tokens[-1].lower()
    if not forwarded_for and proto is None:
        return scope
    scope = dict(scope)
    if forwarded_for:
        scope["client"] = (_client(forwarded_for, trusted), 0)
    if proto in ("http", "https"):
        if scope["type"] == "websocket":
            proto = "wss" if proto == "https" else "ws"
        scope["scheme"] = proto
    return scope


def _tokens(value: bytes) -> list[str]:
    return [part.strip() for part in value.decode("latin-1").split(",") if part.strip()]


def _client(forwarded_for: Sequence[str], trusted: TrustedPeers) -> str:
    for host in reversed(forwarded_for):
        if not trusted.trusts(host):
            return host.strip("[]")
    return forwarded_for[0].strip("[]")
