"""Job consumers on the embedded driver: retries, dead letters, concurrency, heartbeats and
graceful stops — every time exact under trio's autojump clock (see conftest)."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
import trio
import trio.lowlevel

import megatrio
from megatrio.services.jobs._consumer import consumer_spec
from megatrio.services.jobs._driver import Delivery, JobSettings, Settle
from megatrio.services.jobs._embedded import EmbeddedDriver
from megatrio.services.jobs._jobs import Jobs, JobSpec

pytestmark = pytest.mark.anyio


class ValidationError(Exception):
    pass


class RecordingDriver(EmbeddedDriver):
    """The embedded driver, instrumented: every fetch and settle call, and how many handlers
    were running when each fetch asked."""

    def __init__(self, running: Callable[[], int] = lambda: 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.running = running
        self.fetches: list[tuple[int, int]] = []  # (batch asked, handlers running then)
        self.settles: list[list[tuple[str, int, int, float]]] = []

    async def fetch(self, job: str, batch: int, *, timeout_seconds: float) -> list[Delivery]:
        self.fetches.append((batch, self.running()))
        return await super().fetch(job, batch, timeout_seconds=timeout_seconds)

    async def settle(self, actions: Sequence[Settle]) -> None:
        self.settles.append(
            [(a.kind, a.delivery.sequence, a.delivery.delivery, a.delay_seconds) for a in actions]
        )
        await super().settle(actions)

    def kinds(self, sequence: int) -> list[str]:
        return [kind for batch in self.settles for kind, seq, _, _ in batch if seq == sequence]

    def finals(self, sequence: int) -> list[str]:
        return [k for k in self.kinds(sequence) if k != "progress"]


@asynccontextmanager
async def consuming(
    driver: EmbeddedDriver,
    handler: Callable[[Any], Awaitable[object]],
    *,
    shutdown_seconds: float = 30.0,
    no_retry: tuple[type[Exception], ...] = (),
    **settings: Any,
) -> AsyncIterator[tuple[Jobs, megatrio.Supervisor]]:
    """A consumer of job ``work`` on *driver* under a supervisor, stopped on exit."""
    spec = JobSpec("work", handler, JobSettings("work", **settings), no_retry=no_retry)
    jobs = Jobs(driver, [spec])
    await jobs.declare()
    sup = megatrio.Supervisor(
        [consumer_spec(spec, driver, shutdown_seconds=shutdown_seconds)], name="jobs"
    )
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        try:
            yield jobs, sup
        finally:
            sup.stop()


def consumer_info(sup: megatrio.Supervisor) -> dict[str, Any]:
    [child] = sup.snapshot()["children"]
    assert child["restarts"] == 0, "a job failure must never be the consumer's crash"
    info: dict[str, Any] = child["info"]
    return info


async def test_a_failing_job_is_retried_after_the_table_delays_then_acked() -> None:
    driver = RecordingDriver()
    calls: list[float] = []

    async def handler(payload: Any) -> None:
        calls.append(trio.current_time())
        if len(calls) <= 4:
            raise RuntimeError(f"attempt {len(calls)} of {payload['n']}")

    async with consuming(driver, handler, max_deliver=6, retry_delays=(1, 5, 30)) as (jobs, sup):
        t0 = trio.current_time()
        seq = await jobs.enqueue("work", {"n": 1})
        await trio.sleep(100)
        assert driver.pending("work") == 0
        info = consumer_info(sup)
    # Each retry waits the table's entry for that delivery, the last one repeating.
    assert [round(t - t0, 6) for t in calls] == [0, 1, 6, 36, 66]
    assert driver.finals(seq) == ["nak", "nak", "nak", "nak", "ack"]
    delays = [d for batch in driver.settles for k, _, _, d in batch if k == "nak"]
    assert delays == [1, 5, 30, 30]
    assert info["acked"] == 1
    assert info["retried"] == 4
    assert info["in_flight"] == 0


async def test_poison_goes_to_the_dead_letter_queue_after_max_deliver_with_its_envelope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = RecordingDriver()

    async def poison(payload: Any) -> None:
        raise ValueError("cannot connect with password=hunter2")

    with caplog.at_level(logging.WARNING, logger="megatrio.jobs"):
        async with consuming(driver, poison, max_deliver=3, retry_delays=(1,)) as (jobs, sup):
            seq = await jobs.enqueue("work", {"to": "a@example.com"})
            await trio.sleep(10)
            info = consumer_info(sup)
    [(letter_id, letter)] = await driver.dead_letters()
    assert driver.finals(seq) == ["nak", "nak", "term"]
    assert (letter.job, letter.subject, letter.sequence) == ("work", "jobs.work", seq)
    assert (letter.deliveries, letter.reason) == (3, "max deliveries")
    assert letter.error_type == "ValueError"
    assert letter.error_message == "cannot connect with password=[REDACTED]"
    assert letter.traceback is not None
    assert "in poison" in letter.traceback
    assert "hunter2" not in letter.traceback
    assert json.loads(letter.payload) == {"to": "a@example.com"}
    assert megatrio.DeadLetter.from_json(letter.to_json()) == letter
    assert (info["dead_lettered"], info["termed"], info["retried"]) == (1, 1, 2)
    # Logged once per delivery, redacted; the last one as an error (it is lost work).
    records = [r for r in caplog.records if r.name == "megatrio.jobs"]
    assert [r.levelname for r in records] == ["WARNING", "WARNING", "ERROR"]
    assert all("hunter2" not in (r.getMessage() + (r.exc_text or "")) for r in records)
    assert await jobs.purge_dead_letters([letter_id]) == 1
    assert await jobs.dead_letters() == []


async def test_a_no_retry_error_is_dead_lettered_at_once() -> None:
    driver = RecordingDriver()

    async def handler(payload: Any) -> None:
        raise ValidationError("bad address")

    async with consuming(driver, handler, no_retry=(ValidationError,)) as (jobs, _):
        seq = await jobs.enqueue("work", "x")
        await trio.sleep(1)
    [(_, letter)] = await driver.dead_letters()
    assert (letter.reason, letter.deliveries, letter.error_type) == (
        "no retry",
        1,
        "ValidationError",
    )
    assert driver.finals(seq) == ["term"]


async def test_an_undecodable_payload_is_dead_lettered_and_the_consumer_goes_on() -> None:
    driver = RecordingDriver()
    seen: list[Any] = []

    async def handler(payload: Any) -> None:
        seen.append(payload)

    async with consuming(driver, handler) as (jobs, sup):
        bad = await driver.enqueue("work", b"\xff{not json")
        good = await jobs.enqueue("work", {"ok": True})
        await trio.sleep(1)
        info = consumer_info(sup)
    [(_, letter)] = await driver.dead_letters()
    assert (letter.reason, letter.sequence, letter.payload) == (
        "undecodable payload",
        bad,
        b"\xff{not json",
    )
    assert letter.error_type == "UnicodeDecodeError"
    assert seen == [{"ok": True}]
    assert driver.finals(good) == ["ack"]
    assert info["dead_lettered"] == 1


async def test_concurrency_is_never_exceeded_and_fetches_never_ask_beyond_free_slots() -> None:
    running = 0
    peak = 0
    driver = RecordingDriver(running=lambda: running)

    async def handler(payload: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        assert running <= 3
        try:
            await trio.sleep(1 + payload % 4)
        finally:
            running -= 1

    async with consuming(driver, handler, concurrency=3) as (jobs, _):
        for n in range(25):
            await jobs.enqueue("work", n)
        await trio.sleep(200)
        assert driver.pending("work") == 0
    assert peak == 3
    assert all(asked >= 1 and asked + busy <= 3 for asked, busy in driver.fetches)
    assert any(asked < 3 for asked, _ in driver.fetches)  # partial batches happened
    # Settles were batched: fewer calls than settles.
    assert len(driver.settles) < sum(len(b) for b in driver.settles)


async def test_a_blocked_handler_never_holds_up_the_deliveries_fetched_with_it() -> None:
    driver = RecordingDriver()
    finished: dict[int, float] = {}

    async def handler(payload: Any) -> None:
        await trio.sleep(payload)
        finished[payload] = trio.current_time()

    async with consuming(driver, handler, concurrency=4) as (jobs, sup):
        t0 = trio.current_time()
        # One fetch brings all four: the first blocks for long, the rest must not wait.
        for delay in (100, 0, 1, 2):
            await jobs.enqueue("work", delay)
        await trio.sleep(3)
        assert {d: round(t - t0, 6) for d, t in finished.items()} == {0: 0, 1: 1, 2: 2}
        # Workers are kept for the next batches: never more than the slots.
        for delay in (0, 0, 0):
            await jobs.enqueue("work", delay)
        await trio.sleep(1)
        assert consumer_info(sup)["acked"] == 6
        await trio.sleep(100)
        assert consumer_info(sup)["acked"] == 7
        # Stopped while idle, the parked workers return at once: no wait for the grace.
        t1 = trio.current_time()
        await sup.stop_child("work")
        assert trio.current_time() - t1 == 0


async def test_a_graceful_stop_finishes_or_releases_in_flight_jobs_none_lost_none_acked_twice() -> (
    None
):
    driver = RecordingDriver()
    done: Counter[int] = Counter()
    started: list[tuple[int, float]] = []

    async def handler(payload: Any) -> None:
        started.append((payload, trio.current_time()))
        await trio.sleep(payload)
        done[payload] += 1

    durations = [1, 4, 9, 50, 70]
    async with consuming(driver, handler, shutdown_seconds=10, concurrency=8) as (jobs, sup):
        seqs = {d: await jobs.enqueue("work", d) for d in durations}
        await trio.sleep(0.5)
        stopped_at = trio.current_time()
        sup.stop()
        await trio.lowlevel.checkpoint()
        # Stop fetching at once: nothing enqueued now is taken by this consumer.
        late = await jobs.enqueue("work", 2)
    assert math.isclose(trio.current_time() - stopped_at, 10)
    # Finished within the grace: acked. Unfinished at the deadline: cancelled and released.
    for d in (1, 4, 9):
        assert driver.finals(seqs[d]) == ["ack"]
    for d in (50, 70):
        assert driver.finals(seqs[d]) == ["nak"]
    assert driver.finals(late) == []
    assert driver.pending("work") == 3
    # Another consumer takes the released ones at once and finishes everything.
    restarted_at = trio.current_time()
    async with consuming(driver, handler) as _:
        await trio.sleep(100)
    again = {p: t - restarted_at for p, t in started if t >= restarted_at}
    assert again == {50: 0, 70: 0, 2: 0}
    assert done == Counter({1: 1, 4: 1, 9: 1, 50: 1, 70: 1, 2: 1})
    assert driver.pending("work") == 0
    for seq in (*seqs.values(), late):
        assert driver.finals(seq).count("ack") == 1
    assert driver.finals(seqs[50]) == ["nak", "ack"]


async def test_a_handler_ignoring_its_stop_is_cancelled_at_the_deadline_and_nakd() -> None:
    driver = RecordingDriver()
    cancelled = trio.Event()

    async def stubborn(payload: Any) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with consuming(driver, stubborn, shutdown_seconds=7) as (jobs, sup):
        seq = await jobs.enqueue("work", None)
        await trio.sleep(1)
        t = trio.current_time()
        sup.stop()
        await cancelled.wait()
        assert math.isclose(trio.current_time() - t, 7)
    [nak] = [a for batch in driver.settles for a in batch if a[0] == "nak"]
    assert nak == ("nak", seq, 1, 0.0)
    [redelivered] = await driver.fetch("work", 5, timeout_seconds=0)
    assert redelivered.delivery == 2


async def test_heartbeats_hold_a_long_delivery_until_the_cap_then_it_is_redelivered() -> None:
    driver = RecordingDriver()
    starts: list[tuple[float, int]] = []

    async def slow(payload: Any) -> None:
        starts.append((trio.current_time(), len(starts) + 1))
        await trio.sleep(payload)

    async with consuming(
        driver, slow, ack_wait_seconds=3, max_in_progress_seconds=30, concurrency=2
    ) as (jobs, _):
        t0 = trio.current_time()
        held = await jobs.enqueue("work", 24.5)  # eight ack waits, within the cap
        await trio.sleep(40)
        assert [(round(t - t0, 6), n) for t, n in starts] == [(0, 1)]
        assert driver.finals(held) == ["ack"]
        progress = driver.kinds(held).count("progress")
        assert progress == 24  # every ack_wait / 3 = 1 s, until the handler returned
        stuck = await jobs.enqueue("work", 1000)
        t1 = trio.current_time()
        await trio.sleep(40)
    # The cap allows beats up to 30 s; the last one (at 30 s) holds it 3 s more.
    assert [round(t - t1, 6) for t, _ in starts[1:]] == [0, 33]
    assert driver.kinds(stuck).count("progress") >= 10


async def test_an_ack_wait_expiring_on_the_final_delivery_dead_letters_worker_lost() -> None:
    driver = EmbeddedDriver()
    await driver.declare([JobSettings("work", max_deliver=2, ack_wait_seconds=5)])
    seq = await driver.enqueue("work", b"{}")
    [first] = await driver.fetch("work", 1, timeout_seconds=0)
    t = trio.current_time()
    # The worker is lost: no settle. After the ack wait, the message is delivered again.
    [second] = await driver.fetch("work", 1, timeout_seconds=60)
    assert (second.delivery, second.sequence) == (2, seq)
    assert math.isclose(trio.current_time() - t, 5)
    assert await driver.fetch("work", 1, timeout_seconds=60) == []
    [(_, letter)] = await driver.dead_letters()
    assert (letter.reason, letter.deliveries, letter.error_type) == ("worker lost", 2, None)
    assert driver.pending("work") == 0
    # A late ack of the lost deliveries settles nothing twice.
    await driver.settle([Settle("ack", first), Settle("ack", second)])
    assert len(await driver.dead_letters()) == 1


async def test_msg_id_deduplicates_within_its_window_and_the_window_is_bounded() -> None:
    driver = EmbeddedDriver(dedup_window_seconds=60, dedup_max_entries=2)
    await driver.declare([JobSettings("work")])
    a = await driver.enqueue("work", b"1", msg_id="a")
    assert await driver.enqueue("work", b"other", msg_id="a") == a
    assert driver.pending("work") == 1
    await trio.sleep(60)
    assert await driver.enqueue("work", b"1", msg_id="a") != a  # the window passed
    b = await driver.enqueue("work", b"2", msg_id="b")
    await driver.enqueue("work", b"3", msg_id="c")  # evicts the oldest id
    assert await driver.enqueue("work", b"3", msg_id="c") < b + 2
    assert len(driver._dedup) == 2


async def test_the_dead_letter_queue_is_bounded_and_counts_what_it_drops() -> None:
    driver = EmbeddedDriver(max_dead_letters=2)
    await driver.declare([JobSettings("work", max_deliver=1, ack_wait_seconds=1)])
    for n in range(3):
        await driver.enqueue("work", str(n).encode())
    await driver.fetch("work", 3, timeout_seconds=0)
    await driver.fetch("work", 3, timeout_seconds=2)
    assert [letter.payload for _, letter in await driver.dead_letters()] == [b"1", b"2"]
    assert driver.dead_letters_dropped == 1
    assert await driver.purge_dead_letters() == 2


async def test_fetch_waits_for_a_message_up_to_its_timeout_and_naks_wait_their_delay() -> None:
    driver = EmbeddedDriver()
    await driver.declare([JobSettings("work")])
    t = trio.current_time()
    assert await driver.fetch("work", 1, timeout_seconds=5) == []
    assert math.isclose(trio.current_time() - t, 5)

    async def later() -> None:
        await trio.sleep(1)
        await driver.enqueue("work", b"x")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        t = trio.current_time()
        [delivery] = await driver.fetch("work", 1, timeout_seconds=5)
        assert math.isclose(trio.current_time() - t, 1)
    await driver.settle([Settle("nak", delivery, 10.0)])
    t = trio.current_time()
    [again] = await driver.fetch("work", 1, timeout_seconds=60)
    assert math.isclose(trio.current_time() - t, 10)
    assert again.delivery == 2
    await driver.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await driver.enqueue("work", b"x")


async def test_enqueue_names_unknown_jobs_and_unencodable_payloads() -> None:
    async def handler(payload: Any) -> None:
        pass

    jobs = Jobs(EmbeddedDriver(), [JobSpec("email.send", handler), JobSpec("report", handler)])
    await jobs.declare()
    with pytest.raises(
        LookupError, match=r"no job 'nope' is declared \(declared: email.send, report\)"
    ):
        await jobs.enqueue("nope", {})
    with pytest.raises(TypeError, match="job 'report': payload cannot be encoded"):
        await jobs.enqueue("report", {"when": object()})
    with pytest.raises(ValueError, match="job 'report'"):
        await jobs.enqueue("report", math.nan)
    with pytest.raises(ValueError, match="settings for 'other'"):
        JobSpec("report", handler, JobSettings("other"))
    with pytest.raises(ValueError, match="declared twice"):
        Jobs(EmbeddedDriver(), [JobSpec("a", handler), JobSpec("a", handler)])


def test_a_dead_letter_traceback_is_capped_and_redacted() -> None:
    from megatrio.services.jobs._envelope import MAX_TRACEBACK_CHARS, build_dead_letter

    def recurse(n: int) -> None:
        if n == 0:
            raise KeyError("token=abc123 " + "x" * 5000)
        recurse(n - 1)

    try:
        recurse(200)
    except KeyError as exc:
        error = exc
    delivery = Delivery("work", b"p", 1, 7, None, 0.0, None)
    letter = build_dead_letter(delivery, "no retry", error)
    assert letter.traceback is not None
    assert len(letter.traceback) < MAX_TRACEBACK_CHARS + 100
    assert "frames omitted" in letter.traceback
    assert "abc123" not in letter.traceback
    assert letter.error_message is not None
    assert "abc123" not in letter.error_message
