"""redact_url: credentials in NATS URLs (and in text that quotes them) never leave masked."""

from __future__ import annotations

import pytest

from megatrio.services.nats._connection import redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nats://user:secret@host:4222", "nats://user:***@host:4222"),
        ("nats://s3cr3t-token@host", "nats://***@host"),
        ("tls://u:p%40ss@h:1,nats://tok@h2:2", "tls://u:***@h:1,nats://***@h2:2"),
        ("connect to nats://a:b@h failed: refused", "connect to nats://a:***@h failed: refused"),
        ("nats://host:4222", "nats://host:4222"),
        ("no url here, user@example.com", "no url here, user@example.com"),
        ("ws://user:@host", "ws://user:***@host"),
    ],
)  # fmt: skip
def test_credentials_are_masked(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_redaction_is_idempotent() -> None:
    once = redact_url("nats://user:secret@host,nats://token@other")
    assert redact_url(once) == once
    assert "secret" not in once
    assert "token" not in once
