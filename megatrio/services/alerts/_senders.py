"""HTTP alert senders: :class:`TelegramSender` and :class:`WebhookSender`, on httpx.

Senders never log or raise anything carrying their secret URL (a Telegram bot token sits in
the URL path): transport errors become a masked :class:`~._alert.SendResult`, and while a
sender's client is open a filter on httpx's loggers masks its secrets in their request lines.
The only module of the alert path that imports httpx, which the face loads lazily.
"""

from __future__ import annotations

import abc
import email.utils
import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, Self, final

import anyio
import httpx

from ..._policy._checks import check_count, check_seconds
from ..logs._redact import MASK
from ._alert import SendResult, truncate

TELEGRAM_MAX_CHARS: Final = 4096
_HTTPX_LOGGERS: Final = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class _MaskSecrets(logging.Filter):
    """Rewrites a record's message with *secrets* masked (only records that contain one)."""

    def __init__(self, secrets: Iterable[str], replacement: str) -> None:
        super().__init__()
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self._replacement = replacement

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, self._replacement)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class _HttpSender(abc.ABC):
    """POSTs JSON with an ``httpx.AsyncClient`` created on first use; the common part."""

    def __init__(
        self,
        url: str,
        *,
        destination: str,
        secrets: Iterable[str],
        timeout_seconds: float,
        max_retry_after_seconds: float,
    ) -> None:
        self.timeout_seconds = check_seconds(
            "timeout_seconds", timeout_seconds, allow_zero=False, allow_inf=False
        )
        self.max_retry_after_seconds = check_seconds(
            "max_retry_after_seconds", max_retry_after_seconds
        )
        self._url = url
        self._destination = destination
        self._mask = _MaskSecrets(secrets, MASK)
        self._client: httpx.AsyncClient | None = None

    @property
    def destination(self) -> str:
        return self._destination

    @abc.abstractmethod
    def _payload(self, text: str) -> dict[str, Any]:
        """The JSON body that carries *text* to this destination."""

    def _body_retry_after(self, response: httpx.Response) -> float | None:
        return None

    async def send(self, text: str) -> SendResult:
        """POST *text*; a :class:`SendResult`, never an exception for a failed delivery.

        The whole exchange is bounded by ``timeout_seconds`` (httpx's per-operation timeouts
        alone would let a server that trickles bytes hold it forever). Success is a 2xx
        status. A checkpoint; cancellation propagates (the request may or may not have
        reached the destination).
        """
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_seconds))
            for name in _HTTPX_LOGGERS:
                logging.getLogger(name).addFilter(self._mask)
        response: httpx.Response | None = None
        error: str | None = None
        with anyio.move_on_after(self.timeout_seconds) as scope:
            try:
                response = await self._client.post(self._url, json=self._payload(text))
            except Exception as exc:
                # Neither the exception nor its message leaves this method: httpx errors carry
                # the request, whose URL holds the secret.
                error = f"{type(exc).__name__} posting to {self._destination}"
        if scope.cancelled_caught:
            error = f"no response from {self._destination} within {self.timeout_seconds:g} s"
        if response is None:
            return SendResult(ok=False, error=error)
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(ok=True, status=status)
        retry_after: float | None = None
        if status in (429, 503):
            retry_after = _parse_retry_after(response.headers.get("retry-after"), time.time())
            body_after = self._body_retry_after(response)
            if body_after is not None:
                retry_after = max(retry_after or 0.0, body_after)
            if retry_after is not None:
                retry_after = min(retry_after, self.max_retry_after_seconds)
        return SendResult(
            ok=False,
            status=status,
            retry_after_seconds=retry_after,
            error=f"HTTP {status} from {self._destination}",
        )

    async def aclose(self) -> None:
        """Close the HTTP client and stop masking httpx's logs. Idempotent.

        Runs even when cancelled, bounded to a few seconds.
        """
        client, self._client = self._client, None
        if client is None:
            return
        for name in _HTTPX_LOGGERS:
            logging.getLogger(name).removeFilter(self._mask)
        with anyio.move_on_after(5, shield=True):
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._destination}>"


@final
class TelegramSender(_HttpSender):
    """Sends alerts to a Telegram chat with the Bot API's ``sendMessage``.

    POSTs ``{"chat_id": ..., "text": ...}`` to ``<base_url>/bot<token>/sendMessage``. The token
    is part of that URL, so it is never shown: not in :attr:`destination`, ``repr``, results
    or exceptions, and httpx's request log lines have it masked while the client is open.
    Texts are cut to Telegram's 4096 characters. A 429's wait comes from ``Retry-After`` or
    the body's ``parameters.retry_after``, whichever is longer, capped at
    *max_retry_after_seconds*. Use as ``async with TelegramSender(...) as sender:`` or call
    :meth:`aclose`.

    Raises:
        ValueError: *bot_token* is empty or contains ``/``.
    """

    def __init__(
        self,
        bot_token: str,
        chat_id: int | str,
        *,
        base_url: str = "https://api.telegram.org",
        timeout_seconds: float = 10.0,
        max_retry_after_seconds: float = 3600.0,
    ) -> None:
        if not bot_token or "/" in bot_token or any(c.isspace() for c in bot_token):
            raise ValueError("bot_token must be a non-empty token without '/' or spaces")
        base = base_url.rstrip("/")
        self.chat_id = chat_id
        super().__init__(
            f"{base}/bot{bot_token}/sendMessage",
            destination=f"telegram chat {chat_id} via {base}",
            secrets=(bot_token,),
            timeout_seconds=timeout_seconds,
            max_retry_after_seconds=max_retry_after_seconds,
        )

    def _payload(self, text: str) -> dict[str, Any]:
        return {
            "chat_id": self.chat_id,
            "text": truncate(text, TELEGRAM_MAX_CHARS),
            "disable_web_page_preview": True,
        }

    def _body_retry_after(self, response: httpx.Response) -> float | None:
        try:
            value = response.json()["parameters"]["retry_after"]
        except Exception:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) and value >= 0 else None


@final
class WebhookSender(_HttpSender):
    """Sends alerts as ``{"text": ...}`` JSON POSTs to *url* (Slack-style incoming webhooks).

    Webhook URLs are usually secrets themselves, so only the scheme and host are ever shown
    (:attr:`destination`, results, httpx's log lines while the client is open). *extra*
    fields are added to every payload. Texts are cut to *max_text_chars*. ``Retry-After`` on
    429/503 is reported, capped at *max_retry_after_seconds*.

    Raises:
        ValueError: *url* is not an absolute http(s) URL.
    """

    def __init__(
        self,
        url: str,
        *,
        extra: Mapping[str, Any] | None = None,
        timeout_seconds: float = 10.0,
        max_retry_after_seconds: float = 3600.0,
        max_text_chars: int = 4000,
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("webhook url must be an absolute http(s) URL")
        self.extra = dict(extra or {})
        self.max_text_chars = check_count("max_text_chars", max_text_chars, minimum=64)
        port = f":{parsed.port}" if parsed.port is not None else ""
        path = parsed.raw_path.decode("ascii", "replace")
        super().__init__(
            url,
            destination=f"webhook {parsed.scheme}://{parsed.host}{port}/…",
            secrets=(str(parsed), url, path if path not in ("", "/") else ""),
            timeout_seconds=timeout_seconds,
            max_retry_after_seconds=max_retry_after_seconds,
        )

    def _payload(self, text: str) -> dict[str, Any]:
        return {**self.extra, "text": truncate(text, self.max_text_chars)}


def _parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # RFC 9110 dates are GMT; a date without a zone is not one
    return max(0.0, when.timestamp() - now)
