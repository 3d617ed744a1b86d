"""Alerts: the throttle, the redacting handler, the dispatcher, and the HTTP senders.

Timing logic runs under trio's autojump clock with a scripted in-memory sender. The HTTP
senders run against a real HTTP/1.1 server on 127.0.0.1 (never the network) that records every
request and can answer 429 with ``Retry-After``, 500, or hang; those tests use the real clock.
"""

from __future__ import annotations

import collections
import email.utils
import io
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.abc
import pytest
import structlog
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import megatrio
from megatrio import ChildSpec, LogFormat, Redactor, configure_logging
from megatrio._policy._throttle import TokenBucket
from megatrio.services.alerts._alert import SendResult, truncate
from megatrio.services.alerts._dispatcher import AlertDispatcher, serve_alerts
from megatrio.services.alerts._handler import AlertHandler
from megatrio.services.alerts._senders import TelegramSender, WebhookSender
from megatrio.services.stores._retry_queue import RetryQueue

from ..http_peer import HANG, open_fake_api

pytestmark = pytest.mark.anyio

TOKEN = "123456789:AAH-secret_bot-token-value"


# -- the throttle -----------------------------------------------------------------------------


def test_bucket_allows_a_burst_then_the_refill_rate() -> None:
    bucket = TokenBucket.per_period(3, 60.0)  # one token every 20 s
    assert [bucket.try_acquire(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.seconds_until_available(0.0) == pytest.approx(20.0)
    assert not bucket.try_acquire(19.9)
    assert bucket.try_acquire(20.0)
    assert bucket.denied == 2
    assert bucket.tokens(1000.0) == 3.0  # never more than the capacity


def test_bucket_ignores_a_clock_that_steps_back() -> None:
    bucket = TokenBucket(capacity=1, rate_per_second=1.0)
    assert bucket.try_acquire(100.0)
    assert not bucket.try_acquire(50.0)
    assert not bucket.try_acquire(100.5)
    assert bucket.try_acquire(101.0)


def test_bucket_validates() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TokenBucket(capacity=0, rate_per_second=1)
    with pytest.raises(ValueError, match="period_seconds"):
        TokenBucket.per_period(1, 0)
    with pytest.raises(ValueError, match="NaN"):
        TokenBucket(capacity=1, rate_per_second=1).try_acquire(math.nan)
    assert TokenBucket(capacity=1, rate_per_second=0).seconds_until_available(0) == 0
    empty = TokenBucket(capacity=1, rate_per_second=0)
    empty.try_acquire(0)
    assert empty.seconds_until_available(5) == math.inf


@given(
    capacity=st.integers(1, 10),
    rate=st.floats(0, 5),
    steps=st.lists(st.floats(0, 10, allow_nan=False), max_size=60),
)
def test_bucket_never_admits_more_than_capacity_plus_refill(
    capacity: int, rate: float, steps: list[float]
) -> None:
    bucket = TokenBucket(capacity=capacity, rate_per_second=rate)
    now, admitted = 0.0, []
    for step in steps:
        now += step
        if bucket.try_acquire(now):
            admitted.append(now)
    # Over every window [admitted[i], admitted[j]] the bucket admits at most its capacity plus
    # what refills during the window.
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= capacity + rate * (admitted[j] - start) + 1e-6
    assert bucket.denied == len(steps) - len(admitted)


# -- the handler ------------------------------------------------------------------------------


@pytest.fixture
def app_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.alerts.app")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.handlers.clear()
    logger.propagate = True


def test_handler_takes_errors_only_redacted(app_log: logging.Logger) -> None:
    handler = AlertHandler()
    app_log.addHandler(handler)
    app_log.warning("just a warning")
    app_log.error("db down password=%s", "hunter2", extra={"api_key": "sk-live-123"})
    try:
        raise ConnectionError("Authorization: Bearer abcdefghijklmnop")
    except ConnectionError:
        app_log.exception("crashed")
    alerts, drops = handler.take()
    assert drops == {}
    assert [a.level for a in alerts] == ["error", "error"]
    assert all(a.logger == "tests.alerts.app" for a in alerts)
    text = "\n".join(a.text for a in alerts)
    assert "db down password=[REDACTED]" in text
    assert "api_key=[REDACTED]" in text
    assert "Traceback" in text
    for secret in ("hunter2", "sk-live-123", "abcdefghijklmnop"):
        assert secret not in text
    assert handler.take() == ([], {})


def test_handler_renders_structlog_events_like_the_logs(app_log: logging.Logger) -> None:
    handler = AlertHandler(redactor=Redactor(["dsn"]), fmt=LogFormat.JSON)
    app_log.addHandler(handler)
    structlog.configure(
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    try:
        structlog.get_logger(app_log.name).error("query failed", dsn="postgres://u:p@h/db", n=3)
    finally:
        structlog.reset_defaults()
    [alert] = handler.take()[0]
    assert json.loads(alert.text) == {"event": "query failed", "dsn": "[REDACTED]", "n": 3}


def test_handler_bounds_its_buffer_and_counts_drops(app_log: logging.Logger) -> None:
    handler = AlertHandler(max_buffered=2, max_text_chars=100)
    app_log.addHandler(handler)
    for i in range(5):
        app_log.error("failure %d %s", i, "x" * 500)
    alerts, drops = handler.take()
    assert ["failure 0 " in a.text for a in alerts] == [True, False]
    assert "failure 1 " in alerts[1].text
    assert all(len(a.text) == 100 and a.text.endswith("[truncated]") for a in alerts)
    assert drops == {"buffer_full": 3}
    assert handler.take() == ([], {})


def test_handler_never_raises_and_ignores_the_alert_path() -> None:
    handler = AlertHandler()
    bad = logging.LogRecord("app", logging.ERROR, __file__, 1, "%d", ("not a number",), None)
    handler.handle(bad)
    for name in ("megatrio.alerts", "megatrio.retry_queue", "megatrio.retry_queue.sub"):
        record = logging.LogRecord(name, logging.ERROR, __file__, 1, "loop", None, None)
        handler.handle(record)
    other = logging.LogRecord("megatrio.alertsx", logging.ERROR, __file__, 1, "ok", None, None)
    handler.handle(other)
    alerts, drops = handler.take()
    assert drops == {"format_error": 1}
    assert [a.logger for a in alerts] == ["megatrio.alertsx"]


def test_truncate() -> None:
    assert truncate("short", 10) == "short"
    cut = truncate("y" * 100, 20)
    assert len(cut) == 20
    assert cut.startswith("yyyyyy")


# -- the dispatcher, with a scripted sender and the autojump clock --------------------------


@dataclass
class ScriptedSender:
    """An AlertSender whose results the test scripts; records when each send happened."""

    script: collections.deque[SendResult | str] = field(default_factory=collections.deque)
    sent: list[tuple[float, str]] = field(default_factory=list)
    closed: bool = False
    hanging: trio.Event = field(default_factory=trio.Event)

    @property
    def destination(self) -> str:
        return "scripted"

    async def send(self, text: str) -> SendResult:
        self.sent.append((trio.current_time(), text))
        result = self.script.popleft() if self.script else SendResult(ok=True, status=200)
        if result == "hang":
            self.hanging.set()
            await trio.sleep_forever()
        assert isinstance(result, SendResult)
        return result

    async def aclose(self) -> None:
        self.closed = True

    def texts(self) -> list[str]:
        return [text for _, text in self.sent]


FAIL = SendResult(ok=False, status=500, error="HTTP 500 from scripted")


def retry_after(seconds: float) -> SendResult:
    return SendResult(ok=False, status=429, retry_after_seconds=seconds, error="HTTP 429")


@pytest.fixture
def handler(app_log: logging.Logger) -> AlertHandler:
    handler = AlertHandler(fmt=LogFormat.JSON)
    app_log.addHandler(handler)
    return handler


def make_dispatcher(
    handler: AlertHandler, sender: ScriptedSender, tmp_path: Path, **kwargs: Any
) -> AlertDispatcher:
    kwargs.setdefault("throttle", TokenBucket(capacity=100, rate_per_second=100))
    kwargs.setdefault("interval_seconds", 1.0)
    kwargs.setdefault("retry_interval_seconds", 10.0)
    return AlertDispatcher(
        handler, sender, queue=RetryQueue(tmp_path / "alerts"), name="svc", **kwargs
    )


def events(sender: ScriptedSender) -> list[str]:
    return [json.loads(t)["event"] if t.startswith("{") else t for t in sender.texts()]


async def test_a_round_sends_buffered_alerts_in_order(
    handler: AlertHandler, app_log: logging.Logger, tmp_path: Path
) -> None:
    sender = ScriptedSender()
    dispatcher = make_dispatcher(handler, sender, tmp_path)
    for i in range(3):
        app_log.error("e%d", i)
    report = await dispatcher.dispatch()
    assert (report.sent, report.queued, report.retried, report.dropped) == (3, 0, 0, {})
    assert events(sender) == ["e0", "e1", "e2"]
    assert await dispatcher.dispatch() == type(report)()


async def test_the_throttle_drops_and_a_summary_reports_it(
    handler: AlertHandler,
    app_log: logging.Logger,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = ScriptedSender()
    dispatcher = make_dispatcher(handler, sender, tmp_path, throttle=TokenBucket.per_period(3, 60))
    for i in range(10):
        app_log.error("storm %d", i)
    with caplog.at_level(logging.WARNING, logger="megatrio.alerts"):
        report = await dispatcher.dispatch()
    assert report.dropped == {"throttled": 7}
    assert events(sender) == [
        "storm 0",
        "storm 1",
        "storm 2",
        "svc: 7 alert(s) dropped since the last report (throttled=7)",
    ]
    assert "alerts svc: dropped 7 throttled since the last report" in caplog.text
    # 20 s later one token is back; the counts start again from zero.
    await trio.sleep(20)
    app_log.error("later 1")
    app_log.error("later 2")
    report = await dispatcher.dispatch()
    assert report.dropped == {"throttled": 1}
    assert events(sender)[-2:] == [
        "later 1",
        "svc: 1 alert(s) dropped since the last report (throttled=1)",
    ]
    assert dispatcher.drops == {"throttled": 8}


async def test_buffer_and_queue_drops_are_reported_too(
    app_log: logging.Logger, tmp_path: Path
) -> None:
    handler = AlertHandler(max_buffered=1, fmt=LogFormat.JSON)
    app_log.addHandler(handler)
    sender = ScriptedSender()
    dispatcher = make_dispatcher(handler, sender, tmp_path)
    dispatcher.queue = RetryQueue(tmp_path / "small", max_entries=1)
    await dispatcher.queue.append_many([{"text": "old 1"}, {"text": "old 2"}])
    app_log.error("kept")
    app_log.error("lost")
    report = await dispatcher.dispatch()
    assert report.dropped == {"buffer_full": 1, "too_many": 1}
    assert events(sender) == [
        "old 2",
        "kept",
        "svc: 2 alert(s) dropped since the last report (buffer_full=1, queue too_many=1)",
    ]
    assert report.retried == 1


async def test_a_failed_send_queues_the_rest_of_the_round_and_retries_later(
    handler: AlertHandler, app_log: logging.Logger, tmp_path: Path
) -> None:
    sender = ScriptedSender(script=collections.deque([FAIL]))
    dispatcher = make_dispatcher(handler, sender, tmp_path, retry_interval_seconds=10)
    for i in range(3):
        app_log.error("a%d", i)
    start = trio.current_time()
    report = await dispatcher.dispatch()
    # One attempt, not three: the destination is failing.
    assert (report.sent, report.queued) == (0, 3)
    assert events(sender) == ["a0"]
    assert await dispatcher.queue.count_pending() == 3
    await trio.sleep(5)
    assert (await dispatcher.dispatch()).retried == 0  # the retry interval has not passed
    await trio.sleep_until(start + 10)
    report = await dispatcher.dispatch()
    assert report.retried == 3
    assert events(sender) == ["a0", "a0", "a1", "a2"]
    assert await dispatcher.queue.count_pending() == 0


async def test_retry_after_blocks_every_send_until_it_passes(
    handler: AlertHandler, app_log: logging.Logger, tmp_path: Path
) -> None:
    # Rounds are driven by hand: the retry queue's file I/O runs in threads, and an autojump
    # clock would jump to any other task's deadline while a round waits for one.
    sender = ScriptedSender(script=collections.deque([retry_after(30)]))
    dispatcher = make_dispatcher(handler, sender, tmp_path, retry_interval_seconds=100)
    start = trio.current_time()
    app_log.error("first")
    assert (await dispatcher.dispatch()).queued == 1
    assert dispatcher.blocked_until == start + 30
    for i in range(10):
        await trio.sleep(4)
        app_log.error("round %d", i)
        report = await dispatcher.dispatch()
        if trio.current_time() < start + 30:
            assert (report.sent, report.queued, report.retried) == (0, 1, 0)
    # The queue is drained on the first round after the block (not after the 100 s retry
    # interval), oldest first; that round's new alert follows, later ones go out at once.
    assert [at for at, _ in sender.sent] == [start] + [start + 32] * 9 + [start + 36, start + 40]
    assert events(sender) == ["first", "first"] + [f"round {i}" for i in range(10)]
    assert await dispatcher.queue.count_pending() == 0


async def test_a_cancelled_round_queues_what_it_had_not_sent(
    handler: AlertHandler, app_log: logging.Logger, tmp_path: Path
) -> None:
    sender = ScriptedSender(script=collections.deque(["hang"]))
    dispatcher = make_dispatcher(handler, sender, tmp_path)
    for i in range(3):
        app_log.error("c%d", i)
    # Cancelled explicitly, not by a deadline: with the autojump clock a deadline would fire
    # while the round waits for a file operation in a worker thread.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher.dispatch)
        await sender.hanging.wait()
        nursery.cancel_scope.cancel()
    # The interrupted send may or may not have arrived: it is queued too (at-least-once).
    assert await dispatcher.queue.count_pending() == 3
    await trio.sleep(10)
    report = await dispatcher.dispatch()
    assert report.retried == 3
    assert events(sender) == ["c0", "c0", "c1", "c2"]


async def test_queued_entries_without_text_are_skipped(
    handler: AlertHandler, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sender = ScriptedSender()
    dispatcher = make_dispatcher(handler, sender, tmp_path)
    await dispatcher.queue.append_many(["not a dict", {"text": 5}, {"text": "fine"}])
    with caplog.at_level(logging.WARNING, logger="megatrio.alerts"):
        report = await dispatcher.dispatch()
    assert report.retried == 3
    assert sender.texts() == ["fine"]
    assert caplog.text.count("without text") == 2


async def test_serve_alerts_as_a_supervised_child_flushes_on_stop(
    app_log: logging.Logger, tmp_path: Path
) -> None:
    handler = AlertHandler(fmt=LogFormat.JSON)
    app_log.addHandler(handler)
    sender = ScriptedSender()
    queue = RetryQueue(tmp_path / "q")
    # No deadlines at all (infinite grace): with the autojump clock, any deadline would be
    # reached while the last round waits for a file operation in a worker thread.
    async with megatrio.mega_runtime(name="root", grace_seconds=math.inf) as rt:
        await rt.start_child(
            ChildSpec(
                "alerts",
                serve_with(handler, sender, queue, interval_seconds=60),
                shutdown_seconds=math.inf,
            )
        )
        app_log.error("during shutdown")
    # The interval is a minute, but stopping ran one last round.
    assert events(sender) == ["during shutdown"]
    assert sender.closed


# -- the HTTP senders, against a real local server --------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Everything logged, at DEBUG, through megatrio's redacting JSON handler."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(level=logging.DEBUG, fmt=LogFormat.JSON, stream=stream)
    yield stream
    root.handlers = handlers
    root.setLevel(level)
    structlog.reset_defaults()


class TestOverHttp:
    """Real sockets: these tests run on the real clock."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "trio"

    async def test_telegram_posts_send_message(self) -> None:
        async with open_fake_api() as api, TelegramSender(TOKEN, 42, base_url=api.url) as tg:
            result = await tg.send("disk full")
        assert result == SendResult(ok=True, status=200)
        [request] = api.requests
        assert (request.method, request.target) == ("POST", f"/bot{TOKEN}/sendMessage")
        assert request.headers["content-type"] == "application/json"
        assert request.json() == {
            "chat_id": 42,
            "text": "disk full",
            "disable_web_page_preview": True,
        }
        assert TOKEN not in repr(tg) + tg.destination

    async def test_telegram_text_is_cut_to_its_limit(self) -> None:
        async with open_fake_api() as api, TelegramSender(TOKEN, 1, base_url=api.url) as tg:
            await tg.send("z" * 5000)
        assert len(api.requests[0].json()["text"]) == 4096

    async def test_retry_after_is_read_from_header_or_telegram_body(self) -> None:
        later = email.utils.formatdate(time.time() + 120, usegmt=True)
        body = b'{"ok":false,"error_code":429,"parameters":{"retry_after":7}}'
        async with open_fake_api() as api, TelegramSender(TOKEN, 1, base_url=api.url) as tg:
            api.script.extend(
                [
                    (429, {"retry-after": "3"}, b"{}"),
                    (429, {"retry-after": "3"}, body),
                    (503, {"retry-after": later}, b""),
                    (429, {"retry-after": "99999"}, b""),
                    (500, {"retry-after": "3"}, b""),
                    (429, {"retry-after": "soon"}, b""),
                ]
            )
            results = [await tg.send("x") for _ in range(6)]
        assert [r.status for r in results] == [429, 429, 503, 429, 500, 429]
        assert not any(r.ok for r in results)
        after = [r.retry_after_seconds for r in results]
        assert after[0] == 3
        assert after[1] == 7
        assert after[2] == pytest.approx(120, abs=3)
        assert after[3] == 3600  # capped at max_retry_after_seconds
        assert after[4] is None  # only 429 and 503 ask us to wait
        assert after[5] is None
        assert all(TOKEN not in (r.error or "") for r in results)

    async def test_a_hanging_server_times_out_without_leaking_the_token(self) -> None:
        async with open_fake_api() as api:
            api.script.append(HANG)
            async with TelegramSender(TOKEN, 1, base_url=api.url, timeout_seconds=0.3) as tg:
                start = trio.current_time()
                result = await tg.send("x")
                elapsed = trio.current_time() - start
        assert not result.ok
        assert result.status is None
        assert 0.25 < elapsed < 2
        assert result.error is not None
        assert TOKEN not in result.error

    async def test_connection_errors_are_results_without_the_token(self) -> None:
        async with open_fake_api() as api:
            url = api.url
        async with TelegramSender(TOKEN, 1, base_url=url, timeout_seconds=2) as tg:
            result = await tg.send("x")
        assert not result.ok
        assert result.error is not None
        assert result.error.startswith("ConnectError posting to telegram chat 1 via http://")
        assert TOKEN not in result.error

    async def test_the_token_never_reaches_the_logs(self, log_stream: io.StringIO) -> None:
        async with open_fake_api() as api:
            api.script.extend([(429, {"retry-after": "1"}, b""), HANG])
            async with TelegramSender(TOKEN, 1, base_url=api.url, timeout_seconds=0.3) as tg:
                for _ in range(3):
                    await tg.send("x")
        output = log_stream.getvalue()
        assert "HTTP Request: POST" in output  # httpx did log its request lines...
        assert "/bot[REDACTED]/sendMessage" in output  # ...with the token masked
        assert TOKEN not in output
        assert TOKEN.split(":")[1] not in output
        assert logging.getLogger("httpx").filters == []  # removed on close

    async def test_webhook_posts_json_and_hides_its_path(self, log_stream: io.StringIO) -> None:
        async with open_fake_api() as api:
            url = f"{api.url}/hooks/T000/B000/XXXXSECRETXXXX"
            async with WebhookSender(url, extra={"channel": "#ops"}) as hook:
                result = await hook.send("cpu hot")
                assert hook.destination == f"webhook http://127.0.0.1:{api.port}/…"
        assert result.ok
        [request] = api.requests
        assert request.target == "/hooks/T000/B000/XXXXSECRETXXXX"
        assert request.json() == {"channel": "#ops", "text": "cpu hot"}
        assert "XXXXSECRETXXXX" not in log_stream.getvalue()

    async def test_sender_arguments_are_validated(self) -> None:
        with pytest.raises(ValueError, match="bot_token"):
            TelegramSender("a/b", 1)
        with pytest.raises(ValueError, match="absolute http"):
            WebhookSender("ftp://example.invalid/x")
        with pytest.raises(ValueError, match="timeout_seconds"):
            TelegramSender(TOKEN, 1, timeout_seconds=0)

    async def test_end_to_end_redacted_throttled_retried(
        self, app_log: logging.Logger, tmp_path: Path, log_stream: io.StringIO
    ) -> None:
        handler = AlertHandler()
        app_log.addHandler(handler)
        queue = RetryQueue(tmp_path / "q")
        async with open_fake_api() as api:
            api.script.extend([(429, {"retry-after": "1"}, b""), (500, {}, b"")])
            async with trio.open_nursery() as nursery:
                sender = TelegramSender(TOKEN, 7, base_url=api.url, timeout_seconds=1)
                await nursery.start(
                    serve_with(
                        handler,
                        sender,
                        queue,
                        throttle=TokenBucket.per_period(2, 60),
                        interval_seconds=0.05,
                        retry_interval_seconds=0.2,
                    )
                )
                app_log.error("payment failed password=%s", "hunter2")
                app_log.error("second")
                app_log.error("third (throttled)")
                with trio.fail_after(10):
                    await api.wait_for_requests(5)
                nursery.cancel_scope.cancel()
        texts = [r.json()["text"] for r in api.requests]
        # 429 on the first send: it and the rest of the round are queued. No request at all
        # until Retry-After has passed; then the drain meets a 500 and waits for the next
        # retry; then everything arrives, oldest first, exactly once.
        assert api.requests[1].at - api.requests[0].at >= 1.0
        assert "payment failed password=[REDACTED]" in texts[0]
        assert "hunter2" not in "".join(texts)
        delivered = texts[2:]
        assert len(delivered) == 3
        assert "payment failed" in delivered[0]
        assert "second" in delivered[1]
        assert delivered[2] == "megatrio: 1 alert(s) dropped since the last report (throttled=1)"
        assert TOKEN not in log_stream.getvalue()


def serve_with(
    handler: AlertHandler, sender: Any, queue: RetryQueue, **kwargs: Any
) -> Callable[..., Awaitable[None]]:
    """``serve_alerts`` bound to its arguments: a child target taking only task_status."""

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        await serve_alerts(handler, sender, queue=queue, task_status=task_status, **kwargs)

    return run


async def test_the_dispatchers_metrics_count_sends_throttle_drops_and_the_queue(
    handler: AlertHandler, app_log: logging.Logger, tmp_path: Path
) -> None:
    sender = ScriptedSender(
        script=collections.deque([SendResult(ok=True, status=200)] * 2 + [FAIL])
    )
    dispatcher = make_dispatcher(handler, sender, tmp_path, throttle=TokenBucket.per_period(4, 60))
    dispatcher.queue = RetryQueue(tmp_path / "small", max_entries=2)

    def values() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {s.key(): s.value for s in dispatcher.samples()}

    assert values() == {("megatrio_alerts_sent", ()): 0.0}  # no depth before a first count
    for i in range(6):
        app_log.error("storm %d", i)
    await dispatcher.dispatch()
    # 4 pass the throttle, 2 are dropped; 2 sent, the third fails: it, the fourth and the
    # drop summary go to the queue, which keeps only 2 of them at its next drain.
    found = values()
    assert found[("megatrio_alerts_sent", ())] == 2
    assert found[("megatrio_alerts_dropped", (("reason", "throttled"),))] == 2
    assert found[("megatrio_retry_queue_depth", (("queue", "alerts"),))] == 3
    await trio.sleep(10)
    await dispatcher.dispatch()
    found = values()
    assert found[("megatrio_retry_queue_drops", (("queue", "alerts"), ("reason", "too_many")))] == 1
    assert found[("megatrio_alerts_sent", ())] == 2 + 2 + 1  # the queued two and a summary
    assert found[("megatrio_retry_queue_depth", (("queue", "alerts"),))] == 0
