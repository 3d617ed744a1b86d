"""mega_runtime(): graceful stop, LIFO resources, fatal errors — on trio and on asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest
import trio

import megatrio
from megatrio import ChildSpec, Restart, RestartIntensityExceeded, mega_runtime

from ..helpers import Boom

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def child(name: str, journal: list[str], *, fail_after: bool = False) -> ChildSpec:
    async def target(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = megatrio.current_child()
        assert ctx is not None
        journal.append(f"start {name}")
        task_status.started()
        if fail_after:
            await anyio.lowlevel.checkpoint()
            raise Boom(f"{name} crashed")
        await ctx.wait_stopping()
        journal.append(f"stop {name}")

    return ChildSpec(name, target)


@contextlib.asynccontextmanager
async def resource(name: str, journal: list[str]) -> AsyncIterator[str]:
    journal.append(f"open {name}")
    try:
        yield name
    finally:
        await anyio.lowlevel.checkpoint()
        journal.append(f"close {name}")


def fatal_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "megatrio.runtime" and r.levelname == "CRITICAL"]


async def test_leaving_the_block_stops_children_in_reverse_then_resources_lifo() -> None:
    journal: list[str] = []
    async with mega_runtime(grace_seconds=5) as rt:
        assert await rt.enter_async_context(resource("db", journal)) == "db"

        async def flush(tag: str) -> None:
            journal.append(f"callback {tag}")

        rt.push_async_callback(flush, "x")
        await rt.start_child(child("a", journal))
        await rt.start_child(child("b", journal))
    assert journal == [
        "open db",
        "start a",
        "start b",
        "stop b",
        "stop a",
        "callback x",
        "close db",
    ]
    assert rt.snapshot()["state"] == "stopped"


async def test_stop_cancels_the_body_which_exits_normally() -> None:
    journal: list[str] = []
    reached_end = False
    async with mega_runtime() as rt:
        await rt.start_child(child("a", journal))

        async def stopper(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            await anyio.lowlevel.checkpoint()
            rt.stop()
            await anyio.sleep_forever()

        await rt.start_child(ChildSpec("stopper", stopper, shutdown_seconds=0))
        await anyio.sleep_forever()
        reached_end = True  # never: the body is cancelled
    assert not reached_end
    assert rt.stopping
    assert journal == ["start a", "stop a"]


async def test_body_exception_is_fatal_logged_once_and_reraised_bare(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    with pytest.raises(Boom, match="body failed"):
        async with mega_runtime() as rt:
            await rt.enter_async_context(resource("pool", journal))
            await rt.start_child(child("a", journal))
            raise Boom("body failed")
    assert journal == ["open pool", "start a", "stop a", "close pool"]
    [record] = fatal_records(caplog)
    assert "fatal error: Boom: body failed" in record.getMessage()
    assert record.exc_info is not None


async def test_root_giving_up_is_fatal_with_the_last_error_as_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    with pytest.raises(RestartIntensityExceeded) as info:
        async with mega_runtime(max_restarts=2, period_seconds=60) as rt:
            await rt.start_child(child("steady", journal))
            await rt.start_child(child("crashy", journal, fail_after=True))
            await anyio.sleep_forever()
    assert isinstance(info.value.__cause__, Boom)
    assert journal.count("start crashy") == 3
    assert journal[-1] == "stop steady"
    assert len(fatal_records(caplog)) == 1


async def test_a_temporary_child_crash_is_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    async with mega_runtime(max_restarts=0) as rt:
        spec = child("once", journal, fail_after=True)
        await rt.start_child(ChildSpec(spec.name, spec.target, restart=Restart.TEMPORARY))
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        assert rt.snapshot()["children"] == []
    assert "child megatrio/once crashed" in caplog.text
    assert fatal_records(caplog) == []


async def test_start_child_after_stop_is_refused() -> None:
    async with mega_runtime() as rt:
        pass
    with pytest.raises(megatrio.SupervisorNotRunning):
        await rt.start_child(child("late", []))


async def test_invalid_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="grace_seconds must be >= 0"):
        async with mega_runtime(grace_seconds=-1):
            pass
    with pytest.raises(ValueError, match="period_seconds must be > 0"):
        async with mega_runtime(period_seconds=0):
            pass


def test_runs_under_plain_trio_run_and_asyncio_run() -> None:
    async def main() -> list[str]:
        journal: list[str] = []
        async with mega_runtime(name="embedded") as rt:
            await rt.start_child(child("a", journal))
            assert rt.snapshot()["children"][0]["state"] == "running"
        return journal

    assert trio.run(main) == ["start a", "stop a"]
    assert asyncio.run(main()) == ["start a", "stop a"]


def test_handle_signals_refuses_other_threads() -> None:
    async def main() -> None:
        async with mega_runtime(handle_signals=True):
            pass

    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            errors.append(exc)

    import threading

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    [error] = errors
    assert isinstance(error, RuntimeError)
    assert "main thread" in str(error)


def test_runtime_has_no_public_constructor() -> None:
    args: Any = ("x", 1.0, megatrio.Supervisor())
    with pytest.raises(TypeError, match="no public constructor"):
        megatrio.Runtime(*args)


@contextlib.asynccontextmanager
async def pool(journal: list[str]) -> AsyncIterator[str]:
    """A resource owning a task group, like a connection pool."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep_forever)
        journal.append("pool open")
        yield "pool"
        journal.append("pool closing")
        tg.cancel_scope.cancel()


async def test_a_resource_owning_a_task_group_outlives_the_body_until_children_stop() -> None:
    journal: list[str] = []

    async def user(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = megatrio.current_child()
        assert ctx is not None
        task_status.started()
        await ctx.wait_stopping()
        journal.append("child still uses the pool while stopping")

    async with mega_runtime() as rt:
        assert await rt.enter_async_context(pool(journal)) == "pool"
        await rt.start_child(ChildSpec("user", user))
    assert journal == ["pool open", "child still uses the pool while stopping", "pool closing"]


async def test_resource_errors_on_enter_raise_and_on_exit_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @contextlib.asynccontextmanager
    async def broken_enter() -> AsyncIterator[None]:
        raise Boom("cannot connect")
        yield  # pragma: no cover

    @contextlib.asynccontextmanager
    async def broken_exit() -> AsyncIterator[None]:
        yield
        raise Boom("cannot flush")

    async with mega_runtime() as rt:
        with pytest.raises(Boom, match="cannot connect"):
            await rt.enter_async_context(broken_enter())
        await rt.enter_async_context(broken_exit())
    assert "closing a runtime resource failed" in caplog.text
    assert "Boom: cannot flush" in caplog.text
