"""Alert delivery: ERROR log records, redacted, sent to Telegram or a webhook.

The path of an alert::

    logging call ──► AlertHandler (redact, bounded buffer) ──► AlertDispatcher round
        ──► throttle (token bucket) ──► AlertSender (HTTP POST) ──► failure: RetryQueue (file)
                                                  ▲                              │
                                                  └──── periodic drain ◄─────────┘

Every bound drops and counts: the buffer (``"buffer_full"``), the throttle (``"throttled"``),
the retry queue (``"too_many"``, ``"too_old"``, ``"corrupt"``), and a failed write to the retry
queue (``"queue_error"``). Each dispatch round that saw drops logs them at WARNING and sends a
summary alert ("N alert(s) dropped since the last report"), which bypasses the throttle.

Nothing unredacted leaves the process: records are rendered by the same formatter as the logs
(:func:`~megatrio.services.logs._logging.build_formatter` with a :class:`Redactor`), and senders
never log or raise anything carrying their secret URL (a Telegram bot token sits in the URL
path): transport errors become a masked :class:`SendResult`, and while a sender's client is
open a filter on httpx's loggers masks its secrets in their request lines.

This module's own records, and the retry queue's, are never turned into alerts (an alert about
a failing alert would feed itself); both log at WARNING at most.
"""

from __future__ import annotations

import abc
import collections
import email.utils
import logging
import math
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol, Self, final

import anyio
import anyio.abc
import attrs
import httpx

from ..._policy._checks import check_count, check_seconds
from ..._policy._throttle import TokenBucket
from ...nursery._timer import run_every
from ..logs._levels import LogFormat
from ..logs._logging import build_formatter
from ..logs._redact import MASK, Redactor
from ..stores._retry_queue import DROP_REASONS, QueuedEntry, RetryQueue

log = logging.getLogger("megatrio.alerts")

DROP_BUFFER_FULL: Final = "buffer_full"
"""The handler's buffer was full when the record arrived."""
DROP_THROTTLED: Final = "throttled"
"""The throttle refused it."""
DROP_FORMAT_ERROR: Final = "format_error"
"""The record could not be formatted."""
DROP_QUEUE_ERROR: Final = "queue_error"
"""Sending failed and it could not be written to the retry queue either."""

DEFAULT_ALERTS_PER_MINUTE: Final = 20
"""The default throttle: Telegram's own limit for messages to one group."""
TELEGRAM_MAX_CHARS: Final = 4096
_TRUNCATED: Final = "\n…[truncated]"
_HTTPX_LOGGERS: Final = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
# Records from these loggers never become alerts: they are the alert path itself.
_INTERNAL_LOGGERS: Final = ("megatrio.alerts", "megatrio.retry_queue")


@attrs.frozen(kw_only=True)
class Alert:
    """One redacted, formatted record waiting to be sent."""

    text: str
    level: str
    logger: str
    created: float
    """The record's wall-clock creation time."""


# -- the logging side -------------------------------------------------------------------------


@final
class AlertHandler(logging.Handler):
    """A logging handler that buffers records at *level* and above as redacted alerts.

    Each record is rendered by the logging formatter (*fmt*, console lines by default) with
    *redactor*, so an alert shows exactly what the logs show, secrets masked; the text is cut
    to *max_text_chars*. :meth:`emit` never blocks and never raises: when *max_buffered*
    alerts are waiting, the new record is dropped and counted (the first errors of a storm
    usually carry its cause, so those are the ones kept). Records of the alert path's own
    loggers (``megatrio.alerts``, ``megatrio.retry_queue``) are ignored.

    Thread-safe: any thread may log; an :class:`AlertDispatcher` takes the buffer.
    """

    def __init__(
        self,
        *,
        redactor: Redactor | None = None,
        level: int = logging.ERROR,
        max_buffered: int = 1000,
        max_text_chars: int = 4000,
        fmt: LogFormat = LogFormat.CONSOLE,
    ) -> None:
        super().__init__(level)
        self.max_buffered = check_count("max_buffered", max_buffered, minimum=1)
        self.max_text_chars = check_count("max_text_chars", max_text_chars, minimum=64)
        self.redactor = Redactor() if redactor is None else redactor
        # The stream only decides AUTO's JSON-or-console; alerts have no stream of their own.
        self.setFormatter(build_formatter(fmt=fmt, redactor=self.redactor, stream=sys.stderr))
        self._buffer: collections.deque[Alert] = collections.deque()
        self._drops: collections.Counter[str] = collections.Counter()
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if any(record.name == n or record.name.startswith(n + ".") for n in _INTERNAL_LOGGERS):
            return
        try:
            with self._guard:
                if len(self._buffer) >= self.max_buffered:
                    self._drops[DROP_BUFFER_FULL] += 1
                    return
            # Formatting outside the guard: it can be slow (tracebacks) and must not hold up
            # other threads' records; the formatter copies the record, never mutates it.
            text = self.redactor.scrub(self.format(record))
        except Exception:
            with self._guard:
                self._drops[DROP_FORMAT_ERROR] += 1
            return
        alert = Alert(
            text=truncate(text, self.max_text_chars),
            level=record.levelname.lower(),
            logger=record.name,
            created=record.created,
        )
        with self._guard:
            if len(self._buffer) >= self.max_buffered:
                self._drops[DROP_BUFFER_FULL] += 1
            else:
                self._buffer.append(alert)

    def take(self) -> tuple[list[Alert], dict[str, int]]:
        """Remove and return every buffered alert, with the drops counted since the last take.

        Not a checkpoint; never blocks for longer than another thread's append.
        """
        with self._guard:
            alerts = list(self._buffer)
            self._buffer.clear()
            drops = dict(self._drops)
            self._drops.clear()
        return alerts, drops

    def __len__(self) -> int:
        return len(self._buffer)


