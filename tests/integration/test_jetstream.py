"""The JetStream engine against real nats-server processes (2.9 from Debian): one private
server per test, a three-node cluster for the leader-loss test. Asyncio only: the engine is
asyncio-native (under trio it runs behind the NATS bridge)."""

from __future__ import annotations

import contextlib
import json
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import nats
import nats.js.errors
import pytest
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from megatrio.services.jobs._driver import DeadLetter, JobSettings, Settle
from megatrio.services.jobs._jetstream import JetStreamDriver, ack_reply_fields, backoff_for
from megatrio.services.stores._redis import BackendUnavailable

from ..servers import NatsServer, frozen, start_nats_cluster, wait_meta_leader

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def connect(servers: str | Sequence[str]) -> Client:
    return await nats.connect(
        servers=[servers] if isinstance(servers, str) else list(servers),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        connect_timeout=2,
    )


@contextlib.asynccontextmanager
async def open_driver(
    servers: str | Sequence[str], namespace: str = "app", **options: Any
) -> AsyncIterator[JetStreamDriver]:
    nc = await connect(servers)
    driver = JetStreamDriver(nc, namespace=namespace, **options)
    try:
        yield driver
    finally:
        with anyio.fail_after(10):
            await driver.aclose()
            await nc.close()


@contextlib.asynccontextmanager
async def advisories(driver: JetStreamDriver) -> AsyncIterator[None]:
    """run_advisories as a task of the test, subscribed before the body runs."""
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(driver.run_advisories, ready.set)
        with anyio.fail_after(5):
            await ready.wait()
        yield
        await driver.aclose()


async def wait_until(predicate: Any, within: float = 15.0, interval: float = 0.1) -> None:
    with anyio.fail_after(within):
        while True:
            if await predicate():
                return
            await anyio.sleep(interval)


def letter_for(delivery: Any, error: str = "boom") -> DeadLetter:
    return DeadLetter(
        job=delivery.job,
        subject=f"megatrio.app.jobs.{delivery.job}",
        sequence=delivery.sequence,
        deliveries=delivery.delivery,
        failed_at=time.time(),
        reason="no retry",
        error_type="ValueError",
        error_message=error,
        traceback="Traceback ...",
        payload=delivery.payload,
    )


# -- names and settings (no server) ---------------------------------------------------------


def test_backoff_is_ack_wait_plus_each_retry_delay() -> None:
    settings = JobSettings("a", max_deliver=5, retry_delays=(1.0, 5.0), ack_wait_seconds=30.0)
    # Four redeliveries; the last delay repeats, and the server repeats the last element.
    assert backoff_for(settings) == [31.0, 35.0]
    assert backoff_for(JobSettings("a", max_deliver=2, retry_delays=(1.0, 5.0))) == [31.0]
    assert backoff_for(JobSettings("a", max_deliver=1)) is None
    assert backoff_for(JobSettings("a", retry_delays=(0.0, 0.0))) is None
    many = JobSettings("a", max_deliver=4, retry_delays=(1, 2, 3, 4, 5), ack_wait_seconds=1)
    steps = backoff_for(many)
    assert steps == [2, 3, 4]
    assert len(steps) < many.max_deliver  # JetStream's rule


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.MEGATRIO_APP_JOBS.app_a.3.1042.77.1764700000123456789.5",
        "$JS.ACK._.HASH.MEGATRIO_APP_JOBS.app_a.3.1042.77.1764700000123456789.5",
        "$JS.ACK.dom.HASH.MEGATRIO_APP_JOBS.app_a.3.1042.77.1764700000123456789.5.xyz",
    ],
)
def test_delivery_fields_are_read_off_the_reply_subject_as_nats_py_reads_them(reply: str) -> None:
    msg = Msg(_client=None, subject="megatrio.app.jobs.a", reply=reply)  # type: ignore[arg-type]
    delivery, sequence, stored_at = ack_reply_fields(msg)
    meta = msg.metadata
    assert (delivery, sequence) == (meta.num_delivered, meta.sequence.stream) == (3, 1042)
    assert stored_at == pytest.approx(meta.timestamp.timestamp(), abs=1e-6)


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.1", "$JS.API.CONSUMER.1.2.3.4.5.6", "$JS.ACK.x"])
def test_a_message_that_is_no_delivery_is_refused(reply: str) -> None:
    msg = Msg(_client=None, subject="s", reply=reply)  # type: ignore[arg-type]
    with pytest.raises(nats_errors.NotJSMessageError):
        ack_reply_fields(msg)


