"""The JetStream engine: :class:`JetStreamDriver`, a :class:`~._driver.JobDriver` on nats-py.

Every method is an asyncio coroutine: on asyncio it is called directly, under trio through
the NATS bridge, which runs it on its asyncio loop. The driver does not own the connection:
the caller connects (``max_reconnect_attempts=-1`` to ride out restarts) and closes it after
:meth:`JetStreamDriver.aclose`.

**Names.** Everything is derived from the namespace (the app's name, case-insensitive), so two
apps on one NATS never share a stream:

- job stream ``MEGATRIO_<NS>_JOBS``, subjects ``megatrio.<ns>.jobs.>``, work-queue retention
  (an acked or terminated message leaves it); job ``email.send`` is published on
  ``megatrio.<ns>.jobs.email.send``;
- one durable pull consumer per job, ``<ns>_<job>`` with dots as ``_`` (NATS names allow no
  dots); two jobs whose names collide that way are refused by :meth:`~JetStreamDriver.declare`;
- DLQ stream ``MEGATRIO_<NS>_DLQ``, subjects ``megatrio.<ns>.dlq.>`` (``...dlq.<job>``), limits
  retention with ``max_age`` (7 days by default).

A namespace is one subject token (letters, digits, ``_``, ``-``); a job name is dot-separated
such tokens. Anything else is a ValueError naming it.

**Delivery settings.** ``ack_policy=explicit``, ``max_deliver``, ``ack_wait``, and
``max_ack_pending = max(concurrency, 1000)`` (the server's default, raised when one consumer's
concurrency alone needs more: several worker processes share the durable consumer, and each
process's own slots bound its work). *retry_delays* applies to ack-timeout redeliveries
through the consumer's ``backoff``: JetStream uses ``backoff[i]`` instead of ``ack_wait`` as the
ack wait of delivery ``i + 1`` (the last element repeats) and requires
``max_deliver > len(backoff)``. Hence the mapping ``backoff[i] = ack_wait + retry_delays[i]``
(the last delay repeating) for the ``max_deliver - 1`` redeliveries: a lost worker's message is
redelivered after its ack wait *plus* the retry delay, as after a failure, and a live handler
still has at least ``ack_wait`` (plus the delay) per delivery. No backoff when ``max_deliver``
is 1 or every delay is 0. A server that rejects the backoff gets the consumer without it
(ack-timeout redeliveries after ``ack_wait`` alone), with a warning; nats-server 2.9 accepts it.
Redeliveries after a handler failure are the consumer's ``nak`` with the delay.

**Fetching.** One pull request per :meth:`~JetStreamDriver.fetch`, for exactly *batch*
messages, with ``no_wait`` and ``expires``: nats-server (2.9 included) then waits up to
``expires`` for the first message, sends what is available up to *batch*, and closes the request
with a status (408). The request has its own inbox subscription, removed when the fetch ends
however it ends (cancelled included): nothing is left for ``drain()`` to wait on, and the server
drops a still-open request whose inbox lost interest instead of delivering to it.

Longer than the house's 400 lines: the names, the settings mapping and the eight driver
methods share the derived names and one error mapping; the advisory path is apart
(:mod:`._advisories`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import NoReturn

import attrs
import nats.errors
import nats.js.errors
import outcome
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from ..._exceptions import BackendUnavailable
from ...nursery._errors import describe
from ..nats._bridge import Cancel, Done, await_callback
from ._advisories import AdvisoryListener, is_unavailable, publish_dead_letter
from ._driver import DeadLetter, Delivery, JobSettings, Settle, check_job_name
from ._pubacks import PubAcks

log = logging.getLogger("megatrio.jobs")

_TOKEN = re.compile(r"[A-Za-z0-9_-]+\Z")
_MAX_NAMESPACE = 64
_DEFAULT_MAX_ACK_PENDING = 1000
_STATUS = "Status"
_EXPECTED_STREAM = "Nats-Expected-Stream"
_HEARTBEAT = "100"
_DELETE_FAILED = 10057


def check_namespace(namespace: object) -> str:
    """*namespace* in the canonical (lower-case) form names are derived from."""
    if (
        not isinstance(namespace, str)
        or len(namespace) > _MAX_NAMESPACE
        or not _TOKEN.match(namespace)
    ):
        raise ValueError(
            f"invalid jobs namespace {namespace!r}: expected 1 to {_MAX_NAMESPACE} letters, "
            "digits, '_' or '-' (it becomes a NATS subject token and part of stream names)"
        )
    return namespace.lower()


def backoff_for(settings: JobSettings) -> list[float] | None:
    """The consumer's ``backoff`` for *settings* (see the module docstring), or None."""
    redeliveries = settings.max_deliver - 1
    delays = settings.retry_delays
    if redeliveries < 1 or not delays or not any(delays):
        return None
    steps = [
        settings.ack_wait_seconds + delays[min(i, len(delays) - 1)] for i in range(redeliveries)
    ]
    # The server repeats the last element: equal trailing ones say nothing more.
    while len(steps) > 1 and steps[-1] == steps[-2]:
        steps.pop()
    return steps


