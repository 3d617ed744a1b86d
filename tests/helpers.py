"""Test helpers: controllable children and task-tree inspection.

:class:`Puppet` is the child for tests that run in the trio loop and drive one named object;
``tests/property/puppets.py`` builds on the same inspection helpers for the state machines,
whose puppets run in a portal thread and are driven by name through a shared controller.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import trio

import megatrio


class Boom(Exception):
    """The error test children crash with."""


class Puppet:
    """A child target whose incarnations the test drives: crash, exit or hang on command.

    Records the order of starts and stops in a shared *journal* so tests can check ordering.
    """

    def __init__(self, name: str, journal: list[str], *, fail_start: int = 0) -> None:
        self.name = name
        self.journal = journal
        self.starts = 0
        self.fail_start = fail_start
        self.alive = 0
        self._command: anyio.Event | None = None
        self._action = ""
        self.ignore_stop = False

    def spec(self, **kwargs: Any) -> megatrio.ChildSpec:
        return megatrio.ChildSpec(self.name, self, **kwargs)

    async def __call__(self, *, task_status: anyio.abc.TaskStatus[Any]) -> None:
        self.starts += 1
        if self.fail_start:
            self.fail_start -= 1
            self.journal.append(f"fail-start {self.name}")
            raise Boom(f"{self.name} failed to start")
        self.alive += 1
        try:
            self._command = anyio.Event()
            self.journal.append(f"start {self.name}")
            task_status.started(self.name)
            ctx = megatrio.current_child()
            assert ctx is not None
            async with anyio.create_task_group() as tg:

                async def watch_stop() -> None:
                    await ctx.wait_stopping()
                    if not self.ignore_stop:
                        tg.cancel_scope.cancel()

                tg.start_soon(watch_stop)
                assert self._command is not None
                await self._command.wait()
                tg.cancel_scope.cancel()
            if ctx.stopping and not self._action:
                self.journal.append(f"stop {self.name}")
                return
            action, self._action = self._action, ""
            if action == "crash":
                self.journal.append(f"crash {self.name}")
                raise Boom(f"{self.name} crashed")
            self.journal.append(f"exit {self.name}")
        except anyio.get_cancelled_exc_class():
            self.journal.append(f"cancelled {self.name}")
            raise
        finally:
            self.alive -= 1

    def crash(self) -> None:
        self._act("crash")

    def exit(self) -> None:
        self._act("exit")

    def _act(self, action: str) -> None:
        assert self._command is not None, f"{self.name} is not running"
        self._action = action
        self._command.set()


def walk_tasks(task: trio.lowlevel.Task | None = None) -> Iterator[trio.lowlevel.Task]:
    """Every task in the trio run (depth first)."""
    root = task if task is not None else trio.lowlevel.current_root_task()
    assert root is not None
    yield root
    for nursery in root.child_nurseries:
        for child in nursery.child_tasks:
            yield from walk_tasks(child)


def task_names(prefix: str) -> list[str]:
    """Names of live trio tasks whose name starts with *prefix* (children are named by path)."""
    return [t.name for t in walk_tasks() if t.name.startswith(prefix)]


async def settle() -> None:
    """Let every runnable task run until all are blocked (trio only)."""
    await trio.testing.wait_all_tasks_blocked()
