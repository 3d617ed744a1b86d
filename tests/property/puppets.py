"""Puppet children and the thread they run in, shared by the supervisor state machines.

A :class:`PuppetTree` runs a trio loop in a blocking portal's thread with a ``MockClock`` whose
autojump is off: time only moves when the test jumps it. Children are :func:`puppet`
incarnations: each reports ready, records when (``trio.current_time()``), registers in the
:class:`Controller`, then waits for a command (crash: raise; exit: return) or for its stop
request. Between steps the test lets the tree settle (every task blocked).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio.abc
import trio
import trio.testing
from anyio.from_thread import start_blocking_portal

import megatrio
from megatrio import ChildSpec, Restart, Supervisor
from tests.helpers import settle, walk_tasks


class PuppetCrash(Exception):
    """What a puppet raises when told to crash."""


class PuppetStartFailure(Exception):
    """What a puppet raises, before reporting ready, when its start was armed to fail."""


class StartFailure(Exception):
    """What a puppet raises, before reporting ready, when its path was armed to fail."""


class StopFailure(Exception):
    """What a puppet raises while being stopped, when its path was armed to."""


@dataclass(eq=False)
class Incarnation:
    name: str
    serial: int
    launch: int = 0
    """How many incarnations of this name were launched, this one included."""
    started_at: float = math.nan
    """``trio.current_time()`` when it reported ready: the start its uptime counts from."""
    command: str | None = None
    commanded: trio.Event = field(default_factory=trio.Event)

    @property
    def crash_message(self) -> str:
        """``str()`` of the :class:`PuppetCrash` it raises when told to crash."""
        return f"{self.name}#{self.serial}"


@dataclass
class Controller:
    """Shared between the puppets (in the portal's thread) and the test (between steps)."""

    live: dict[str, Incarnation] = field(default_factory=dict)
    """The incarnation of each child that has reported ready and not exited yet."""
    running: set[int] = field(default_factory=set)
    """Serials of every incarnation whose task has not finished (leak detection)."""
    fail_starts: dict[str, int] = field(default_factory=dict)
    """How many of a child's next starts fail before reporting ready."""
    serials: itertools.count[int] = field(default_factory=itertools.count)
    journal: list[tuple[str, str]] = field(default_factory=list)
    """("start", path) when an incarnation reports ready, ("stop", path) when one ends
    because its supervisor stopped it; crashes and exits are the test's own doing."""
    launches: Counter[str] = field(default_factory=Counter)
    gates: dict[str, trio.Event] = field(default_factory=dict)
    """The next incarnation of a name waits for its gate before it reports ready."""
    fail_paths: dict[tuple[str, ...], int] = field(default_factory=dict)
    """How many of the next starts of a child (by supervision path) fail."""
    raise_on_stop: dict[tuple[str, ...], str] = field(default_factory=dict)
    """Children (by path) that raise StopFailure when next stopped: ``"bare"``, or
    ``"grouped"`` (from a task of their own task group, with the stop's Cancelled)."""


def start_failure_message(name: str) -> str:
    return f"{name} failed to start"


async def puppet(
    name: str, controller: Controller, *, task_status: anyio.abc.TaskStatus[int]
) -> None:
    serial = next(controller.serials)
    controller.launches[name] += 1
    launch = controller.launches[name]
    ctx = megatrio.current_child()
    assert ctx is task_status
    path = ctx.path
    gate = controller.gates.pop(name, None)
    if gate is not None:
        await gate.wait()
    if controller.fail_starts.get(name, 0) > 0:
        controller.fail_starts[name] -= 1
        raise PuppetStartFailure(start_failure_message(name))
    if controller.fail_paths.get(path, 0) > 0:
        controller.fail_paths[path] -= 1
        raise StartFailure(f"{name}@{launch}")
    me = Incarnation(name, serial, launch)
    controller.running.add(serial)

    def armed(kind: str) -> bool:
        if ctx.stopping and controller.raise_on_stop.get(path) == kind:
            del controller.raise_on_stop[path]
            return True
        return False

    try:
        task_status.started(serial)
        me.started_at = trio.current_time()
        controller.live[name] = me
        controller.journal.append(("start", "/".join(path)))
        try:
            async with trio.open_nursery() as nursery:

                async def until(event_wait: Any) -> None:
                    await event_wait()
                    nursery.cancel_scope.cancel()

                async def raise_grouped_when_stopped() -> None:
                    try:
                        await trio.sleep_forever()
                    finally:
                        if armed("grouped"):
                            raise StopFailure(f"{name}@{launch}")

                nursery.start_soon(until, me.commanded.wait)
                nursery.start_soon(until, ctx.wait_stopping)
                nursery.start_soon(raise_grouped_when_stopped)
        except BaseException:
            if armed("bare"):
                raise StopFailure(f"{name}@{launch}") from None
            raise
        if armed("bare"):
            raise StopFailure(f"{name}@{launch}")
    finally:
        if ctx.stopping and not math.isnan(me.started_at):
            controller.journal.append(("stop", "/".join(path)))
        controller.running.discard(serial)
        if controller.live.get(name) is me:
            del controller.live[name]
    if me.command == "crash":
        raise PuppetCrash(me.crash_message)
    # "exit", or asked to stop: return normally.


async def task_names() -> Counter[str]:
    me = trio.lowlevel.current_task()
    return Counter(task.name for task in walk_tasks() if task is not me)


class PuppetTree:
    """The portal thread, its manual clock and the puppets' controller.

    Use as a context manager, or call :meth:`close` (with ``ok=False`` after a failure, so
    that a stuck tree is cancelled instead of hanging the portal's exit).
    """

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()  # autojump disabled: time moves on jumps only
        self.controller = Controller()
        self._stack = ExitStack()
        self.portal = self._stack.enter_context(
            start_blocking_portal(backend="trio", backend_options={"clock": self.clock})
        )
        self.baseline_tasks = self.call(task_names)

    def __enter__(self) -> PuppetTree:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.assert_no_leftovers()
        self.close(ok=exc is None)

    def call(self, func: Any, *args: Any) -> Any:
        return self.portal.call(func, *args)

    def settle(self) -> None:
        self.call(settle)

    def jump(self, seconds: float) -> None:
        """Move the clock (due timers fire), then settle."""
        self.call(self.clock.jump, seconds)
        self.settle()

    def now(self) -> float:
        return float(self.call(trio.current_time))

    def spec(
        self, name: str, restart: Restart = Restart.PERMANENT, shutdown: float = 5.0
    ) -> ChildSpec:
        return ChildSpec(
            name, puppet, args=(name, self.controller), restart=restart, shutdown_seconds=shutdown
        )

    def start_run(self, sup: Supervisor) -> Future[None]:
        """Start ``sup.run()`` in the portal; returns once it reported started and settled."""
        future, _ = self.portal.start_task(sup.run, name="supervisor-run")
        self.settle()
        return future

    def start_cancellable_run(self, sup: Supervisor) -> tuple[Future[None], trio.CancelScope]:
        """Start ``sup.run()`` under a cancel scope the test can cancel from outside; the
        future ends with run()'s error, or None (returned, or cancelled from outside). The
        run may fail before it reports started (a failed initial start)."""
        scope = trio.CancelScope()
        ready = trio.Event()

        async def run() -> None:
            class Status:
                def started(self, value: object = None) -> None:
                    ready.set()

            try:
                with scope:
                    await sup.run(task_status=Status())  # type: ignore[arg-type]
            finally:
                ready.set()

        future = self.portal.start_task_soon(run, name="supervisor-run")
        self.call(ready.wait)
        self.settle()
        return future, scope

    def command(self, name: str, command: str) -> Incarnation:
        """Tell the live incarnation of *name* to ``"crash"`` or ``"exit"``; then settle."""
        incarnation = self.controller.live[name]

        async def send() -> None:
            incarnation.command = command
            incarnation.commanded.set()
            await settle()

        self.call(send)
        return incarnation

    def assert_no_leftovers(self) -> None:
        assert not self.controller.running, "an incarnation outlived its supervisor"
        assert self.call(task_names) == self.baseline_tasks, "tasks left running"

    def teardown(self, final_checks: Callable[[], None]) -> None:
        """A state machine's teardown: *final_checks*, then nothing may be left running; close
        the portal either way (cancelling whatever is left when a check failed)."""
        ok = False
        try:
            final_checks()
            self.assert_no_leftovers()
            ok = True
        finally:
            self.close(ok=ok)

    def close(self, *, ok: bool) -> None:
        try:
            if not ok:
                # Do not let a stuck tree hang the portal's exit: cancel everything left.
                self.portal.call(self.portal.stop, True)
        finally:
            self._stack.close()
