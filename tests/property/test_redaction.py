"""Secrets never reach log output, at any depth, under any key style, in any format.

Every secret is generated with the marker ``ZQSECRET`` that no other generated text can
contain (noise is lower-case), so "no secret leaked" is simply "the marker is absent".
"""

from __future__ import annotations

import io
import logging
import string
from typing import Any

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from megatrio import LogFormat, Redactor
from megatrio.services.logs._logging import build_formatter
from megatrio.services.logs._redact import DEFAULT_SENSITIVE_KEYS

MARKER = "ZQSECRET"

secrets = st.text(string.ascii_letters + string.digits, min_size=4, max_size=16).map(
    lambda s: MARKER + s
)


def _camel(key: str) -> str:
    head, *rest = key.replace("-", "_").split("_")
    return head + "".join(part.title() for part in rest)


styles = st.sampled_from(
    [
        str.lower,
        str.upper,
        str.title,
        lambda k: k.replace("_", "-"),
        lambda k: k.replace("-", "_"),
        _camel,
        lambda k: "db_" + k,
        lambda k: "X-" + k.replace("_", "-").title(),
    ]
)
base_keys = st.sampled_from(
    [*DEFAULT_SENSITIVE_KEYS, "client_secret", "session_token", "user_password", "secretKey"]
)
sensitive_keys = st.builds(lambda style, key: style(key), styles, base_keys)
noise_text = st.text(string.ascii_lowercase + " .,-_:", max_size=12)
noise_keys = st.text(string.ascii_lowercase, min_size=1, max_size=6).filter(
    lambda k: not Redactor().is_sensitive(k)
)

# A secret under a sensitive key may itself be a nested value: all of it must go.
secret_values = st.recursive(
    secrets, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(noise_keys, inner)
)


def _with_secrets(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    plain = st.dictionaries(noise_keys, children, max_size=3)
    planted = st.dictionaries(sensitive_keys, secret_values, max_size=2)
    return st.lists(children, max_size=3) | st.builds(lambda a, b: {**a, **b}, plain, planted)


payloads = st.recursive(st.none() | st.integers() | noise_text, _with_secrets, max_leaves=12)

# Secrets inside free text: messages and exception messages.
text_key = st.builds(lambda style, key: style(key), styles, base_keys).filter(
    lambda k: " " not in k
)
embedded = st.one_of(
    st.builds(lambda k, s: f"{k}={s}", text_key, secrets),
    st.builds(lambda k, s: f'"{k}": "{s}"', text_key, secrets),
    st.builds(lambda k, s: f"{k}: {s}", text_key, secrets),
    st.builds(lambda s: f"Bearer {s}", secrets),
    st.builds(lambda s: f"postgres://app:{s}@db:5432/main", secrets),
)
messages = st.builds(lambda a, e, b: f"{a} {e} {b}", noise_text, embedded, noise_text)


def render(fmt: LogFormat, payload: Any, message: str, error: str) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(build_formatter(fmt=fmt, redactor=Redactor(), stream=stream))
    logger = logging.getLogger(f"redaction-property-{fmt.value}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.info("request %s", message, extra={"payload": payload})
    try:
        raise ValueError(error)
    except ValueError:
        logger.exception("handler failed: %s", message)
    bound = structlog.wrap_logger(
        logger,
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    bound.warning("structured", payload=payload, note=message)
    return stream.getvalue()


@settings(max_examples=150)
@given(
    fmt=st.sampled_from([LogFormat.JSON, LogFormat.CONSOLE]),
    payload=payloads,
    message=messages,
    error=messages,
)
def test_no_secret_reaches_the_output(
    fmt: LogFormat, payload: Any, message: str, error: str
) -> None:
    output = render(fmt, payload, message, error)
    assert "handler failed" in output  # the records were really rendered
    assert MARKER not in output


@given(payload=payloads)
def test_redact_is_idempotent_and_keeps_non_secret_structure(payload: Any) -> None:
    redactor = Redactor()
    once = redactor.redact(payload)
    assert redactor.redact(once) == once
    assert MARKER not in repr(once)