def _check_settings(settings: JobSettings) -> None:
    name = settings.name
    if settings.max_deliver < 1:
        raise ValueError(f"job {name!r}: max_deliver must be >= 1, got {settings.max_deliver}")
    if settings.concurrency < 1:
        raise ValueError(f"job {name!r}: concurrency must be >= 1, got {settings.concurrency}")
    if not settings.ack_wait_seconds > 0:
        raise ValueError(
            f"job {name!r}: ack_wait_seconds must be > 0, got {settings.ack_wait_seconds}"
        )
    if any(not delay >= 0 for delay in settings.retry_delays):
        raise ValueError(f"job {name!r}: retry_delays must be >= 0, got {settings.retry_delays}")


# Where the delivery count, stream sequence and timestamp (ns) sit in a JetStream message's
# reply subject: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or with
# <domain>.<account hash> after $JS.ACK (11 tokens, 12 with a trailing random token).
_V1_TOKENS = 9
_V1_FIELDS = (4, 5, 7)
_V2_FIELDS = (6, 7, 9)


def ack_reply_fields(msg: Msg) -> tuple[int, int, float]:
    """The delivery count, stream sequence and stored-at time (epoch seconds) of JetStream
    message *msg*, from its reply subject: what ``msg.metadata`` gives, without the objects
    and the datetime it builds for every message.

    Raises:
        nats.errors.NotJSMessageError: *msg* is no JetStream delivery.
    """
    tokens = (msg.reply or "").split(".")
    count = len(tokens)
    if count == _V1_TOKENS:
        delivered, sequence, stamp = _V1_FIELDS
    elif count >= _V1_TOKENS + 2:
        delivered, sequence, stamp = _V2_FIELDS
    else:
        raise nats.errors.NotJSMessageError
    if tokens[0] != "$JS" or tokens[1] != "ACK":
        raise nats.errors.NotJSMessageError
    return int(tokens[delivered]), int(tokens[sequence]), int(tokens[stamp]) / 1e9


def redacted_url(nc: Client) -> str:
    """Where *nc* is (or was last) connected, as ``scheme://host:port``: never credentials."""
    url = nc.connected_url or (nc.servers[0] if nc.servers else None)
    if url is None:
        return "nats (no server)"
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.hostname}{port}"


