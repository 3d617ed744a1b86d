"""RetryQueue under a Hypothesis state machine, with real drainer processes on the same files.

Rules append entries, move the wall clock, drain in this process (deliveries that succeed,
return False or raise; drains cancelled midway), drain in two worker processes at once, append
in one process while another drains, kill a worker in the middle of a drain (SIGKILL, right
after a delivery completed but before the drain recorded it), and write corrupt lines.

After every step the files on disk are read with a naive reference reader and checked:

- every appended entry is delivered exactly once, or still pending (an unhandled line on
  disk), or dropped — and the drops reported by all drains add up exactly to the entries that
  are neither delivered nor pending (plus the corrupt lines consumed);
- an entry is delivered more than once only after a drainer was killed right after
  delivering it, before recording it (the documented at-least-once window), and then once
  more per such kill at most;
- a drain in this process does exactly what the reference predicts from the files: too-old
  entries first, then only the newest ``max_entries``, delivered oldest first, with the drop
  counts by reason; drains in the workers never handle more than ``max_entries`` and never
  deliver a too-old entry.

The workers are long-lived subprocesses shared by all examples; a killed one is replaced by a
spare that was started earlier, so no step waits for a process to start.
"""

from __future__ import annotations

import collections
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from megatrio.services.stores._retry_queue import QUEUE_FILE, DrainSummary, QueuedEntry, RetryQueue

ROOT = Path(__file__).resolve().parents[2]
STEP = 0.001  # distinct enqueue times for distinct appends: "newest" is never a tie

# Which deliveries fail, by position in enqueue order (cyclic). Mostly successes.
masks = st.lists(st.sampled_from([False, False, True]), min_size=1, max_size=6)

WORKER = r"""
import json, sys, types

# Import only the module under test: an empty package object stands in for megatrio's
# __init__, which would import the whole runtime (most of a second per worker start).
package = types.ModuleType("megatrio")
package.__path__ = [sys.argv[1]]
sys.modules["megatrio"] = package

import trio
from megatrio.services.stores._retry_queue import RetryQueue

def say(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()

async def drain(cmd):
    queue = RetryQueue(
        cmd["dir"], max_entries=cmd["max_entries"], max_age_seconds=cmd["max_age"],
        clock=lambda: cmd["now"],
    )
    fail, hang_after, delivered = set(cmd["fail"]), cmd["hang_after"], []

    async def deliver(entry):
        if entry.id in fail:
            return False
        delivered.append(entry.id)
        # Reported (flushed) before deliver returns: to the model this entry has arrived.
        say({"event": "delivered", "id": entry.id, "ts": entry.enqueued_at})
        if hang_after is not None and len(delivered) > hang_after:
            say({"event": "hung", "id": entry.id})
            await trio.sleep_forever()
        return True

    summary = await queue.drain(deliver)
    say({"event": "done", "requeued": summary.requeued, "dropped": dict(summary.dropped)})

async def append(cmd):
    times = iter(cmd["times"])
    queue = RetryQueue(cmd["dir"], clock=lambda: next(times))
    ids = [await queue.append(payload) for payload in cmd["payloads"]]
    say({"event": "appended", "ids": ids})

say({"event": "ready"})
for line in sys.stdin:
    cmd = json.loads(line)
    trio.run(drain if cmd["op"] == "drain" else append, cmd)
"""


