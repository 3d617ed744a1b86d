"""Value parsers for config fields: ``(raw value, came from text) -> typed value``.

*from_text* is true for values from the environment and command-line flags, which are
strings and may be converted (``"10"`` → ``10.0``); values from TOML or JSON already have
their type and are only checked. Every parser raises ``ValueError("expected ...")`` for a bad
value; the loader adds the source and the key to the message. Pure functions: no I/O.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
from collections.abc import Callable
from typing import Any, Final

from ..services.http._addresses import parse_address

UNIX_PATH_MAX: Final = 107
"""Bytes in a Unix socket path on Linux (``sun_path`` is 108, with the terminating NUL)."""


def seconds(value: Any, from_text: bool) -> float:
    if from_text and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    if value < 0:
        raise ValueError(f"expected a number of seconds >= 0, got {value!r}")
    return float(value)


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def boolean(value: Any, from_text: bool) -> bool:
    if from_text and isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def finite_seconds(value: Any, from_text: bool) -> float:
    parsed = seconds(value, from_text)
    if math.isinf(parsed):
        raise ValueError(f"expected a finite number of seconds >= 0, got {value!r}")
    return parsed


def positive_seconds(value: Any, from_text: bool) -> float:
    parsed = seconds(value, from_text)
    if parsed <= 0 or math.isinf(parsed):
        raise ValueError(f"expected a finite number of seconds > 0, got {value!r}")
    return parsed


def count(minimum: int) -> Callable[[Any, bool], int]:
    """A parser of integers >= *minimum*."""

    def parse(value: Any, from_text: bool) -> int:
        if from_text and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"expected an integer >= {minimum}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        return value

    return parse


def one_of(cls: type[enum.Enum]) -> Callable[[Any, bool], Any]:
    """A parser of *cls* members, given as members or as their (case-insensitive) values."""
    choices = ", ".join(repr(m.value) for m in cls)

    def parse(value: Any, from_text: bool) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        raise ValueError(f"expected one of {choices}, got {value!r}")

    return parse


def strings(value: Any, from_text: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected a list of strings, got {value!r}")


def addresses(value: Any, from_text: bool) -> tuple[str, ...]:
    parsed = strings(value, from_text)
    if not parsed:
        raise ValueError("expected at least one HOST:PORT address")
    for address in parsed:
        if address.startswith("fd://"):
            if not address.removeprefix("fd://").isdigit():
                raise ValueError(f"expected fd://N with N a file descriptor, got {address!r}")
        else:
            parse_address(address)
    return parsed


def optional_address(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT or an empty string, got {value!r}")
    if value:
        parse_address(value)
    return value


def root_path(value: Any, from_text: bool) -> str:
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise ValueError(f"expected a path starting with '/' (or an empty string), got {value!r}")
    if any(c in value for c in "?#") or any(ord(c) < 0x21 for c in value):
        raise ValueError(f"expected a URL path without spaces, '?' or '#', got {value!r}")
    return value.rstrip("/")


def trusted_peers(value: Any, from_text: bool) -> tuple[str, ...]:
    peers = strings(value, from_text)
    for peer in peers:
        if peer in ("*", "unix"):
            continue
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError:
            raise ValueError(
                f"expected IP addresses or networks (10.0.0.0/8), '*' or 'unix', got {peer!r}"
            ) from None
    return peers


def socket_path(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a socket file path (or an empty string), got {value!r}")
    if "\0" in value:
        raise ValueError("expected a socket file path without NUL characters")
    if len(os.fsencode(value)) > UNIX_PATH_MAX:
        raise ValueError(f"expected a socket path of at most {UNIX_PATH_MAX} bytes, got {value!r}")
    return value


def url(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a URL string, got {value!r}")
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected redis://HOST:PORT/DB (or rediss://, unix://)")
    return value


def nats_url(value: Any, from_text: bool) -> str:
    """``nats://HOST:PORT`` (or ``tls://``), several comma-separated for a cluster, or empty."""
    if not isinstance(value, str):
        raise ValueError(f"expected a NATS URL string, got {value!r}")
    for part in value.split(",") if value else ():
        if not part.strip().startswith(("nats://", "tls://")):
            raise ValueError(
                f"expected nats://HOST:PORT (or tls://), comma-separated, got {value!r}"
            )
    return value


def delays(value: Any, from_text: bool) -> tuple[float, ...]:
    """A list of seconds (``[1, 5, 30]``; ``"1,5,30"`` from text)."""
    if from_text and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of numbers of seconds, got {value!r}")
    try:
        return tuple(finite_seconds(v, from_text) for v in value)
    except ValueError:
        raise ValueError(
            f"expected a list of finite numbers of seconds >= 0, got {value!r}"
        ) from None


def path(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a path string, got {value!r}")
    return value
