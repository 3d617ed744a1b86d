"""Dead letters the consumer never wrote: JetStream's advisories, turned into DLQ envelopes.

A consumer dead-letters a message itself when its handler failed for the last time
(:meth:`~._jetstream.JetStreamDriver.dead_letter`, then ``term``). Two cases escape it:

- the worker of the final delivery was lost (crashed, killed, stuck past its ack wait): the
  server gives up after ``max_deliver`` deliveries and publishes
  ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``;
- a delivery was terminated without a dead letter (the consumer crashed between the two, or
  some code called ``term`` alone):
  ``$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.<stream>.<consumer>``.

Both payloads carry ``stream_seq`` and ``deliveries`` (checked against nats-server 2.9.10).
For each, :class:`AdvisoryListener` reads the original by stream sequence and publishes an
envelope with the same ``Nats-Msg-Id`` (``dlq-<stream seq>``) the consumer uses, so when the
consumer already wrote the real one (with the handler's error), the DLQ stream drops the copy
as a duplicate: one DLQ entry per message, whoever writes first. That only holds if the
consumer dead-letters *before* it terminates, which is the order the contract prescribes.

The job stream has work-queue retention: an acked or terminated message leaves it, but one
that ran out of deliveries stays forever (nothing acks it). After writing its envelope the
listener therefore deletes the original from the job stream — the DLQ holds the copy, and a
message left behind would only hold storage. A terminated message has already left, so its
envelope has an empty payload; it is a duplicate in the normal order and is dropped.

Advisories are core NATS (at most once): one published while no listener was connected (or
lost in a reconnect) is never seen. The listener therefore also **sweeps**, when it starts and
then every ``sweep_interval`` seconds: a message still in the job stream that its consumer
has done with — at or below the consumer's ack floor, or, when nothing is awaiting an ack,
at or below the last delivered sequence — can only be one that ran out of deliveries (an
acked or terminated one has left a work-queue stream, a pending or retrying one is above the
floor and awaiting its ack). Each gets the same "worker lost" envelope and the same
de-duplication id as its advisory would have, then leaves the job stream. A sweep writes at
most :data:`SWEEP_LIMIT` dead letters per job; the next one takes the rest. nats-server 2.9
keeps the ack floor below such a message until nothing else awaits an ack, so on a consumer
that is never idle the sweep finds it late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import RawStreamMsg
from nats.js.client import JetStreamContext

from ...nursery._errors import describe
from ._driver import DeadLetter

log = logging.getLogger("megatrio.jobs")

MAX_DELIVERIES = "MAX_DELIVERIES"
MSG_TERMINATED = "MSG_TERMINATED"
_ADVISORY_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER"
SWEEP_LIMIT = 100
"""Messages one sweep turns into dead letters per job, at most."""

# Errors that mean "NATS cannot serve this now" (retry later), not "this request is wrong".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    TimeoutError,
    OSError,
)

# JetStream's API error code for "JetStream system temporarily unavailable" (an election).
_JS_TEMPORARILY_UNAVAILABLE = 10008


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, UNAVAILABLE):
        return True
    return isinstance(exc, nats.js.errors.APIError) and (
        exc.err_code == _JS_TEMPORARILY_UNAVAILABLE or exc.code == 503
    )


def dlq_msg_id(sequence: int) -> str:
    """The de-duplication id of the dead letter of job-stream message *sequence*."""
    return f"dlq-{sequence}"


async def publish_dead_letter(
    js: JetStreamContext, *, subject: str, stream: str, letter: DeadLetter, timeout_seconds: float
) -> bool:
    """Publish *letter* to the DLQ; False when the stream dropped it as a duplicate."""
    ack = await js.publish(
        subject,
        letter.to_json(),
        timeout=timeout_seconds,
        stream=stream,
        headers={"Nats-Msg-Id": dlq_msg_id(letter.sequence)},
    )
    return not ack.duplicate


class AdvisoryListener:
    """Subscribes to one job stream's advisories and writes the dead letters they imply.

    *dlq_subject* maps a job name to its DLQ subject; *job_of_subject* maps a job-stream subject
    back to its job name (None for a subject of no job); *job_of_consumer* does the same for a
    consumer name, used when the original message is gone. *sweep_targets* lists, for the
    sweep, each declared job as ``(job, consumer, subject, max_deliver)``.
    """

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        stream: str,
        dlq_stream: str,
        dlq_subject: Callable[[str], str],
        job_of_subject: Callable[[str], str | None],
        job_of_consumer: Callable[[str], str | None],
        sweep_targets: Callable[[], list[tuple[str, str, str, int]]],
        timeout: float,
        sweep_interval: float = 60.0,
    ) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._dlq_stream = dlq_stream
        self._dlq_subject = dlq_subject
        self._job_of_subject = job_of_subject
        self._job_of_consumer = job_of_consumer
        self._sweep_targets = sweep_targets
        self._timeout = timeout
        self._sweep_interval = sweep_interval
        # None is the stop request; advisories are handled one at a time, in arrival order.
        self._queue: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._running = False
        self._done = asyncio.Event()
        self._done.set()
        self.handled = 0
        """Advisories handled so far (written, found duplicate, or found nothing to do)."""
        self.swept = 0
        """Dead letters written by sweeps (duplicates of an advisory's included)."""
        self.sweeps = 0
        """Sweeps completed."""

    def subjects(self) -> list[str]:
        return [
            f"{_ADVISORY_PREFIX}.{kind}.{self._stream}.*"
            for kind in (MAX_DELIVERIES, MSG_TERMINATED)
        ]

    async def run(self, on_ready: Callable[[], object] | None = None) -> None:
        """Listen until :meth:`stop` (or cancellation); *on_ready* is called once the server
        has the subscriptions, so an advisory published after it is seen."""
        if self._running:
            raise RuntimeError("the advisory listener of this driver is already running")
        self._running = True
        self._done.clear()

        async def enqueue(msg: Msg) -> None:
            self._queue.put_nowait(msg)

        subs = []
        try:
            for subject in self.subjects():
                subs.append(await self._nc.subscribe(subject, cb=enqueue))
            await self._nc.flush(timeout=max(1, round(self._timeout)))
            if on_ready is not None:
                on_ready()
            loop = asyncio.get_running_loop()
            next_sweep = loop.time()
            while True:
                if loop.time() >= next_sweep:
                    await self._sweep_logged()
                    next_sweep = loop.time() + self._sweep_interval
                try:
                    async with asyncio.timeout_at(next_sweep):
                        msg = await self._queue.get()
                except TimeoutError:
                    continue
                if msg is None:
                    break
                await self._handle_with_retries(msg)
        finally:
            for sub in subs:
                # Removes the subscription from the client before the UNSUB is sent, so a
                # cancellation here still leaves nothing that drain() would wait for.
                if not self._nc.is_closed:
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()
            self._running = False
            self._done.set()

    async def stop(self) -> None:
        """Ask :meth:`run` to return and wait until it has (at once if it is not running)."""
        if self._running:
            self._queue.put_nowait(None)
            await self._done.wait()

    async def _handle_with_retries(self, msg: Msg) -> None:
        delay = 0.25
        for attempt in range(4):
            try:
                await self.handle(msg)
            except Exception as exc:
                if not is_unavailable(exc) or attempt == 3:
                    log.error(
                        "jobs: advisory %s not turned into a dead letter: %s",
                        msg.subject,
                        describe(exc),
                    )
                    break
                await asyncio.sleep(delay)
                delay *= 2
            else:
                break
        self.handled += 1

    async def _sweep_logged(self) -> None:
        try:
            await self.sweep()
        except Exception as exc:
            # The next sweep tries again; what it would have found stays in the stream.
            log.warning("jobs: dead-letter sweep of %s failed: %s", self._stream, describe(exc))

    async def sweep(self) -> int:
        """Dead-letter what ran out of deliveries unseen (module docstring); how many."""
        written = 0
        for job, consumer, subject, max_deliver in self._sweep_targets():
            try:
                info = await self._js.consumer_info(self._stream, consumer)
            except nats.js.errors.NotFoundError:
                continue
            bound = info.ack_floor.stream_seq if info.ack_floor else 0
            if not info.num_ack_pending and info.delivered is not None:
                bound = max(bound, info.delivered.stream_seq or 0)
            seq = 1
            for _ in range(SWEEP_LIMIT):
                if not bound or seq > bound:
                    break
                try:
                    raw = await self._js.get_msg(self._stream, seq, subject=subject, next=True)
                except nats.js.errors.NotFoundError:
                    break
                if raw.seq is None or raw.seq > bound:
                    break
                seq = raw.seq + 1
                await self._write(
                    MAX_DELIVERIES, job, raw.subject or subject, raw.seq, max_deliver, raw
                )
                written += 1
        self.swept += written
        self.sweeps += 1
        return written

    async def handle(self, msg: Msg) -> None:
        """Write the dead letter that advisory *msg* implies, then drop the original."""
        kind = msg.subject.removeprefix(f"{_ADVISORY_PREFIX}.").split(".", 1)[0]
        event: dict[str, Any] = json.loads(msg.data)
        sequence = int(event["stream_seq"])
        deliveries = int(event.get("deliveries", 0))
        consumer = str(event.get("consumer", ""))
        try:
            original = await self._js.get_msg(self._stream, sequence)
        except nats.js.errors.NotFoundError:
            original = None
        if original is None and kind == MAX_DELIVERIES:
            # Acked, or already dead-lettered and deleted by another listener: nothing left.
            return
        subject = original.subject if original is not None and original.subject else None
        job = (self._job_of_subject(subject) if subject else None) or self._job_of_consumer(
            consumer
        )
        if job is None:
            log.warning("jobs: advisory %s names no job of this app", msg.subject)
            return
        await self._write(kind, job, subject, sequence, deliveries, original)

    async def _write(
        self,
        kind: str,
        job: str,
        subject: str | None,
        sequence: int,
        deliveries: int,
        original: RawStreamMsg | None,
    ) -> None:
        if kind == MAX_DELIVERIES:
            reason = "worker lost"
            message = (
                f"no delivery of the {deliveries} allowed was settled: the worker of the last "
                "one crashed, was killed or outlived its ack wait"
            )
        else:
            reason = "no retry"
            message = "terminated without a dead letter; its payload had already left the stream"
        letter = DeadLetter(
            job=job,
            subject=subject or "",
            sequence=sequence,
            deliveries=deliveries,
            failed_at=time.time(),
            reason=reason,
            error_type=None,
            error_message=message,
            traceback=None,
            payload=(original.data or b"") if original is not None else b"",
        )
        written = await publish_dead_letter(
            self._js,
            subject=self._dlq_subject(job),
            stream=self._dlq_stream,
            letter=letter,
            timeout_seconds=self._timeout,
        )
        log.log(
            logging.WARNING if written else logging.DEBUG,
            "jobs: %s message %d of %s: dead letter %s",
            reason,
            sequence,
            job,
            "written" if written else "already there",
        )
        if original is not None:
            # NotFound: another listener (another worker process) deleted it first.
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self._js.delete_msg(self._stream, sequence)
