"""Listen addresses: parsing ``HOST:PORT`` / ``[V6]:PORT`` and telling loopback hosts apart.

Owned by the HTTP service, which binds them; :mod:`megatrio._config` validates its address
keys with :func:`parse_address`, and the App wiring uses :func:`is_loopback`.
"""

from __future__ import annotations

import ipaddress


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[V6]:PORT"`` → ``(host, port)``; port 0 means any free port.

    Raises:
        ValueError: not of that form, or the port is out of range.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port} in {text!r}")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"expected [IPV6]:PORT, but {host!r} is not an IPv6 address in {text!r}"
            ) from None
    return host, port


def is_loopback(host: str) -> bool:
    """Whether *host* only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
