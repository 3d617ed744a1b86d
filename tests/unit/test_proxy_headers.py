"""Proxy headers are applied only for trusted peers, reading X-Forwarded-For from the right."""

from __future__ import annotations

from typing import Any

import pytest

from megatrio.services.http._asgi import Message, Scope
from megatrio.services.http._proxy_headers import TrustedPeers, proxy_headers

pytestmark = pytest.mark.anyio


async def seen_by_app(
    trusted: list[str],
    client: tuple[str, int] | None,
    headers: list[tuple[bytes, bytes]],
    kind: str = "http",
) -> Scope:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def receive() -> Message:
        raise AssertionError("not called")

    async def send(message: Message) -> None:
        raise AssertionError("not called")

    scope: Scope = {"type": kind, "client": client, "scheme": "http", "headers": headers}
    await proxy_headers(app, TrustedPeers(trusted))(scope, receive, send)
    return seen[0]


XFF = (b"x-forwarded-for", b"203.0.113.9, 10.0.0.2")
PROTO = (b"x-forwarded-proto", b"https")


async def test_an_untrusted_peer_cannot_claim_an_address_or_scheme() -> None:
    scope = await seen_by_app(["10.0.0.0/8"], ("198.51.100.7", 5000), [XFF, PROTO])
    assert scope["client"] == ("198.51.100.7", 5000)
    assert scope["scheme"] == "http"


async def test_trusted_proxies_are_skipped_from_the_right() -> None:
    scope = await seen_by_app(["10.0.0.0/8"], ("10.0.0.1", 5000), [XFF, PROTO])
    assert scope["client"] == ("203.0.113.9", 0)
    assert scope["scheme"] == "https"


async def test_a_spoofed_leftmost_entry_is_not_believed() -> None:
    # The client sent "X-Forwarded-For: 1.2.3.4"; the trusted proxy appended what it saw.
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-for", b"203.0.113.9")]
    scope = await seen_by_app(["127.0.0.1"], ("127.0.0.1", 1), headers)
    assert scope["client"] == ("203.0.113.9", 0)


async def test_star_trusts_everyone_and_takes_the_leftmost_entry() -> None:
    scope = await seen_by_app(["*"], ("198.51.100.7", 1), [XFF])
    assert scope["client"] == ("203.0.113.9", 0)


async def test_unix_socket_peers_need_unix_and_websocket_schemes_are_ws() -> None:
    untrusted = await seen_by_app(["127.0.0.1"], None, [XFF, PROTO], kind="websocket")
    assert untrusted["client"] is None
    scope = await seen_by_app(["unix"], None, [XFF, PROTO], kind="websocket")
    assert scope["client"] == ("10.0.0.2", 0)
    assert scope["scheme"] == "wss"


async def test_an_unknown_scheme_is_ignored_and_ipv6_brackets_are_dropped() -> None:
    headers = [(b"x-forwarded-for", b"[2001:db8::1]"), (b"x-forwarded-proto", b"gopher")]
    scope = await seen_by_app(["::1"], ("::1", 1), headers)
    assert scope["client"] == ("2001:db8::1", 0)
    assert scope["scheme"] == "http"


def test_bad_entries_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"got 'proxy\.local'"):
        TrustedPeers(["proxy.local"])
    assert not TrustedPeers([])
