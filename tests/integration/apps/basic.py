"""Fixture app for the CLI tests."""

from __future__ import annotations

import logging
import os

import trio
from quart import request

import megatrio

log = logging.getLogger("basic")


class Basic(megatrio.App):
    name = "basic"

    def setup(self) -> None:
        self.get("/")(self.index)
        self.get("/slow")(self.slow)
        self.get("/fail")(self.fail)
        self.get("/pid")(self.pid)
        self.get("/cached")(self.cached)
        self.add_child(megatrio.ChildSpec("worker", self.worker, shutdown_seconds=10))

    async def index(self) -> dict[str, str]:
        return {"app": self.name}

    async def slow(self) -> str:
        log.info("slow request started")
        await trio.sleep(float(request.args.get("seconds", "1.5")))
        return "slow done"

    async def pid(self) -> str:
        return str(os.getpid())

    async def cached(self) -> str:
        cache = self.cache()
        await cache.set("greeting", "hello from the default cache")
        value: str = await cache.get("greeting")
        return value

    async def fail(self) -> str:
        raise RuntimeError("db login failed: password=hunter2 header Bearer abc.def.ghi")

    async def worker(self, *, task_status: trio.TaskStatus[None]) -> None:
        ctx = megatrio.current_child()
        assert ctx is not None
        task_status.started()
        await ctx.wait_stopping()
        await trio.sleep(float(self.stop_delay))
        print("worker stopped", flush=True)

    stop_delay = 0.0

    async def on_start(self, rt: megatrio.Runtime) -> None:
        print("on_start", flush=True)

    async def on_stop(self, rt: megatrio.Runtime) -> None:
        print("on_stop", flush=True)


class SlowStop(Basic):
    """Its worker takes 1.5 s to stop: /readyz can be observed during a stop."""

    stop_delay = 1.5


not_an_app = 42


def create_app() -> Basic:
    """A --factory target."""
    return Basic()


def create_nothing() -> int:
    """A --factory target that returns no App."""
    return 42
