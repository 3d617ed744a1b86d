"""Listen addresses: HOST:PORT parsing and the loopback test behind the admin warning."""

from __future__ import annotations

import pytest

from megatrio.services.http._addresses import is_loopback, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:80", ("::1", 80)),
        ("example.com:65535", ("example.com", 65535)),
    ],
)
def test_parse_address_splits_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nohost", "expected HOST:PORT"),
        (":80", "expected HOST:PORT"),
        ("h:http", "expected HOST:PORT"),
        ("h:70000", "port must be 0..65535"),
        ("[::1:80", r"expected \[IPV6\]:PORT"),
        ("[zz]:80", "'zz' is not an IPv6 address"),
    ],
)
def test_parse_address_rejects_what_it_cannot_bind(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),  # a name is not resolved: assume it is reachable from outside
    ],
)
def test_is_loopback_only_for_addresses_of_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
