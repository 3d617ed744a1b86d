"""An OTP supervisor as the contract states it: sequential, every start and stop instantaneous.

This is the reference the property machines compare megatrio with. It is written from the
contract, not from megatrio's code: plain lists, a restart window that never forgets
(:class:`~tests.property.strategies.ReferenceWindow`), restarts due at ``now + backoff`` and
launched, one at a time, in child order. A nested supervisor is a child whose incarnation is
another :class:`OtpModel`: its giving up is that child's crash.

Errors are strings (``"Type: message"``) built the same way by the simulated children, so
the model and the system under test can be compared exactly.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from megatrio import Backoff, Restart, Strategy
from tests.property.strategies import ReferenceWindow


class ErrorTexts:
    """How the errors the model predicts read (``describe()`` of the real exception)."""

    def start(self, name: str, launch: int) -> str:
        return f"StartFailure: {name}@{launch}"

    def stop(self, name: str, launch: int) -> str:
        return f"StopFailure: {name}@{launch}"

    def gave_up(self, name: str, launch: int, inner: SupervisorConfig) -> str:
        return f"GaveUp: {name}@{launch}"

    def inner_startup(self, name: str, launch: int, child: str, error: str) -> str:
        return f"InnerStartupFailed: {name}@{launch}"


@dataclass(frozen=True)
class SupervisorConfig:
    strategy: Strategy
    max_restarts: int
    period_seconds: float
    min_uptime_seconds: float | None
    backoff: Backoff
    children: tuple[tuple[str, Restart], ...]
    nested: SupervisorConfig | None = None
    """The configuration of the child named ``n`` (a nested supervisor), if any."""


@dataclass
class Arms:
    """What the test armed, shared by the model and the simulated children (by path)."""

    fail_starts: dict[tuple[str, ...], int] = field(default_factory=dict)
    raise_on_stop: set[tuple[str, ...]] = field(default_factory=set)


@dataclass(eq=False)
class ChildModel:
    name: str
    restart: Restart
    order: int
    state: str = "starting"
    restarts: int = 0
    launches: int = 0
    started_at: float | None = None
    last_error: str | None = None
    due: float | None = None
    attempt: int = 0
    nested: OtpModel | None = None


class OtpModel:
    """One supervisor run. ``status``: running, stopped, failed (gave up), startup_failed,
    cancelled (from outside)."""

    def __init__(
        self,
        config: SupervisorConfig,
        path: tuple[str, ...],
        arms: Arms,
        rngs: dict[tuple[str, ...], random.Random],
        clock: Callable[[], float],
        journal: list[tuple[str, str]],
        texts: ErrorTexts | None = None,
    ) -> None:
        self.texts = texts if texts is not None else ErrorTexts()
        self.config = config
        self.path = path
        self.arms = arms
        self.rngs = rngs
        self.rng = rngs[path]
        """This supervisor's jitter source: the same across its runs, like a Supervisor's."""
        self.clock = clock
        self.journal = journal
        """Shared by a supervisor and the ones nested in it: ("start"|"stop", path)."""
        self.orders = itertools.count()
        self.status = "starting"
        self.children: list[ChildModel] = []
        self.total_restarts = 0
        self.window = ReferenceWindow(
            config.max_restarts, config.period_seconds, config.min_uptime_seconds
        )
        self.gave_up_by: str | None = None
        self.startup_failure: tuple[str, str] | None = None

    @property
    def now(self) -> float:
        return self.clock()

    # -- queries ---------------------------------------------------------------------------

    def child(self, name: str) -> ChildModel:
        (found,) = [c for c in self.children if c.name == name]
        return found

    def names(self, state: str | None = None) -> list[str]:
        return [c.name for c in self.children if state is None or c.state == state]

    def next_due(self) -> float | None:
        dues = [c.due for c in self.children if c.state == "restarting" and c.due is not None]
        nested = [
            d
            for c in self.children
            if c.nested is not None and c.state == "running"
            for d in [c.nested.next_due()]
            if d is not None
        ]
        every = dues + nested
        return min(every) if every else None

    # -- events ----------------------------------------------------------------------------

    def begin(self) -> None:
        """Start the initial children in order; the first failure fails the run (children
        never launched are not shown)."""
        for name, restart in self.config.children:
            child = ChildModel(name, restart, next(self.orders))
            self.children.append(child)
            error = self._launch(child)
            if error is not None:
                self.children.remove(child)
                self.startup_failure = (child.name, error)
                self._finish("startup_failed")
                return
        self.status = "running"

    def crash(self, name: str, error: str | None) -> None:
        """Running child *name* exits on its own: crashes with *error*, or returns (None)."""
        child = self.child(name)
        assert child.state == "running", child
        assert child.started_at is not None
        uptime = self.now - child.started_at
        child.state = "exited"
        child.started_at = None
        child.nested = None
        if error is not None:
            child.last_error = error
        if child.restart is Restart.TEMPORARY:
            self.children.remove(child)
            return
        if child.restart is Restart.TRANSIENT and error is None:
            return
        self._crashed(child, uptime, error)
        self._serve()

    def start_child(self, name: str, restart: Restart) -> str | None:
        """Add and start *name*; returns None, or the start error (then it is not added)."""
        assert self.status == "running"
        child = ChildModel(name, restart, next(self.orders))
        self.children.append(child)
        error = self._launch(child)
        if error is not None:
            self.children.remove(child)
        return error

    def stop_child(self, name: str) -> None:
        child = self.child(name)
        self._stop(child)
        self.children.remove(child)

    def stop(self) -> None:
        if self.status == "running":
            self._finish("stopped")

    def advance(self) -> None:
        """Time has moved: nested supervisors first, then this one's due restarts."""
        for child in list(self.children):
            inner = child.nested
            if inner is None or child.state != "running":
                continue
            inner.advance()
            if inner.status == "failed":
                self.crash(child.name, self._gave_up(child))
        self._serve()

    def inner_crash(self, name: str, inner_name: str, error: str | None) -> None:
        """Child *inner_name* of the nested supervisor *name* exits on its own."""
        child = self.child(name)
        assert child.nested is not None
        child.nested.crash(inner_name, error)
        if child.nested.status == "failed":
            self.crash(name, self._gave_up(child))

    def cancel(self) -> None:
        """Cancelled from outside: every child is exited at once; nothing is decided."""
        self.status = "cancelled"
        for child in self.children:
            if child.nested is not None:
                child.nested.cancel()
            child.state = "exited"
            child.started_at = None
            child.due = None

    def _gave_up(self, child: ChildModel) -> str:
        assert self.config.nested is not None
        return self.texts.gave_up(child.name, child.launches, self.config.nested)

    # -- rules -----------------------------------------------------------------------------

    def _launch(self, child: ChildModel) -> str | None:
        """Start one incarnation now; returns the start error, if it failed."""
        if child.launches:
            child.restarts += 1
            self.total_restarts += 1
        child.launches += 1
        child.due = None
        key = (*self.path, child.name)
        if self.arms.fail_starts.get(key, 0) > 0:
            self.arms.fail_starts[key] -= 1
            error = self.texts.start(child.name, child.launches)
            child.state = "exited"
            child.last_error = error
            return error
        if child.name == "n" and self.config.nested is not None:
            inner = OtpModel(
                self.config.nested,
                key,
                self.arms,
                self.rngs,
                self.clock,
                self.journal,
                self.texts,
            )
            inner.begin()
            if inner.status == "startup_failed":
                assert inner.startup_failure is not None
                error = self.texts.inner_startup(child.name, child.launches, *inner.startup_failure)
                child.state = "exited"
                child.last_error = error
                return error
            child.nested = inner
        child.state = "running"
        child.started_at = self.now
        self.journal.append(("start", "/".join(key)))
        return None

    def _stop(self, child: ChildModel) -> None:
        if child.state == "running":
            key = (*self.path, child.name)
            if child.nested is not None:
                child.nested.stop()
            self.journal.append(("stop", "/".join(key)))
            if key in self.arms.raise_on_stop:
                self.arms.raise_on_stop.discard(key)
                child.last_error = self.texts.stop(child.name, child.launches)
        child.state = "exited"
        child.started_at = None
        child.due = None

    def _finish(self, status: str) -> None:
        self.status = status
        for child in reversed(self.children):
            self._stop(child)

    def _affected(self, child: ChildModel) -> list[ChildModel]:
        if self.config.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if self.config.strategy is Strategy.ONE_FOR_ALL:
            return list(self.children)
        return self.children[self.children.index(child) :]

    def _crashed(self, child: ChildModel, uptime: float, error: str | None) -> None:
        if not self.window.allow_restart(self.now, uptime):
            self.gave_up_by = child.name
            self._finish("failed")
            return
        affected = self._affected(child)
        siblings = [s for s in affected if s is not child]
        for sibling in reversed(siblings):
            self._stop(sibling)
        for sibling in siblings:
            if sibling.restart is Restart.TEMPORARY:
                self.children.remove(sibling)
        backoff = self.config.backoff
        attempt = backoff.attempt_after(child.attempt, uptime)
        delay = backoff.delay_seconds(attempt, self.rng.random())
        child.attempt = attempt + 1
        due = self.now + delay
        for member in affected:
            if member in self.children:
                member.state = "restarting"
                member.due = due

    def _serve(self) -> None:
        """Launch every due restart, lowest child order first; a failed one is a crash."""
        while self.status == "running":
            due = [
                c
                for c in self.children
                if c.state == "restarting" and c.due is not None and c.due <= self.now
            ]
            if not due:
                return
            child = min(due, key=lambda c: c.order)
            error = self._launch(child)
            if error is not None:
                self._crashed(child, 0.0, error)


def by_parent(journal: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """A start/stop journal of ``(what, path)`` split per supervisor: only the order of each
    supervisor's own children is defined when supervisors run concurrently."""
    split: dict[str, list[tuple[str, str]]] = {}
    for what, path in journal:
        split.setdefault(path.rpartition("/")[0], []).append((what, path))
    return split