async def test_bad_names_are_refused_by_name(nats: NatsServer) -> None:
    nc = await connect(nats.url)
    try:
        for bad in ("a.b", "a b", "a*", "", "x" * 65):
            with pytest.raises(ValueError, match="invalid jobs namespace"):
                JetStreamDriver(nc, namespace=bad)
        driver = JetStreamDriver(nc, namespace="app")
        # One check, in JobSettings: what no NATS subject, stream or consumer name allows.
        for job in ("a b", "a.*", "a.>", "a..b", "", "a/b", "a#b", "é", "x" * 129):
            with pytest.raises(ValueError, match="invalid job name"):
                JobSettings(job)
        with pytest.raises(ValueError, match="map to one consumer name 'app_a_b'"):
            await driver.declare([JobSettings("a.b"), JobSettings("a_b")])
        await driver.declare([JobSettings("email.send")])
        with pytest.raises(
            LookupError, match=r"'sms' was not declared \(declared jobs: email.send"
        ):
            await driver.enqueue("sms", b"x")
        with pytest.raises(LookupError, match="'sms'"):
            await driver.fetch("sms", 1, timeout_seconds=0.1)
    finally:
        await nc.close()


# -- declare --------------------------------------------------------------------------------


async def test_declare_is_idempotent_and_updates_the_consumer(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver:
        job = JobSettings("email.send", max_deliver=3, retry_delays=(0.5,), ack_wait_seconds=2)
        await driver.declare([job])
        await driver.declare([job])
        js = driver._nc.jetstream()
        info = await js.consumer_info("MEGATRIO_APP_JOBS", "app_email_send")
        assert info.config.max_deliver == 3
        assert info.config.backoff == [2.5]
        assert info.config.filter_subject == "megatrio.app.jobs.email.send"
        assert info.config.max_ack_pending is not None
        assert info.config.max_ack_pending >= job.concurrency
        changed = JobSettings("email.send", max_deliver=4, retry_delays=(1, 2), concurrency=2000)
        await driver.declare([changed])
        info = await js.consumer_info("MEGATRIO_APP_JOBS", "app_email_send")
        assert info.config.max_deliver == 4
        assert info.config.backoff == [31.0, 32.0]
        assert info.config.max_ack_pending == 2000
        streams = sorted(s.config.name for s in await js.streams_info())
        assert streams == ["MEGATRIO_APP_DLQ", "MEGATRIO_APP_JOBS"]
        dlq = await js.stream_info("MEGATRIO_APP_DLQ")
        assert dlq.config.max_age == 7 * 24 * 3600


async def test_two_namespaces_share_no_stream(nats: NatsServer) -> None:
    async with open_driver(nats.url, "alpha") as alpha, open_driver(nats.url, "Beta") as beta:
        await alpha.declare([JobSettings("work")])
        await beta.declare([JobSettings("work")])
        assert beta.stream == "MEGATRIO_BETA_JOBS"
        await alpha.enqueue("work", b"for alpha")
        assert await beta.fetch("work", 5, timeout_seconds=0.3) == []
        [delivery] = await alpha.fetch("work", 5, timeout_seconds=2)
        assert delivery.payload == b"for alpha"
        js = alpha._nc.jetstream()
        subjects = {s.config.name: s.config.subjects for s in await js.streams_info()}
        assert subjects["MEGATRIO_ALPHA_JOBS"] == ["megatrio.alpha.jobs.>"]
        assert subjects["MEGATRIO_BETA_JOBS"] == ["megatrio.beta.jobs.>"]


# -- enqueue, fetch, settle -----------------------------------------------------------------


async def test_round_trip_with_metadata(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver:
        await driver.declare([JobSettings("email.send")])
        before = time.time()
        seq = await driver.enqueue("email.send", b'{"to": "a@b"}', msg_id="order-1")
        with anyio.fail_after(5):
            [delivery] = await driver.fetch("email.send", 4, timeout_seconds=2)
        assert delivery.job == "email.send"
        assert delivery.payload == b'{"to": "a@b"}'
        assert (delivery.delivery, delivery.sequence, delivery.msg_id) == (1, seq, "order-1")
        assert before - 1 <= delivery.enqueued_at <= time.time() + 1
        await driver.settle([Settle("ack", delivery)])
        js = driver._nc.jetstream()

        async def gone() -> bool:
            info = await js.consumer_info(driver.stream, "app_email_send")
            state = (await js.stream_info(driver.stream)).state
            return info.num_ack_pending == 0 and state.messages == 0

        await wait_until(gone)
        assert await driver.fetch("email.send", 4, timeout_seconds=0.3) == []


async def test_a_duplicate_msg_id_returns_the_first_sequence(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver:
        await driver.declare([JobSettings("a")])
        first = await driver.enqueue("a", b"1", msg_id="same")
        other = await driver.enqueue("a", b"2")
        assert await driver.enqueue("a", b"1 again", msg_id="same") == first
        assert other == first + 1
        deliveries = await driver.fetch("a", 10, timeout_seconds=1)
        assert [d.payload for d in deliveries] == [b"1", b"2"]


async def test_fetch_asks_for_exactly_the_batch(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver:
        await driver.declare([JobSettings("a")])
        for i in range(10):
            await driver.enqueue("a", str(i).encode())
        deliveries = await driver.fetch("a", 3, timeout_seconds=2)
        assert [d.payload for d in deliveries] == [b"0", b"1", b"2"]
        await anyio.sleep(0.3)  # anything more the server would send, it has sent
        info = await driver._nc.jetstream().consumer_info(driver.stream, "app_a")
        assert (info.num_ack_pending, info.num_pending, info.num_waiting) == (3, 7, 0)
        # No wait at all: what is there, at once.
        with anyio.fail_after(2):
            deliveries = await driver.fetch("a", 2, timeout_seconds=0)
        assert [d.payload for d in deliveries] == [b"3", b"4"]


async def test_an_empty_fetch_times_out_with_no_deliveries(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver:
        await driver.declare([JobSettings("a")])
        start = time.monotonic()
        with anyio.fail_after(5):
            assert await driver.fetch("a", 8, timeout_seconds=0.5) == []
        assert 0.3 < time.monotonic() - start < 1.5
        # A message that comes while a fetch waits ends it at once, batch unfilled.
        start = time.monotonic()
        async with anyio.create_task_group() as tg:

            async def late() -> None:
                await anyio.sleep(0.2)
                await driver.enqueue("a", b"late")

            tg.start_soon(late)
            with anyio.fail_after(5):
                [delivery] = await driver.fetch("a", 8, timeout_seconds=3)
        assert delivery.payload == b"late"
        assert time.monotonic() - start < 1.5


async def test_nak_with_a_delay_redelivers_after_it(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver:
        await driver.declare([JobSettings("a", ack_wait_seconds=30)])
        await driver.enqueue("a", b"x")
        [first] = await driver.fetch("a", 1, timeout_seconds=2)
        await driver.settle([Settle("nak", first, delay_seconds=0.4)])
        naked = time.monotonic()
        with anyio.fail_after(10):
            again: list[Any] = []
            while not again:
                again = await driver.fetch("a", 1, timeout_seconds=1)
        elapsed = time.monotonic() - naked
        assert again[0].delivery == 2
        assert again[0].sequence == first.sequence
        assert 0.3 <= elapsed < 3.0
        # progress then ack, in order, on the same delivery.
        await driver.settle([Settle("progress", again[0]), Settle("ack", again[0])])
        assert await driver.fetch("a", 1, timeout_seconds=0.6) == []


# -- dead letters ---------------------------------------------------------------------------


async def test_dead_letter_then_term_keeps_one_entry(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver, advisories(driver):
        await driver.declare([JobSettings("a")])
        await driver.enqueue("a", b"poison")
        [delivery] = await driver.fetch("a", 1, timeout_seconds=2)
        letter = letter_for(delivery, "bad input")
        await driver.dead_letter(letter)
        await driver.dead_letter(letter)  # a retried dead_letter stores nothing more
        await driver.settle([Settle("term", delivery)])

        async def advisory_seen() -> bool:
            return driver.advisories_handled >= 1

        await wait_until(advisory_seen)
        [(dlq_id, stored)] = await driver.dead_letters()
        assert stored == letter  # the real envelope, not the advisory's copy
        assert await driver.purge_dead_letters([dlq_id, dlq_id + 100]) == 1
        assert await driver.dead_letters() == []


async def test_a_lost_worker_leaves_one_worker_lost_dead_letter(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver, advisories(driver):
        job = JobSettings("a", max_deliver=2, retry_delays=(0.2,), ack_wait_seconds=0.5)
        await driver.declare([job])
        seq = await driver.enqueue("a", b"\xffpayload")
        deliveries = []

        async def dead_lettered() -> bool:
            # A consumer that crashes on every delivery: fetches, never settles. Its pulls
            # are what makes the server notice the deliveries ran out.
            deliveries.extend(await driver.fetch("a", 1, timeout_seconds=0.3))
            return bool(await driver.dead_letters())

        await wait_until(dead_lettered, within=20, interval=0)
        assert [d.delivery for d in deliveries] == [1, 2]
        await anyio.sleep(0.5)
        [(_, letter)] = await driver.dead_letters()
        assert letter.reason == "worker lost"
        assert (letter.job, letter.sequence, letter.deliveries) == ("a", seq, 2)
        assert letter.payload == b"\xffpayload"
        assert letter.subject == "megatrio.app.jobs.a"
        state = (await driver._nc.jetstream().stream_info(driver.stream)).state
        assert state.messages == 0  # the original went once its dead letter was written


async def test_a_message_that_ran_out_of_deliveries_unseen_is_swept_into_the_dlq(
    nats: NatsServer,
) -> None:
    # No advisory listener while the deliveries run out: its advisory is never seen.
    async with open_driver(nats.url, sweep_interval_seconds=0.3) as driver:
        job = JobSettings("a", max_deliver=1, ack_wait_seconds=0.5)
        await driver.declare([job, JobSettings("b")])
        lost = await driver.enqueue("a", b"lost")
        [delivery] = await driver.fetch("a", 1, timeout_seconds=1)
        assert delivery.sequence == lost
        held = await driver.enqueue("a", b"held")
        [in_flight] = await driver.fetch("a", 1, timeout_seconds=1)
        waiting = await driver.enqueue("a", b"waiting")
        other = await driver.enqueue("b", b"other job")  # another consumer's
        await anyio.sleep(0.7)  # the first one's only delivery expires
        # This pull makes the server notice (and advise, to nobody).
        [last] = await driver.fetch("a", 1, timeout_seconds=1)
        assert last.sequence == waiting
        # While others await their ack, nats-server 2.9 keeps the ack floor below it: the
        # sweep cannot tell it yet, and takes nothing that is in flight.
        assert await driver._advisories.sweep() == 0
        await driver.settle([Settle("ack", in_flight), Settle("ack", last)])

        async with advisories(driver):
            await wait_until(_async(lambda: driver.sweeps[1] >= 1), 5, 0.02)
            [(_, letter)] = await driver.dead_letters()
            assert (letter.reason, letter.sequence, letter.deliveries) == ("worker lost", lost, 1)
            assert letter.payload == b"lost"
            # Later sweeps find nothing more and write nothing twice.
            swept = driver.sweeps[0]
            await wait_until(_async(lambda: driver.sweeps[0] >= swept + 2), 5, 0.02)
            assert driver.sweeps[1] == 1
            assert len(await driver.dead_letters()) == 1
        js = driver._nc.jetstream()
        left = {seq for seq in (lost, held, waiting, other) if await _stored(js, driver, seq)}
        assert left == {other}


async def _stored(js: Any, driver: JetStreamDriver, seq: int) -> bool:
    try:
        await js.get_msg(driver.stream, seq)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def test_a_dead_letter_before_the_last_timeout_wins_over_the_advisory(
    nats: NatsServer,
) -> None:
    async with open_driver(nats.url) as driver, advisories(driver):
        await driver.declare([JobSettings("a", max_deliver=1, ack_wait_seconds=0.5)])
        await driver.enqueue("a", b"x")
        [delivery] = await driver.fetch("a", 1, timeout_seconds=2)
        letter = letter_for(delivery, "the real error")
        await driver.dead_letter(letter)  # ...then the worker dies before its term

        async def advisory_seen() -> bool:
            await driver.fetch("a", 1, timeout_seconds=0.2)
            return driver.advisories_handled >= 1

        await wait_until(advisory_seen, within=20, interval=0)
        assert [stored for _, stored in await driver.dead_letters()] == [letter]


async def test_purge_all_dead_letters_counts_them(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver:
        await driver.declare([JobSettings("a")])
        for i in range(5):
            await driver.enqueue("a", str(i).encode())
        for delivery in await driver.fetch("a", 5, timeout_seconds=2):
            await driver.dead_letter(letter_for(delivery))
        assert [letter.payload for _, letter in await driver.dead_letters(limit=3)] == [
            b"0",
            b"1",
            b"2",
        ]
        assert await driver.purge_dead_letters() == 5
        assert await driver.dead_letters() == []


# -- failures -------------------------------------------------------------------------------


async def test_an_unreachable_server_is_backend_unavailable_without_credentials(
    nats: NatsServer,
) -> None:
    url = nats.url.replace("nats://", "nats://megauser:s3cret@")
    async with open_driver(url, request_timeout_seconds=0.5) as driver:
        await driver.declare([JobSettings("a")])
        nats.stop()
        with anyio.fail_after(5), pytest.raises(BackendUnavailable) as caught:
            await driver.enqueue("a", b"x")
        assert "s3cret" not in str(caught.value)
        assert "megauser" not in str(caught.value)
        assert f"nats://127.0.0.1:{nats.port}" in str(caught.value)


async def test_a_deleted_stream_is_named(nats: NatsServer) -> None:
    async with open_driver(nats.url) as driver:
        await driver.declare([JobSettings("a")])
        await driver._nc.jetstream().delete_stream(driver.stream)
        with pytest.raises(RuntimeError, match="job stream MEGATRIO_APP_JOBS does not exist"):
            await driver.enqueue("a", b"x")


async def test_enqueues_to_a_frozen_server_time_out_together_and_it_recovers(
    nats: NatsServer,
) -> None:
    async with open_driver(nats.url, request_timeout_seconds=0.5) as driver:
        await driver.declare([JobSettings("a")])
        first = await driver.enqueue("a", b"before")
        errors: list[BaseException] = []

        async def enqueue(i: int) -> None:
            try:
                await driver.enqueue("a", b"%d" % i)
            except BackendUnavailable as exc:
                errors.append(exc)

        with frozen(nats.proc):
            began = time.monotonic()
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    for i in range(50):
                        tg.start_soon(enqueue, i)
            waited = time.monotonic() - began
            assert driver._pubacks.waiting == 0
        assert len(errors) == 50
        assert 0.4 < waited < 2.0  # one patience for all of them, not 50 in a row
        assert "enqueue 'a'" in str(errors[0])
        assert isinstance(errors[0].__cause__, nats_errors.TimeoutError)
        # Back: the late acknowledgements of the timed-out ones are ignored, new ones answer.
        with anyio.fail_after(10):
            assert await driver.enqueue("a", b"after") > first
        assert driver._pubacks.waiting == 0


async def test_a_cancelled_enqueue_is_stopped_and_nothing_waits_for_its_answer(
    nats: NatsServer,
) -> None:
    async with open_driver(nats.url, request_timeout_seconds=30) as driver:
        await driver.declare([JobSettings("a")])
        with frozen(nats.proc):
            with anyio.move_on_after(0.2) as scope:
                await driver.enqueue("a", b"x")
            assert scope.cancelled_caught
            assert driver._pubacks.waiting == 0
            # Closing the driver answers what still waits: unavailable, not a hang.
            outcome: list[BaseException] = []

            async def enqueue() -> None:
                try:
                    await driver.enqueue("a", b"y")
                except BackendUnavailable as exc:
                    outcome.append(exc)

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(enqueue)
                    await wait_until(_async(lambda: driver._pubacks.waiting == 1), 5, 0.01)
                    await driver._pubacks.aclose()
            assert len(outcome) == 1
            assert isinstance(outcome[0].__cause__, nats_errors.ConnectionClosedError)


def _async(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


async def test_a_restart_loses_nothing(nats: NatsServer) -> None:
    async with open_driver(nats.url, request_timeout_seconds=1) as driver:
        await driver.declare([JobSettings("a", ack_wait_seconds=2, retry_delays=(0.1,))])
        acked: set[bytes] = set()

        async def enqueue(i: int) -> None:
            while True:
                try:
                    await driver.enqueue("a", b"%d" % i, msg_id=f"m{i}")
                    return
                except BackendUnavailable:
                    await anyio.sleep(0.1)  # same msg_id: a retry never duplicates

        async def consume(until: int) -> None:
            while len(acked) < until:
                try:
                    deliveries = await driver.fetch("a", 5, timeout_seconds=0.5)
                    await driver.settle([Settle("ack", d) for d in deliveries])
                except BackendUnavailable:
                    await anyio.sleep(0.1)
                    continue
                acked.update(d.payload for d in deliveries)

        with anyio.fail_after(60):
            for i in range(20):
                await enqueue(i)
            await consume(10)
            nats.restart()
            for i in range(20, 40):
                await enqueue(i)
            await consume(40)
        assert acked == {b"%d" % i for i in range(40)}


async def test_a_cancelled_fetch_leaves_nothing_for_close(nats: NatsServer) -> None:
    nc = await connect(nats.url)
    driver = JetStreamDriver(nc, namespace="app")
    await driver.declare([JobSettings("a")])
    with anyio.move_on_after(0.3):
        await driver.fetch("a", 8, timeout_seconds=30)
    # The request the server still holds lost its inbox: a new message goes to the next
    # fetch at once, not to the abandoned one (nor waits out an ack wait).
    await driver.enqueue("a", b"after")
    with anyio.fail_after(3):
        [delivery] = await driver.fetch("a", 8, timeout_seconds=2)
    assert delivery.delivery == 1
    with anyio.move_on_after(0.3):
        await driver.fetch("a", 8, timeout_seconds=30)
    start = time.monotonic()
    with anyio.fail_after(5):
        await driver.aclose()
        await nc.drain()  # the trap: waits its drain_timeout (30 s) for a pending pull
    assert time.monotonic() - start < 2


# -- a cluster ------------------------------------------------------------------------------


def jsz_leader(node: NatsServer, stream: str) -> str | None:
    url = f"{node.monitor_url}/jsz?streams=true"
    with urllib.request.urlopen(url, timeout=2) as response:
        data = json.loads(response.read())
    for account in data.get("account_details", []):
        for info in account.get("stream_detail", []):
            if info["name"] == stream:
                return info.get("cluster", {}).get("leader")
    return None


async def test_losing_the_stream_leader_loses_no_job(tmp_path: Path) -> None:
    nodes = start_nats_cluster(tmp_path, 3)
    try:
        async with open_driver([n.url for n in nodes], replicas=3) as driver:
            job = JobSettings("a", ack_wait_seconds=2, retry_delays=(0.1,), max_deliver=20)
            with anyio.fail_after(30):
                while True:
                    try:
                        await driver.declare([job])
                        break
                    except (BackendUnavailable, nats.js.errors.APIError):
                        await anyio.sleep(0.5)  # the cluster may still be placing peers
            js = driver._nc.jetstream()
            leader = (await js.stream_info(driver.stream)).cluster
            assert leader is not None
            victim = next(n for n in nodes if n.name == leader.leader)
            total, acked, sixty_in = 200, set[bytes](), anyio.Event()

            async def produce() -> None:
                for i in range(total):
                    while True:
                        try:
                            await driver.enqueue("a", b"%d" % i, msg_id=f"j{i}")
                            break
                        except (BackendUnavailable, nats.js.errors.APIError):
                            await anyio.sleep(0.1)
                    if i == 59:
                        sixty_in.set()
                    if i % 10 == 9:
                        await anyio.sleep(0.02)

            async def consume() -> None:
                while len(acked) < total:
                    try:
                        deliveries = await driver.fetch("a", 10, timeout_seconds=0.5)
                        await driver.settle([Settle("ack", d) for d in deliveries])
                    except (BackendUnavailable, nats.js.errors.APIError):
                        await anyio.sleep(0.1)
                        continue
                    acked.update(d.payload for d in deliveries)

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(produce)
                    tg.start_soon(consume)
                    await sixty_in.wait()
                    victim.stop(signal.SIGKILL)
                # A new leader took over among the survivors.
                survivor = next(n for n in nodes if n is not victim)
                wait_meta_leader(survivor)
                assert jsz_leader(survivor, driver.stream) not in (None, victim.name)
            assert acked == {b"%d" % i for i in range(total)}
    finally:
        for node in nodes:
            node.stop(signal.SIGKILL)