class Worker:
    """A long-lived python process running :data:`WORKER`: JSON commands in, events out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(ROOT / "megatrio")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        self._buffer = b""
        self._ready = False

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    def event(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            readable, _, _ = select.select([fd], [], [], timeout)
            assert readable, f"worker {self.proc.pid} said nothing for {timeout} s"
            chunk = os.read(fd, 65536)
            assert chunk, f"worker {self.proc.pid} exited with {self.proc.wait()}"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        event: dict[str, Any] = json.loads(line)
        if event["event"] == "ready":
            self._ready = True
            return self.event(timeout)
        return event

    def events_until(self, *kinds: str) -> list[dict[str, Any]]:
        events = []
        while True:
            events.append(self.event())
            if events[-1]["event"] in kinds:
                return events

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()  # reaped: a zombie would still look alive to the pid check

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Workers:
    """Two workers in use and a spare that starts while the others work."""

    def __init__(self) -> None:
        self.pool = [Worker(), Worker()]
        self.spare = Worker()

    def replace(self, index: int) -> None:
        self.pool[index].kill()
        self.pool[index].close()
        self.pool[index], self.spare = self.spare, Worker()

    def close(self) -> None:
        for worker in [*self.pool, self.spare]:
            worker.close()


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    pool = Workers()
    yield pool
    pool.close()


# -- the reference reader ---------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    id: str
    ts: float
    handled: bool


@dataclass
class Disk:
    lines: list[Line]
    """Every well-formed line, in the order a drain claims them: claimed files by name, then
    queue.jsonl; within a file, in file order."""
    corrupt: int

    @property
    def pending(self) -> list[Line]:
        return [line for line in self.lines if not line.handled]


def read_disk(directory: Path) -> Disk:
    names = sorted(n for n in os.listdir(directory) if n.startswith("claimed-"))
    if (directory / QUEUE_FILE).exists():
        names.append(QUEUE_FILE)
    lines, corrupt = [], 0
    for name in names:
        for raw in (directory / name).read_bytes().split(b"\n")[:-1]:
            if not raw:
                continue
            try:
                obj = json.loads(raw)
                lines.append(Line(obj["id"], obj["ts"], obj["d"] == 1))
            except (ValueError, KeyError, TypeError):
                corrupt += 1
    return Disk(lines, corrupt)


# -- the machine ------------------------------------------------------------------------------


class RetryQueueMachine(RuleBasedStateMachine):
    workers: Workers
    """Set by the test on a subclass: the worker processes, shared by all examples."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="retry-queue-machine-"))
        self.now = 1_000_000.0
        self.appended: dict[str, float] = {}
        self.delivered: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        # Deliveries that a killed drainer made but never recorded, by entry: each one may be
        # repeated (at-least-once), so an entry may be delivered 1 + this many times.
        self.ambiguous: collections.Counter[str] = collections.Counter()
        self.injected_corrupt = 0
        self.kill_attempts = 0
        self.serial = 0

    @initialize(max_entries=st.integers(1, 6), max_age=st.sampled_from([5.0, 10.0, 30.0]))
    def setup(self, max_entries: int, max_age: float) -> None:
        self.max_entries = max_entries
        self.max_age = max_age

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def queue(self) -> RetryQueue:
        # A fresh object per step, as after a restart: all state is on disk.
        return RetryQueue(
            self.dir,
            max_entries=self.max_entries,
            max_age_seconds=self.max_age,
            clock=lambda: self.now,
        )

    def payloads(self, count: int) -> list[dict[str, int]]:
        self.serial += count
        return [{"n": self.serial - count + i} for i in range(count)]

    # -- rules --------------------------------------------------------------------------------

    @rule(count=st.integers(1, 6))
    def append(self, count: int) -> None:
        async def run() -> None:
            queue = self.queue()
            for payload in self.payloads(count):
                self.now += STEP
                self.appended[await queue.append(payload)] = self.now

        trio.run(run)

    @rule(dt=st.sampled_from([0.5, 2.0, 4.0, 8.0, 20.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def corrupt(self) -> None:
        with (self.dir / QUEUE_FILE).open("ab") as f:
            f.write(b"this is not an entry\n")
        self.injected_corrupt += 1

    @rule(fail_mask=masks, raise_mask=masks)
    def drain_here(self, fail_mask: list[bool], raise_mask: list[bool]) -> None:
        disk = read_disk(self.dir)
        fail = self.failures(fail_mask, disk)
        raise_for = fail & self.failures(raise_mask, disk)
        expected = self.predict(disk, fail)
        got: list[str] = []

        async def deliver(entry: QueuedEntry) -> bool:
            if entry.id in raise_for:
                raise RuntimeError("delivery failed")
            if entry.id in fail:
                return False
            got.append(entry.id)
            return True

        summary = trio.run(self.queue().drain, deliver)
        note(f"drain here: {summary}")
        assert got == expected.delivered, "not the newest entries, oldest first"
        assert summary.requeued == expected.requeued
        assert dict(summary.dropped) == expected.dropped
        self.record(got, summary.dropped)

    @rule(cancel_at=st.integers(0, 4))
    def drain_cancelled(self, cancel_at: int) -> None:
        got: list[str] = []
        summaries: list[DrainSummary] = []

        async def run() -> None:
            with trio.CancelScope() as scope:

                async def deliver(entry: QueuedEntry) -> bool:
                    if len(got) == cancel_at:
                        scope.cancel()
                        await trio.lowlevel.checkpoint()
                    got.append(entry.id)
                    return True

                summaries.append(await self.queue().drain(deliver))

        trio.run(run)
        # A cancelled drain reports no drops (its successor will); one that had fewer
        # entries than cancel_at was not cancelled at all.
        self.record(got, summaries[0].dropped if summaries else {})

    # Preconditions use only what the rules drew, never the files: concurrent drains make the
    # files differ between runs of the same steps, and Hypothesis must see the same choices.
    @precondition(lambda self: self.appended)
    @rule(masks=st.lists(masks, min_size=2, max_size=2))
    def drain_in_two_processes(self, masks: list[list[bool]]) -> None:
        disk = read_disk(self.dir)
        commands = [self.drain_command(self.failures(mask, disk)) for mask in masks]
        for worker, command in zip(self.workers.pool, commands, strict=True):
            worker.send(command)
        busy = 0
        for worker in self.workers.pool:
            events = worker.events_until("done")
            busy += len(events) > 1 or bool(events[-1]["requeued"] or events[-1]["dropped"])
            self.collect(events)
        event(f"two concurrent drains: {busy} handled entries")

    @rule(count=st.integers(1, 5), fail_mask=masks)
    def append_while_another_process_drains(self, count: int, fail_mask: list[bool]) -> None:
        appender, drainer = self.workers.pool
        times = [self.now + STEP * (i + 1) for i in range(count)]
        drainer.send(self.drain_command(self.failures(fail_mask, read_disk(self.dir))))
        appender.send(
            {"op": "append", "dir": str(self.dir), "times": times, "payloads": self.payloads(count)}
        )
        [appended] = appender.events_until("appended")
        self.appended.update(zip(appended["ids"], times, strict=True))
        events = drainer.events_until("done")
        self.collect(events)
        self.now = times[-1]
        raced = {e["id"] for e in events if e["event"] == "delivered"} & set(appended["ids"])
        event(f"append during drain: {'some' if raced else 'none'} delivered by that drain")

    @precondition(lambda self: self.kill_attempts < 2)
    @rule(fresh=st.integers(1, 3), hang_after=st.integers(0, 2), fail_mask=masks)
    def kill_a_drainer_midway(self, fresh: int, hang_after: int, fail_mask: list[bool]) -> None:
        self.kill_attempts += 1
        self.append(fresh)  # something for it to deliver
        worker = self.workers.pool[0]
        command = self.drain_command(self.failures(fail_mask, read_disk(self.dir)))
        command["hang_after"] = hang_after
        worker.send(command)
        events = worker.events_until("done", "hung")
        if events[-1]["event"] == "hung":
            self.workers.replace(0)
            # Delivered, but the drain died before marking it: the one entry the contract
            # allows to be delivered again.
            self.ambiguous[events[-1]["id"]] += 1
            note(f"killed a drainer after delivering {events[-1]['id']}")
        event(f"kill: {events[-1]['event']}")
        self.collect(events)

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def failures(mask: list[bool], disk: Disk) -> set[str]:
        """The pending entries whose position in enqueue order is set in *mask* (cyclically).

        Positions, not ids: ids are random, and what Hypothesis draws must not depend on them.
        """
        ordered = sorted(disk.pending, key=lambda line: (line.ts, line.id))
        return {line.id for i, line in enumerate(ordered) if mask[i % len(mask)]}

    def drain_command(self, fail: set[str]) -> dict[str, Any]:
        return {
            "op": "drain",
            "dir": str(self.dir),
            "now": self.now,
            "max_entries": self.max_entries,
            "max_age": self.max_age,
            "fail": sorted(fail),
            "hang_after": None,
        }

    def collect(self, events: list[dict[str, Any]]) -> None:
        """Record a worker drain's events and check its caps."""
        delivered = [e for e in events if e["event"] == "delivered"]
        for item in delivered:
            assert not item["ts"] < self.now - self.max_age, "a too-old entry was delivered"
        done = events[-1]
        if done["event"] == "done":
            assert len(delivered) + done["requeued"] <= self.max_entries
            self.record([e["id"] for e in delivered], done["dropped"])
        else:
            self.record([e["id"] for e in delivered], {})

    def record(self, delivered: list[str], dropped: Any) -> None:
        self.delivered.update(delivered)
        self.dropped.update(dropped)

    @dataclass
    class Prediction:
        delivered: list[str]
        requeued: int
        dropped: dict[str, int]

    def predict(self, disk: Disk, fail: set[str]) -> RetryQueueMachine.Prediction:
        cutoff = self.now - self.max_age
        ranked = sorted(
            (line.ts, position, line)
            for position, line in enumerate(disk.lines)
            if not line.ts < cutoff
        )
        kept = [line for _, _, line in ranked[max(0, len(ranked) - self.max_entries) :]]
        handle = [line for line in kept if not line.handled]
        fresh_pending = sum(1 for _, _, line in ranked if not line.handled)
        dropped = {
            "too_old": sum(1 for line in disk.pending if line.ts < cutoff),
            "too_many": fresh_pending - len(handle),
            "corrupt": disk.corrupt,
        }
        return self.Prediction(
            delivered=[line.id for line in handle if line.id not in fail],
            requeued=sum(1 for line in handle if line.id in fail),
            dropped={reason: n for reason, n in dropped.items() if n},
        )

    # -- the invariant ------------------------------------------------------------------------

    @invariant()
    def every_entry_is_delivered_once_pending_or_counted_as_dropped(self) -> None:
        disk = read_disk(self.dir)
        pending = [line.id for line in disk.pending]
        assert len(pending) == len(set(pending)), "an entry is pending twice"
        assert set(pending) <= set(self.appended)
        assert set(self.delivered) <= set(self.appended)
        for entry_id, times in self.delivered.items():
            assert times <= 1 + self.ambiguous[entry_id], (
                f"entry {entry_id} delivered {times} times"
            )
        for entry_id in pending:
            assert self.delivered[entry_id] == self.ambiguous[entry_id], (
                f"entry {entry_id} delivered and still pending"
            )
        pending_set = set(pending)
        unaccounted = [i for i in self.appended if not self.delivered[i] and i not in pending_set]
        # Delivered only by killed drainers, then dropped by the drain that took their file.
        dropped_after_delivery = [
            i for i, n in self.ambiguous.items() if i not in pending_set and self.delivered[i] == n
        ]
        corrupt_consumed = self.injected_corrupt - disk.corrupt
        assert sum(self.dropped.values()) == (
            len(unaccounted) + len(dropped_after_delivery) + corrupt_consumed
        ), f"drops {dict(self.dropped)} do not account for {len(unaccounted)} lost entries"
        assert self.dropped["corrupt"] == corrupt_consumed


def test_retry_queue_machine(workers: Workers) -> None:
    class Machine(RetryQueueMachine):
        pass

    Machine.workers = workers
    run_state_machine_as_test(
        Machine,
        # On top of the loaded profile (derandomized in CI).
        settings=settings(
            settings.default,
            max_examples=40,
            stateful_step_count=20,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