def truncate(text: str, max_chars: int) -> str:
    """*text* cut to at most *max_chars* characters, marked when cut."""
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - len(_TRUNCATED))] + _TRUNCATED


# -- senders ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SendResult:
    """The outcome of one :meth:`AlertSender.send`. Safe to log: it never holds a secret."""

    ok: bool
    status: int | None = None
    """The HTTP status, when a response arrived."""
    retry_after_seconds: float | None = None
    """How long the destination asked us to wait (429/503 ``Retry-After``), if it did."""
    error: str | None = None
    """What went wrong, with secrets masked."""


class AlertSender(Protocol):
    """Delivers one alert text to one destination.

    :meth:`send` never raises for a delivery failure (it returns a :class:`SendResult`) and
    never lets a secret reach an exception or a log; cancellation propagates.
    """

    @property
    def destination(self) -> str:
        """A description of the destination that is safe to log."""
        ...

    async def send(self, text: str) -> SendResult: ...

    async def aclose(self) -> None: ...


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


# -- the dispatcher ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DispatchReport:
    """What one :meth:`AlertDispatcher.dispatch` round did."""

    sent: int = 0
    """New alerts (and drop summaries) sent this round."""
    queued: int = 0
    """New alerts written to the retry queue (the send failed, or the destination was
    blocked by a ``Retry-After``, or an earlier send of this round had failed)."""
    retried: int = 0
    """Queued alerts delivered by this round's drain."""
    dropped: Mapping[str, int] = attrs.field(factory=dict)
    """Drops reported this round, by reason."""


