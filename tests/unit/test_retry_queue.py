"""RetryQueue: caps and drop counting, re-queueing, corrupt lines, claims, cancellation."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import trio
import trio.testing

from megatrio.services.stores._retry_queue import (
    QUEUE_FILE,
    DrainSummary,
    QueuedEntry,
    RetryQueue,
)

pytestmark = pytest.mark.anyio


class FakeClock:
    """Wall clock for the queue: moves only when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A deliver function that records entries and fails the payloads it is told to."""

    def __init__(self, fail: set[Any] | None = None, raise_for: set[Any] | None = None) -> None:
        self.entries: list[QueuedEntry] = []
        self.fail = fail or set()
        self.raise_for = raise_for or set()

    async def __call__(self, entry: QueuedEntry) -> bool:
        await trio.lowlevel.checkpoint()
        if entry.payload in self.raise_for:
            raise RuntimeError(f"cannot deliver {entry.payload}")
        if entry.payload in self.fail:
            return False
        self.entries.append(entry)
        return True

    @property
    def payloads(self) -> list[Any]:
        return [e.payload for e in self.entries]


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def fill(queue: RetryQueue, clock: FakeClock, payloads: list[Any], step: float = 1) -> None:
    for payload in payloads:
        await queue.append(payload)
        clock.now += step


async def test_drain_delivers_oldest_first_and_removes_its_files(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = RetryQueue(tmp_path / "q", clock=clock)
    ids = [await queue.append(i) for i in range(5)]
    assert len(set(ids)) == 5
    assert await queue.count_pending() == 5
    deliver = Recorder()

    summary = await queue.drain(deliver)

    assert summary == DrainSummary(delivered=5, requeued=0, dropped={}, files=1)
    assert deliver.payloads == [0, 1, 2, 3, 4]
    assert [e.id for e in deliver.entries] == ids
    assert all(e.attempts == 0 and e.enqueued_at == clock.now for e in deliver.entries)
    assert files(tmp_path / "q") == []
    assert await queue.count_pending() == 0
    assert await queue.drain(deliver) == DrainSummary()


async def test_line_format_is_one_json_object_per_line(tmp_path: Path) -> None:
    clock = FakeClock(1234.5)
    queue = RetryQueue(tmp_path, clock=clock)
    entry_id = await queue.append({"text": "a\nb", "n": [1, 2]})
    raw = (tmp_path / QUEUE_FILE).read_bytes()
    assert raw.count(b"\n") == 1
    assert json.loads(raw) == {
        "d": 0,
        "id": entry_id,
        "ts": 1234.5,
        "n": 0,
        "p": {"text": "a\nb", "n": [1, 2]},
    }


async def test_max_age_drops_old_entries_first_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    reports: list[Mapping[str, int]] = []
    queue = RetryQueue(tmp_path, clock=clock, max_age_seconds=100, on_drops=reports.append)
    await fill(queue, clock, ["a", "b", "c"], step=50)  # enqueued at t, t+50, t+100
    clock.now += 20  # now = t+170: "a" is 170 s old, "b" 120 s, "c" 70 s
    deliver = Recorder()
    with caplog.at_level(logging.WARNING, logger="megatrio.retry_queue"):
        summary = await queue.drain(deliver)
    assert deliver.payloads == ["c"]
    assert summary.dropped == {"too_old": 2}
    assert reports == [{"too_old": 2}]
    assert queue.drops == {"too_old": 2}
    assert "dropped 2 too_old" in caplog.text


async def test_max_entries_keeps_the_newest_by_enqueue_time(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock, max_entries=2)
    await queue.append("old")

    async def fail_after_newer_arrive(entry: QueuedEntry) -> bool:
        clock.now += 1
        await fill(queue, clock, ["new1", "new2"])
        return False

    await queue.drain(fail_after_newer_arrive)
    # "old" was re-queued after the newer entries were appended: last in the file, but it
    # keeps its enqueue time, so it is still the oldest.
    assert [r["p"] for r in lines_of(tmp_path / QUEUE_FILE)] == ["new1", "new2", "old"]
    deliver = Recorder()
    summary = await queue.drain(deliver)
    assert deliver.payloads == ["new1", "new2"]
    assert summary.dropped == {"too_many": 1}
    assert summary.total_dropped == 1


async def test_both_caps_together_age_first(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock, max_entries=2, max_age_seconds=10)
    await fill(queue, clock, list(range(6)), step=3)  # ages at drain: 18, 15, 12, 9, 6, 3
    deliver = Recorder()
    summary = await queue.drain(deliver)
    assert deliver.payloads == [4, 5]
    assert summary.dropped == {"too_old": 3, "too_many": 1}


async def test_failed_deliveries_are_requeued_with_the_same_id_and_time(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock)
    await fill(queue, clock, ["ok", "no", "boom"])
    deliver = Recorder(fail={"no"}, raise_for={"boom"})
    summary = await queue.drain(deliver)
    assert summary.delivered == 1
    assert summary.requeued == 2
    assert files(tmp_path) == [QUEUE_FILE]
    requeued = lines_of(tmp_path / QUEUE_FILE)
    assert [(r["p"], r["n"], r["d"]) for r in requeued] == [("no", 1, 0), ("boom", 1, 0)]

    clock.now += 5
    again = Recorder()
    await queue.drain(again)
    assert again.payloads == ["no", "boom"]
    assert [e.attempts for e in again.entries] == [1, 1]
    originals = {r["p"]: (r["id"], r["ts"]) for r in requeued}
    assert {e.payload: (e.id, e.enqueued_at) for e in again.entries} == originals


async def test_an_entry_failing_forever_ends_as_too_old(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock, max_age_seconds=60)
    await queue.append("never")
    deliver = Recorder(fail={"never"})
    for _ in range(3):
        clock.now += 25
        await queue.drain(deliver)
    assert queue.drops == {"too_old": 1}
    assert files(tmp_path) == []


async def test_corrupt_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock, max_entry_bytes=256)
    await queue.append("first")
    path = tmp_path / QUEUE_FILE
    with path.open("ab") as f:
        f.write(b"not json\n")
        f.write(b'{"d":0,"id":"x","ts":"yesterday","n":0,"p":1}\n')  # wrong type
        f.write(b'{"id":"x","ts":1,"n":0,"p":1,"d":0}\n')  # valid JSON, mark not in place
        f.write(b"x" * 5000 + b"\n")  # over-long: skipped without being held whole
        f.write(b"\n")  # a bare newline is not an entry
        f.write(b'{"d":0,"id":"torn","ts":1')  # a writer died mid-line
    # The next append starts on a fresh line, so only the torn fragment is lost.
    await queue.append("after")
    deliver = Recorder()
    summary = await queue.drain(deliver)
    assert deliver.payloads == ["first", "after"]
    assert summary.dropped == {"corrupt": 5}


async def test_a_well_formed_header_with_a_broken_payload_is_corrupt(tmp_path: Path) -> None:
    # The scan judges lines by their header; a torn payload healed by the next append is only
    # found when the line is read for delivery. It is counted then, and its keep slot is not
    # handed to an older entry (that one is already counted as too many).
    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock, max_entries=2)
    await fill(queue, clock, ["oldest", "older"])
    with (tmp_path / QUEUE_FILE).open("ab") as f:
        f.write(b'{"d":0,"id":"%s","ts":%r,"n":0,"p":{"a":}}\n' % (b"f" * 32, clock.now))
    clock.now += 1
    await queue.append("newest")
    deliver = Recorder()
    summary = await queue.drain(deliver)
    assert deliver.payloads == ["newest"]
    assert summary.dropped == {"too_many": 2, "corrupt": 1}


async def test_a_torn_tail_at_the_end_of_the_file_is_corrupt(tmp_path: Path) -> None:
    queue = RetryQueue(tmp_path, clock=FakeClock())
    await queue.append("kept")
    with (tmp_path / QUEUE_FILE).open("ab") as f:
        f.write(b'{"d":0,"id":"torn"')
    summary = await queue.drain(Recorder())
    assert summary.delivered == 1
    assert summary.dropped == {"corrupt": 1}


async def test_append_validates(tmp_path: Path) -> None:
    queue = RetryQueue(tmp_path, clock=FakeClock(), max_entry_bytes=100)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        await queue.append({"x": object()})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        await queue.append(float("nan"))
    with pytest.raises(ValueError, match="exceeds max_entry_bytes=100"):
        await queue.append("x" * 100)
    with pytest.raises(ValueError, match="max_entries"):
        RetryQueue(tmp_path, max_entries=0)
    assert await queue.count_pending() == 0


async def test_append_many_writes_all_or_nothing(tmp_path: Path) -> None:
    queue = RetryQueue(tmp_path, clock=FakeClock())
    with pytest.raises(TypeError):
        await queue.append_many(["ok", {1, 2}])
    assert not (tmp_path / QUEUE_FILE).exists()
    ids = await queue.append_many(["a", "b"])
    assert [r["id"] for r in lines_of(tmp_path / QUEUE_FILE)] == ids


async def test_entries_appended_during_a_drain_wait_for_the_next(tmp_path: Path) -> None:
    queue = RetryQueue(tmp_path, clock=FakeClock())
    await queue.append("before")
    seen: list[Any] = []

    async def deliver(entry: QueuedEntry) -> bool:
        seen.append(entry.payload)
        await queue.append(f"during-{entry.payload}")
        return True

    await queue.drain(deliver)
    assert seen == ["before"]
    await queue.drain(deliver)
    assert seen == ["before", "during-before"]


async def test_a_cancelled_drain_loses_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock, max_entries=4)
    await fill(queue, clock, list(range(6)))  # 0 and 1 are beyond max_entries
    delivered: list[Any] = []

    with trio.CancelScope() as scope:

        async def deliver(entry: QueuedEntry) -> bool:
            if entry.payload == 4:
                scope.cancel()
                await trio.sleep_forever()
            delivered.append(entry.payload)
            return True

        await queue.drain(deliver)
    assert scope.cancelled_caught
    assert delivered == [2, 3]
    # The claimed file stays; its delivered lines are marked.
    [claimed] = files(tmp_path)
    assert claimed.startswith(f"claimed-{os.getpid()}-")
    assert [r["d"] for r in lines_of(tmp_path / claimed)] == [0, 0, 1, 1, 0, 0]
    assert queue.drops == {}  # not reported by the cancelled drain...

    deliver2 = Recorder()
    summary = await queue.drain(deliver2)
    # ...but by the drain that takes the file over, which delivers only what was left,
    # keeping the same newest-four set (delivered lines still count in the ranking).
    assert deliver2.payloads == [4, 5]
    assert summary.dropped == {"too_many": 2}
    assert files(tmp_path) == []


async def test_cancelled_while_blocked_on_the_lock_claims_nothing(tmp_path: Path) -> None:
    queue = RetryQueue(tmp_path, clock=FakeClock())
    await queue.append("x")
    release = trio.Event()

    async def slow(entry: QueuedEntry) -> bool:
        await release.wait()
        return True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.drain, slow)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await queue.drain(Recorder())
        release.set()
    assert files(tmp_path) == []


async def test_orphans_of_dead_processes_are_taken_over(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock)
    await fill(queue, clock, ["a", "b", "c"])
    # A drainer that died (a pid that cannot exist) after delivering "a".
    orphan = tmp_path / "claimed-999999999-deadbeef.jsonl"
    os.rename(tmp_path / QUEUE_FILE, orphan)
    data = bytearray(orphan.read_bytes())
    data[5:6] = b"1"
    orphan.write_bytes(bytes(data))
    await queue.append("d")
    deliver = Recorder()
    summary = await queue.drain(deliver)
    assert deliver.payloads == ["b", "c", "d"]
    assert summary.files == 2
    assert files(tmp_path) == []


async def test_live_claims_are_left_alone_until_they_go_stale(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    queue = RetryQueue(tmp_path, clock=clock, claim_timeout_seconds=600)
    await queue.append("held")
    # Claimed by a live process (our parent) that keeps writing to it.
    held = tmp_path / f"claimed-{os.getppid()}-cafe.jsonl"
    os.rename(tmp_path / QUEUE_FILE, held)
    deliver = Recorder()
    assert await queue.drain(deliver) == DrainSummary()
    assert held.exists()
    # Not written for longer than the timeout: the owner is hung, or the pid was reused.
    os.utime(held, (clock.now - 601, clock.now - 601))
    assert (await queue.drain(deliver)).delivered == 1
    assert deliver.payloads == ["held"]


async def test_two_queues_on_one_directory_never_share_an_entry(tmp_path: Path) -> None:
    clock = FakeClock()
    one = RetryQueue(tmp_path, clock=clock)
    two = RetryQueue(tmp_path, clock=clock)
    seen: list[Any] = []

    async def deliver(entry: QueuedEntry) -> bool:
        seen.append(entry.payload)
        await trio.sleep(0.01)
        return True

    async with trio.open_nursery() as nursery:

        async def produce(queue: RetryQueue, tag: str) -> None:
            for i in range(30):
                await queue.append(f"{tag}{i}")
                if i % 7 == 0:
                    nursery.start_soon(queue.drain, deliver)

        nursery.start_soon(produce, one, "a")
        nursery.start_soon(produce, two, "b")
    await one.drain(deliver)
    await two.drain(deliver)
    assert sorted(seen) == sorted([f"a{i}" for i in range(30)] + [f"b{i}" for i in range(30)])
    assert files(tmp_path) == []


def _proc_locks_waiting() -> bool:
    with open("/proc/locks") as f:
        return any("->" in line for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs /proc/locks")
async def test_an_append_racing_a_rename_lands_in_the_new_queue_file(tmp_path: Path) -> None:
    # The race the flock protocol exists for: an appender opens queue.jsonl, a drain renames
    # it before the appender writes. The appender must notice and write to the new file.
    queue = RetryQueue(tmp_path, clock=FakeClock())
    await queue.append("first")
    path = tmp_path / QUEUE_FILE
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # we are "the drain", holding the lock
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.append, "racing")

            def wait_for_blocked_appender() -> None:
                deadline = time.monotonic() + 10
                while not _proc_locks_waiting():
                    assert time.monotonic() < deadline, "the appender never blocked on flock"
                    time.sleep(0.001)

            await anyio.to_thread.run_sync(wait_for_blocked_appender)
            claimed = tmp_path / "claimed-1-race.jsonl"
            os.rename(path, claimed)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    assert [r["p"] for r in lines_of(claimed)] == ["first"]
    assert [r["p"] for r in lines_of(path)] == ["racing"]


async def test_drain_memory_is_bounded_by_max_entries_not_file_size(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock, max_entries=10)
    payload = "x" * 200
    await queue.append_many([payload] * 20_000)  # about 5 MB on disk
    assert (tmp_path / QUEUE_FILE).stat().st_size > 4_000_000
    deliver = Recorder()
    # Sampled in the thread that does the scanning, too: tracemalloc is process-wide.
    tracemalloc.start()
    try:
        summary = await queue.drain(deliver)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.delivered == 10
    assert summary.dropped == {"too_many": 19_990}
    assert peak < 2_500_000, f"peak {peak} bytes: the drain held the file in memory"


async def test_on_drops_errors_are_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(counts: Mapping[str, int]) -> None:
        raise RuntimeError("callback bug")

    clock = FakeClock()
    queue = RetryQueue(tmp_path, clock=clock, max_entries=1, on_drops=broken)
    await fill(queue, clock, [1, 2])
    with caplog.at_level(logging.WARNING, logger="megatrio.retry_queue"):
        summary = await queue.drain(Recorder())
    assert summary.dropped == {"too_many": 1}
    assert "on_drops callback failed" in caplog.text
    assert files(tmp_path) == []


async def test_delivery_errors_are_logged_below_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = RetryQueue(tmp_path, clock=FakeClock())
    await queue.append("boom")
    with caplog.at_level(logging.DEBUG, logger="megatrio.retry_queue"):
        await queue.drain(Recorder(raise_for={"boom"}))
    [record] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "RuntimeError: cannot deliver boom" in record.getMessage()


async def test_queue_objects_can_be_made_outside_the_event_loop(tmp_path: Path) -> None:
    made: list[RetryQueue] = []
    thread = threading.Thread(target=lambda: made.append(RetryQueue(tmp_path)))
    thread.start()
    thread.join()
    await made[0].append(1)
    assert (await made[0].drain(Recorder())).delivered == 1
