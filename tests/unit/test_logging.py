"""configure_logging: one redacting handler, JSON or console, supervision path on records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
import trio

import megatrio
from megatrio import ChildSpec, LogFormat, configure_logging

pytestmark = pytest.mark.anyio


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_root")
async def test_records_carry_the_supervision_path_and_library_logs_flow_through() -> None:
    stream = io.StringIO()
    configure_logging(fmt=LogFormat.JSON, stream=stream)

    async def child(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        logging.getLogger("somelib").warning("from a library", extra={"user": "bob"})
        structlog.get_logger("app").info("structured", api_key="k-123", n=1)

    async with megatrio.mega_runtime(name="root") as rt:
        await rt.start_child(ChildSpec("worker", child, restart=megatrio.Restart.TEMPORARY))
        await trio.testing.wait_all_tasks_blocked()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    lib = next(r for r in records if r["event"] == "from a library")
    assert lib["task"] == "root/worker"
    assert lib["logger"] == "somelib"
    assert lib["level"] == "warning"
    assert lib["user"] == "bob"
    assert lib["timestamp"].endswith("Z")
    structured = next(r for r in records if r["event"] == "structured")
    assert structured["api_key"] == "[REDACTED]"
    assert structured["task"] == "root/worker"
    assert structured["n"] == 1


@pytest.mark.usefixtures("restore_root")
def test_auto_format_is_json_off_a_terminal_and_readable_on_one() -> None:
    pipe, tty = io.StringIO(), TTY()
    configure_logging(fmt=LogFormat.AUTO, stream=pipe)
    logging.getLogger("t").info("hello %s", "there")
    configure_logging(fmt=LogFormat.AUTO, stream=tty)  # replaces the previous handler
    logging.getLogger("t").info("hello %s", "there")
    assert json.loads(pipe.getvalue())["event"] == "hello there"
    line = tty.getvalue()
    assert "hello there" in line
    assert "[info" in line
    assert not line.startswith("{")
    assert sum(h.get_name() == "megatrio" for h in logging.getLogger().handlers) == 1


@pytest.mark.usefixtures("restore_root")
def test_tracebacks_are_redacted_in_both_formats() -> None:
    for fmt in (LogFormat.JSON, LogFormat.CONSOLE):
        stream = io.StringIO()
        configure_logging(fmt=fmt, stream=stream, redact_keys=["session"])
        try:
            raise RuntimeError("login failed: password=hunter2 session=abc")
        except RuntimeError:
            logging.getLogger("t").exception("request failed")
        text = stream.getvalue()
        assert "RuntimeError: login failed: password=[REDACTED] session=[REDACTED]" in text
        assert "hunter2" not in text


@pytest.mark.usefixtures("restore_root")
async def test_a_crash_report_carries_its_traceback_once_redacted() -> None:
    stream = io.StringIO()
    configure_logging(fmt=LogFormat.JSON, stream=stream)
    crashed = False

    async def child(*, task_status: trio.TaskStatus[None]) -> None:
        nonlocal crashed
        task_status.started()
        if not crashed:
            crashed = True
            raise RuntimeError("connect failed: password=hunter2")
        await trio.sleep_forever()

    async with megatrio.mega_runtime(name="root") as rt:
        await rt.start_child(ChildSpec("worker", child))
        await trio.testing.wait_all_tasks_blocked()
    [record] = [json.loads(line) for line in stream.getvalue().splitlines() if "crashed" in line]
    assert record["event"].startswith("child root/worker crashed after 0.000 s: RuntimeError")
    assert record["event"].endswith("password=[REDACTED]")
    traceback = record["exception"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert traceback.count("RuntimeError: connect failed: password=[REDACTED]") == 1
    assert "in child" in traceback  # the child's own frame is there
    assert "^^^" not in traceback  # formatted without column markers (the cheap path)
    assert "hunter2" not in stream.getvalue()