@final
class AlertDispatcher:
    """Sends what an :class:`AlertHandler` buffers through an :class:`AlertSender`.

    Run :meth:`serve` as a supervised child. Every *interval_seconds* a round (:meth:`dispatch`)
    takes the buffered alerts, passes each through *throttle* (``None``, the default, means
    :data:`DEFAULT_ALERTS_PER_MINUTE` per minute), retries queued alerts when
    *retry_interval_seconds* have passed, sends the new ones, and reports drops. A failed send
    goes to *queue* (one queue directory per destination) and the rest of the round is not
    sent but queued too, so a dead destination costs one timeout per round, not one per alert.

    ``Retry-After`` (429/503) is honoured: nothing is sent to the destination until it has
    passed; meanwhile new alerts go to the queue, which is drained on the first round after.
    Times come from the event loop's clock.
    """

    def __init__(
        self,
        handler: AlertHandler,
        sender: AlertSender,
        *,
        queue: RetryQueue,
        throttle: TokenBucket | None = None,
        interval_seconds: float = 2.0,
        retry_interval_seconds: float = 30.0,
        name: str = "megatrio",
    ) -> None:
        self.handler = handler
        self.sender = sender
        self.queue = queue
        self.throttle = (
            TokenBucket.per_period(DEFAULT_ALERTS_PER_MINUTE, 60.0)
            if throttle is None
            else throttle
        )
        self.interval_seconds = check_seconds(
            "interval_seconds", interval_seconds, allow_zero=False, allow_inf=False
        )
        self.retry_interval_seconds = check_seconds(
            "retry_interval_seconds", retry_interval_seconds, allow_zero=False
        )
        self.name = name
        self._blocked_until = -math.inf
        self._next_retry_at = -math.inf
        self._round_failed = False
        # Drops not yet reported in a summary alert: kept until a summary is sent or queued.
        self._unreported: collections.Counter[str] = collections.Counter()
        self.drops: collections.Counter[str] = collections.Counter()
        """Every drop reported so far, by reason."""

    @property
    def blocked_until(self) -> float:
        """Event-loop time before which nothing is sent (``-inf`` when not blocked)."""
        return self._blocked_until

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run a round every ``interval_seconds`` until cancelled or asked to stop.

        A supervised child: reports ready at once. When asked to stop it runs one last round,
        so alerts logged during shutdown are sent or queued; the child's shutdown deadline
        bounds it, and a round cut short queues what it had not sent (see :meth:`dispatch`).
        """
        await run_every(self.interval_seconds, None, self.dispatch, task_status=task_status)
        await self.dispatch()

    async def dispatch(self) -> DispatchReport:
        """One round: take, throttle, retry the queue, send, report drops.

        A checkpoint. Cancelled midway, the alerts of the round that were not yet sent are
        appended to the retry queue (shielded, bounded to a few seconds), and the drain in
        progress, if any, leaves its entries for the next one; an alert whose send was
        interrupted may reach the destination twice.
        """
        self._round_failed = False
        now = anyio.current_time()
        alerts, buffer_drops = self.handler.take()
        self._unreported.update(buffer_drops)
        outbox: list[str] = []
        for alert in alerts:
            if self.throttle.try_acquire(now):
                outbox.append(alert.text)
            else:
                self._unreported[DROP_THROTTLED] += 1
        retried = 0
        sent = queued = 0
        try:
            if now >= self._next_retry_at and not self._blocked(now):
                self._next_retry_at = now + self.retry_interval_seconds
                retried = await self._drain()
            reported = self._take_unreported()
            if reported:
                outbox.append(self._summary_text(reported))
            while outbox:
                text = outbox[0]
                if self._round_failed or self._blocked(anyio.current_time()):
                    break
                if await self._send(text):
                    sent += 1
                else:
                    self._round_failed = True
                    break
                outbox.pop(0)
            if outbox:
                queued = len(outbox)
                await self._enqueue(outbox)
                outbox = []
        finally:
            if outbox:
                with anyio.move_on_after(5, shield=True):
                    await self._enqueue(outbox)
        return DispatchReport(sent=sent, queued=queued, retried=retried, dropped=reported)

    async def _drain(self) -> int:
        try:
            summary = await self.queue.drain(self._deliver_queued)
        except OSError as exc:
            # The queue's entries stay on disk for a later round; new alerts still go out.
            log.warning(
                "alerts %s: retry queue drain failed: %s: %s", self.name, type(exc).__name__, exc
            )
            return 0
        self._unreported.update(summary.dropped)
        return summary.delivered

    def _blocked(self, now: float) -> bool:
        return now < self._blocked_until

    def _take_unreported(self) -> dict[str, int]:
        reported = {reason: n for reason, n in self._unreported.items() if n}
        self._unreported.clear()
        if reported:
            self.drops.update(reported)
            log.warning(
                "alerts %s: dropped %s since the last report",
                self.name,
                ", ".join(f"{n} {reason}" for reason, n in sorted(reported.items())),
            )
        return reported

    def _summary_text(self, reported: Mapping[str, int]) -> str:
        total = sum(reported.values())
        details = ", ".join(
            f"{'queue ' if reason in DROP_REASONS else ''}{reason}={n}"
            for reason, n in sorted(reported.items())
        )
        return f"{self.name}: {total} alert(s) dropped since the last report ({details})"

    async def _send(self, text: str) -> bool:
        result = await self.sender.send(text)
        if result.ok:
            return True
        if result.retry_after_seconds is not None:
            until = anyio.current_time() + result.retry_after_seconds
            self._blocked_until = max(self._blocked_until, until)
            # The queue is drained on the first round after the block lifts.
            self._next_retry_at = min(self._next_retry_at, self._blocked_until)
        log.warning("alerts %s: send failed: %s", self.name, result.error)
        return False

    async def _deliver_queued(self, entry: QueuedEntry) -> bool:
        if self._round_failed or self._blocked(anyio.current_time()):
            return False
        payload = entry.payload
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            log.warning("alerts %s: skipping a queued entry without text", self.name)
            return True  # nothing to send, ever: retrying would only cycle it until too_old
        if await self._send(text):
            return True
        self._round_failed = True
        return False

    async def _enqueue(self, texts: list[str]) -> None:
        try:
            await self.queue.append_many([{"text": text} for text in texts])
        except (OSError, ValueError, TypeError) as exc:
            self._unreported[DROP_QUEUE_ERROR] += len(texts)
            log.warning(
                "alerts %s: could not queue %d alert(s): %s: %s",
                self.name,
                len(texts),
                type(exc).__name__,
                exc,
            )

    def __repr__(self) -> str:
        return f"<AlertDispatcher {self.name!r} to {self.sender.destination}>"


async def serve_alerts(
    handler: AlertHandler,
    sender: AlertSender,
    *,
    queue: RetryQueue,
    throttle: TokenBucket | None = None,
    interval_seconds: float = 2.0,
    retry_interval_seconds: float = 30.0,
    name: str = "megatrio",
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run an :class:`AlertDispatcher` as a supervised child; see :meth:`AlertDispatcher.serve`.

    The sender is closed when this returns or is cancelled.
    """
    dispatcher = AlertDispatcher(
        handler,
        sender,
        queue=queue,
        throttle=throttle,
        interval_seconds=interval_seconds,
        retry_interval_seconds=retry_interval_seconds,
        name=name,
    )
    try:
        await dispatcher.serve(task_status=task_status)
    finally:
        await sender.aclose()