class JetStreamDriver:
    """Jobs on NATS JetStream (see the module docstring for names and settings).

    *replicas* is the streams' replication factor (3 on a three-node cluster);
    *dlq_max_age_seconds* how long a dead letter is kept; *dedup_window_seconds* how long an
    enqueue's *msg_id* is remembered; *request_timeout_seconds* bounds every JetStream API call;
    *sweep_interval_seconds* is how often the advisory task sweeps for messages that ran out of
    deliveries while no advisory was seen.

    Dead letters the consumer does not write itself come from the advisories and the sweep: run
    :meth:`run_advisories` as a long-lived task (the owner's, so it stays in the task tree);
    :meth:`aclose` stops it and waits until it has returned.
    """

    def __init__(
        self,
        nc: Client,
        *,
        namespace: str,
        replicas: int = 1,
        dlq_max_age_seconds: float = 7 * 24 * 3600.0,
        dedup_window_seconds: float = 120.0,
        request_timeout_seconds: float = 5.0,
        sweep_interval_seconds: float = 60.0,
    ) -> None:
        ns = check_namespace(namespace)
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        for label, value in (
            ("dlq_max_age_seconds", dlq_max_age_seconds),
            ("dedup_window_seconds", dedup_window_seconds),
            ("request_timeout_seconds", request_timeout_seconds),
            ("sweep_interval_seconds", sweep_interval_seconds),
        ):
            if not value > 0:
                raise ValueError(f"{label} must be > 0, got {value!r}")
        self._nc = nc
        self._timeout = request_timeout_seconds
        self._js = nc.jetstream(timeout=request_timeout_seconds)
        self.namespace = ns
        self.stream = f"MEGATRIO_{ns.upper()}_JOBS"
        self.dlq_stream = f"MEGATRIO_{ns.upper()}_DLQ"
        self._subject_prefix = f"megatrio.{ns}.jobs."
        self._dlq_prefix = f"megatrio.{ns}.dlq."
        self._replicas = replicas
        self._dlq_max_age = dlq_max_age_seconds
        self._dedup_window = dedup_window_seconds
        self._jobs: dict[str, JobSettings] = {}
        self._consumers: dict[str, str] = {}
        self._subjects: dict[str, str] = {}  # of the declared jobs, so enqueues check nothing
        self._pubacks = PubAcks(nc, timeout_seconds=request_timeout_seconds)
        self._advisories = AdvisoryListener(
            nc,
            self._js,
            stream=self.stream,
            dlq_stream=self.dlq_stream,
            dlq_subject=self.dlq_subject,
            job_of_subject=self._job_of_subject,
            job_of_consumer=self._job_of_consumer,
            sweep_targets=self._sweep_targets,
            timeout=request_timeout_seconds,
            sweep_interval=sweep_interval_seconds,
        )

    # -- names ------------------------------------------------------------------------------

    def subject(self, job: str) -> str:
        return self._subject_prefix + check_job_name(job)

    def dlq_subject(self, job: str) -> str:
        return self._dlq_prefix + check_job_name(job)

    def consumer(self, job: str) -> str:
        return f"{self.namespace}_{check_job_name(job).replace('.', '_')}"

    def _job_of_subject(self, subject: str) -> str | None:
        job = subject.removeprefix(self._subject_prefix)
        return job if job != subject else None

    def _job_of_consumer(self, consumer: str) -> str | None:
        for job, name in self._consumers.items():
            if name == consumer:
                return job
        return None

    def _sweep_targets(self) -> list[tuple[str, str, str, int]]:
        return [
            (job, consumer, self._subjects[job], self._jobs[job].max_deliver)
            for job, consumer in self._consumers.items()
        ]

    def _declared(self, job: str) -> str:
        """*job*'s consumer name; LookupError if *job* was not declared."""
        consumer = self._consumers.get(job)
        if consumer is None:
            declared = ", ".join(sorted(self._consumers)) or "none"
            raise LookupError(f"job {job!r} was not declared (declared jobs: {declared})")
        return consumer

    # -- errors -----------------------------------------------------------------------------

    def _unavailable(self, what: str, exc: BaseException) -> NoReturn:
        raise BackendUnavailable(
            f"NATS JetStream at {redacted_url(self._nc)}: {what}: {describe(exc)}"
        ) from exc

    # -- the JobDriver methods ---------------------------------------------------------------

    async def declare(self, jobs: Sequence[JobSettings]) -> None:
        """Create or update both streams and one consumer per job (idempotent: a second
        declare with changed settings updates the consumers). Consumers of jobs no longer
        declared are left alone: another process of the app may still use them."""
        consumers: dict[str, str] = {}
        for settings in jobs:
            check_job_name(settings.name)
            _check_settings(settings)
            consumer = self.consumer(settings.name)
            clash = next((j for j, c in consumers.items() if c == consumer), None)
            if clash is not None:
                raise ValueError(
                    f"jobs {clash!r} and {settings.name!r} map to one consumer name "
                    f"{consumer!r} (dots become '_'); rename one of them"
                )
            consumers[settings.name] = consumer
        # A dead letter and the advisory's copy of it must meet within the DLQ's
        # de-duplication window: at most one ack wait (with backoff) apart, so twice the
        # longest one, plus slack, never beyond max_age (the server's limit).
        longest = max((max(backoff_for(s) or [s.ack_wait_seconds]) for s in jobs), default=0.0)
        dlq_window = min(self._dlq_max_age, max(120.0, 2 * longest + 60.0))
        try:
            await self._ensure_stream(
                api.StreamConfig(
                    name=self.stream,
                    subjects=[self._subject_prefix + ">"],
                    retention=api.RetentionPolicy.WORK_QUEUE,
                    storage=api.StorageType.FILE,
                    num_replicas=self._replicas,
                    duplicate_window=self._dedup_window,
                )
            )
            await self._ensure_stream(
                api.StreamConfig(
                    name=self.dlq_stream,
                    subjects=[self._dlq_prefix + ">"],
                    retention=api.RetentionPolicy.LIMITS,
                    storage=api.StorageType.FILE,
                    num_replicas=self._replicas,
                    max_age=self._dlq_max_age,
                    duplicate_window=dlq_window,
                )
            )
            for settings in jobs:
                await self._ensure_consumer(settings, consumers[settings.name])
        except Exception as exc:
            if is_unavailable(exc):
                self._unavailable("declare", exc)
            raise
        self._jobs.update({s.name: s for s in jobs})
        self._consumers.update(consumers)
        self._subjects.update({job: self.subject(job) for job in consumers})

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        assert config.name is not None
        try:
            await self._js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            try:
                await self._js.add_stream(config)
                return
            except nats.js.errors.BadRequestError:
                # Created meanwhile by another process (then update it like an existing
                # one), or refused for itself (then that is the error to show).
                try:
                    await self._js.stream_info(config.name)
                except nats.js.errors.NotFoundError:
                    pass
                else:
                    await self._js.update_stream(config)
                    return
                raise
        await self._js.update_stream(config)

    async def _ensure_consumer(self, settings: JobSettings, consumer: str) -> None:
        backoff = backoff_for(settings)
        config = api.ConsumerConfig(
            name=consumer,
            durable_name=consumer,
            filter_subject=self.subject(settings.name),
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            max_deliver=settings.max_deliver,
            ack_wait=settings.ack_wait_seconds,
            backoff=backoff,
            max_ack_pending=max(settings.concurrency, _DEFAULT_MAX_ACK_PENDING),
        )
        try:
            await self._js.add_consumer(self.stream, config)
        except nats.js.errors.BadRequestError as exc:
            if backoff is None:
                raise
            log.warning(
                "jobs: NATS refused backoff %s for job %r (%s); its ack-timeout redeliveries "
                "come after ack_wait alone",
                backoff,
                settings.name,
                describe(exc),
            )
            config.backoff = None
            await self._js.add_consumer(self.stream, config)

    async def enqueue(self, job: str, payload: bytes, *, msg_id: str | None = None) -> int:
        """Publish *payload* for *job*; its job-stream sequence (the first one's for a
        duplicate *msg_id*). One that raised BackendUnavailable may still be stored (the
        client sends it after a reconnect): retry with the same *msg_id*."""
        return await await_callback(self.start_enqueue, job, payload, msg_id)

    def start_enqueue(
        self, done: Done[int], job: str, payload: bytes, msg_id: str | None
    ) -> Cancel:
        """:meth:`enqueue` as a callback operation (``AsyncioBridge.run_callback``): *done*
        gets the outcome; the callable returned stops it. On the loop's thread.

        Publishes wait for their acknowledgements together (:mod:`._pubacks`): no task,
        future or timer of their own.

        Raises:
            LookupError: *job* was not declared.
        """
        subject = self._subjects.get(job)
        if subject is None:
            self._declared(job)  # raises LookupError
            raise AssertionError(job)
        headers = {_EXPECTED_STREAM: self.stream}
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        explaining: list[asyncio.Task[NoReturn]] = []

        def answered(result: outcome.Outcome[int]) -> None:
            if not isinstance(result, outcome.Error):
                done(result)
                return
            exc = result.error
            if isinstance(exc, nats.js.errors.NoStreamResponseError):
                # Rare, and telling "no stream" from "no server" takes another request.
                task = asyncio.get_running_loop().create_task(
                    self._no_stream(f"enqueue {job!r}", exc)
                )
                explaining.append(task)
                task.add_done_callback(explained)
                return
            done(outcome.Error(self._mapped(f"enqueue {job!r}", exc)))

        def explained(task: asyncio.Task[NoReturn]) -> None:
            if not task.cancelled():  # cancelled by the stop: the stop answers the caller
                exc = task.exception()
                assert exc is not None
                done(outcome.Error(exc))

        stop = self._pubacks.submit(subject, payload, headers, answered)

        def cancel() -> None:
            stop()
            for task in explaining:
                task.cancel()

        return cancel

    async def _no_stream(self, what: str, exc: BaseException) -> NoReturn:
        await self._raise_if_stream_missing(exc)
        self._unavailable(what, exc)

    def _mapped(self, what: str, exc: BaseException) -> BaseException:
        """*exc* as the caller sees it: BackendUnavailable (caused by it) when it means NATS
        cannot serve now, else itself."""
        if not is_unavailable(exc):
            return exc
        try:
            self._unavailable(what, exc)
        except BackendUnavailable as mapped:
            return mapped

    async def _raise_if_stream_missing(self, exc: BaseException) -> None:
        try:
            await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            raise RuntimeError(
                f"the job stream {self.stream} does not exist on {redacted_url(self._nc)} "
                "(deleted since declare()?); declare the jobs again"
            ) from exc
        except Exception:
            pass  # cannot tell: report the original failure as unavailability

    async def fetch(self, job: str, batch: int, *, timeout_seconds: float) -> list[Delivery]:
        """One pull request for exactly *batch* messages (module docstring): the deliveries
        that came, or [] when none came within *timeout_seconds*."""
        consumer = self._declared(job)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        request: dict[str, object] = {"batch": batch, "no_wait": True}
        # The server closes the request a little before the client gives up on it, so a
        # message it sends at the last moment is not left to an inbox nobody reads.
        margin = min(0.25, timeout_seconds / 4)
        loop = asyncio.get_running_loop()
        patience_end = loop.time() + max(timeout_seconds, 0.0)
        if timeout_seconds - margin > 0.001:
            request["expires"] = int((timeout_seconds - margin) * 1e9)
            deadline = loop.time() + timeout_seconds
        else:
            # No wait at all: the server answers at once, give it a round trip.
            deadline = loop.time() + self._timeout
        arrived: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            arrived.put_nowait(msg)

        deliveries: list[Delivery] = []
        try:
            sub = await self._nc.subscribe(self._nc.new_inbox(), cb=on_msg)
        except Exception as exc:
            if is_unavailable(exc):
                self._unavailable(f"fetch {job!r}", exc)
            raise
        try:
            await self._nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{consumer}",
                json.dumps(request).encode(),
                reply=sub.subject,
            )
            while len(deliveries) < batch:
                if arrived.empty():
                    # A timeout context only when there is something to wait for: messages
                    # of a batch mostly arrive together, and one per message cost more than
                    # the rest of the loop.
                    try:
                        async with asyncio.timeout_at(deadline):
                            msg = await arrived.get()
                    except TimeoutError:
                        break
                else:
                    msg = arrived.get_nowait()
                status = msg.headers.get(_STATUS) if msg.headers else None
                if status is None:
                    deliveries.append(self._delivery(job, msg))
                elif status == "503":
                    raise BackendUnavailable(
                        f"NATS JetStream at {redacted_url(self._nc)}: fetch {job!r}: no "
                        f"responder for consumer {consumer} of {self.stream}"
                    )
                elif status == _HEARTBEAT:
                    continue
                else:
                    # 408: expired; 404: nothing (no wait); 409: max ack pending or max
                    # waiting reached, leadership change, consumer deleted. Refused early,
                    # an empty fetch still takes its timeout: the caller's loop never spins.
                    if not deliveries and status in ("404", "409"):
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout_at(patience_end):
                                await asyncio.Event().wait()
                    break
        except Exception as exc:
            if is_unavailable(exc):
                self._unavailable(f"fetch {job!r}", exc)
            raise
        finally:
            # Synchronously off the client's subscription table first (cancelled or not),
            # so drain()/close() never wait for this inbox.
            if not self._nc.is_closed:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        return deliveries

    @staticmethod
    def _delivery(job: str, msg: Msg) -> Delivery:
        delivery, sequence, enqueued_at = ack_reply_fields(msg)
        return Delivery(
            job=job,
            payload=msg.data,
            delivery=delivery,
            sequence=sequence,
            msg_id=msg.headers.get("Nats-Msg-Id") if msg.headers else None,
            enqueued_at=enqueued_at,
            handle=msg,
        )

    async def settle(self, actions: Sequence[Settle]) -> None:
        """Ack, nak (with its delay), term or in-progress each, in order, on one connection:
        the server sees them in that order."""
        try:
            for action in actions:
                msg = action.delivery.handle
                if not isinstance(msg, Msg):
                    raise TypeError(f"not a JetStream delivery: {action.delivery!r}")
                if action.kind == "ack":
                    await msg.ack()
                elif action.kind == "nak":
                    await msg.nak(delay=action.delay_seconds or None)
                elif action.kind == "term":
                    await msg.term()
                elif action.kind == "progress":
                    await msg.in_progress()
                else:
                    raise ValueError(f"unknown settle kind {action.kind!r}")
        except Exception as exc:
            if is_unavailable(exc):
                self._unavailable("settle", exc)
            raise

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Publish *letter* with ``Nats-Msg-Id: dlq-<job stream seq>`` (at most one entry per
        message). Call it *before* terminating the delivery, so that the terminated
        advisory's copy (:mod:`._advisories`) is the duplicate, not the real envelope.
        The envelope names the job's subject in this engine's stream."""
        letter = attrs.evolve(letter, subject=self.subject(letter.job))
        try:
            await publish_dead_letter(
                self._js,
                subject=self.dlq_subject(letter.job),
                stream=self.dlq_stream,
                letter=letter,
                timeout_seconds=self._timeout,
            )
        except Exception as exc:
            if is_unavailable(exc):
                self._unavailable(f"dead-letter {letter.job!r}", exc)
            raise

    async def dead_letters(self, *, limit: int = 100) -> list[tuple[int, DeadLetter]]:
        """The oldest *limit* dead letters with their DLQ stream sequences as ids."""
        letters: list[tuple[int, DeadLetter]] = []
        try:
            info = await self._js.stream_info(self.dlq_stream)
            seq = info.state.first_seq
            while len(letters) < limit and seq <= info.state.last_seq:
                try:
                    raw = await self._js.get_msg(
                        self.dlq_stream, seq, subject=self._dlq_prefix + ">", next=True
                    )
                except nats.js.errors.NotFoundError:
                    break
                assert raw.seq is not None
                seq = raw.seq + 1
                try:
                    letters.append((raw.seq, DeadLetter.from_json(raw.data or b"")))
                except (ValueError, TypeError, KeyError) as exc:
                    log.warning(
                        "jobs: DLQ message %d is no dead letter: %s", raw.seq, describe(exc)
                    )
        except Exception as exc:
            if is_unavailable(exc):
                self._unavailable("read dead letters", exc)
            raise
        return letters

    async def purge_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        """Delete the dead letters *ids* (all of them with None); how many went."""
        try:
            if ids is None:
                reply = await self._nc.request(
                    f"$JS.API.STREAM.PURGE.{self.dlq_stream}", b"{}", timeout=self._timeout
                )
                answer = json.loads(reply.data)
                if "error" in answer:
                    nats.js.errors.APIError.from_error(answer["error"])
                return int(answer.get("purged", 0))
            removed = 0
            for seq in ids:
                try:
                    removed += bool(await self._js.delete_msg(self.dlq_stream, seq))
                except nats.js.errors.APIError as exc:
                    # Not there (any more): 404, or 10057 "message delete failed" (2.9
                    # says "stream store EOF" past the last sequence). Nothing removed.
                    if exc.code != 404 and exc.err_code != _DELETE_FAILED:
                        raise
            return removed
        except Exception as exc:
            if is_unavailable(exc):
                self._unavailable("purge dead letters", exc)
            raise

    async def run_advisories(self, on_ready: Callable[[], object] | None = None) -> None:
        """Turn max-deliveries and terminated advisories into dead letters
        (:mod:`._advisories`) until :meth:`aclose` or cancellation; *on_ready* is called once
        subscribed. One per driver at a time."""
        await self._advisories.run(on_ready)

    @property
    def advisories_handled(self) -> int:
        return self._advisories.handled

    @property
    def sweeps(self) -> tuple[int, int]:
        """Sweeps completed, and the dead letters they wrote."""
        return self._advisories.sweeps, self._advisories.swept

    async def aclose(self) -> None:
        """Stop :meth:`run_advisories` and wait until it has returned; fail enqueues still
        waiting for their acknowledgement. Fetches leave nothing behind; the connection is the
        caller's to close."""
        await self._pubacks.aclose()
        await self._advisories.stop()
