"""The contract between job consumers and a queue engine.

An engine — JetStream (``_jetstream.py``) or the embedded in-process queue (``_embedded.py``) —
implements :class:`JobDriver`. The consumers (``_consumer.py``) and the retry decisions
(``megatrio/_policy/_jobs.py``) know nothing else of it. Calls are made per batch: one
:meth:`~JobDriver.fetch` for up to the consumer's free slots, one :meth:`~JobDriver.settle` for
every acknowledgement due, so a bridged engine crosses its event-loop boundary once per batch.

Delivery is at-least-once: a message is acknowledged only after its handler returned, and
every message fetched and not acknowledged is delivered again (after a ``nak`` at once or after
its delay; after a lost worker, once its ack wait expires).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol

import attrs

from ..._policy._checks import check_count, check_seconds

SUBJECT_PREFIX = "jobs."
"""Every engine publishes a job's messages on ``jobs.<name>``, so a dead letter built by the
consumer names the same subject the engine used."""


def job_subject(job: str) -> str:
    """The subject *job*'s messages are published on: ``jobs.<name>``."""
    return SUBJECT_PREFIX + job


_TOKEN = re.compile(r"[A-Za-z0-9_-]+\Z")
_MAX_JOB = 128


def check_job_name(name: object) -> str:
    """*name* if it can be a job's name, else ValueError naming it.

    A job name becomes NATS subject tokens (and a JetStream consumer name): dot-separated
    tokens of letters, digits, ``_`` or ``-``; spaces, ``*`` and ``>`` would change what a
    subject matches.
    """
    if (
        not isinstance(name, str)
        or len(name) > _MAX_JOB
        or not all(_TOKEN.match(token) for token in name.split("."))
    ):
        raise ValueError(
            f"invalid job name {name!r}: expected dot-separated tokens of letters, digits, '_' "
            f"or '-', at most {_MAX_JOB} characters (NATS subjects allow no spaces, '*' or '>')"
        )
    return name


def _check_name(instance: object, attribute: object, value: str) -> None:
    check_job_name(value)


def _check_positive_count(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    check_count(attribute.name, value, minimum=1)


def _check_delays(instance: object, attribute: object, value: tuple[float, ...]) -> None:
    for delay in value:
        check_seconds("retry_delays", delay, allow_inf=False)


def _check_ack_wait(instance: object, attribute: object, value: float) -> None:
    check_seconds("ack_wait_seconds", value, allow_zero=False, allow_inf=False)


def _check_cap(instance: object, attribute: object, value: float) -> None:
    check_seconds("max_in_progress_seconds", value)


@attrs.frozen
class JobSettings:
    """One job's delivery settings, as the engine applies them.

    Validated on construction (``ValueError``/``TypeError`` naming the field), so an engine
    and a consumer never see an impossible setting.
    """

    name: str = attrs.field(validator=_check_name)
    """The job's name (``email.send``); its subject is derived from it by the engine."""
    max_deliver: int = attrs.field(default=5, validator=_check_positive_count)
    """Deliveries at most, the first included; then the message goes to the dead-letter queue."""
    retry_delays: tuple[float, ...] = attrs.field(
        default=(1.0, 5.0, 30.0), converter=tuple, validator=_check_delays
    )
    """Delay before the 2nd, 3rd, ... delivery; the last one repeats."""
    ack_wait_seconds: float = attrs.field(default=30.0, validator=_check_ack_wait)
    """How long a delivery may go unacknowledged (without an in-progress heartbeat) before the
    engine delivers it again."""
    concurrency: int = attrs.field(default=8, validator=_check_positive_count)
    """Handlers of this job running at once in one consumer; never exceeded."""
    max_in_progress_seconds: float = attrs.field(default=600.0, validator=_check_cap)
    """The cap on how long heartbeats may extend one delivery in total."""


class Delivery(NamedTuple):
    """One delivery of a message to a consumer."""

    job: str
    payload: bytes
    delivery: int
    """1 for the first delivery."""
    sequence: int
    """The message's sequence number in the job stream (stable across redeliveries)."""
    msg_id: str | None
    """The de-duplication id it was enqueued with, if any."""
    enqueued_at: float
    """Wall-clock time (``time.time()``) it was enqueued."""
    handle: object
    """The engine's own message object; opaque to everyone else."""


class Settle(NamedTuple):
    """An acknowledgement to send: ``ack`` (done), ``nak`` (deliver again after
    *delay_seconds*), ``term`` (never deliver again), ``progress`` (still working: restart the
    ack wait)."""

    kind: Literal["ack", "nak", "term", "progress"]
    delivery: Delivery
    delay_seconds: float = 0.0


@attrs.frozen
class DeadLetter:
    """What the dead-letter queue keeps of a message that will not be delivered again."""

    job: str
    subject: str
    sequence: int
    """Its sequence number in the job stream."""
    deliveries: int
    failed_at: float
    """Wall-clock time it was dead-lettered."""
    reason: str
    """``"max deliveries"``, ``"no retry"``, ``"undecodable payload"``, or ``"worker lost"``
    (the worker of its last delivery never settled it: crashed, killed, timed out)."""
    error_type: str | None
    error_message: str | None
    traceback: str | None
    """Capped in frames and characters, redacted; None when no handler error was seen."""
    payload: bytes

    def to_json(self) -> bytes:
        """The envelope as stored; the payload as text when it is UTF-8, else hex."""
        fields = attrs.asdict(self)
        payload: bytes = fields.pop("payload")
        try:
            fields["payload"] = payload.decode()
            fields["payload_encoding"] = "utf-8"
        except UnicodeDecodeError:
            fields["payload"] = payload.hex()
            fields["payload_encoding"] = "hex"
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DeadLetter:
        fields: dict[str, Any] = json.loads(data)
        encoding = fields.pop("payload_encoding", "utf-8")
        text: str = fields.pop("payload")
        payload = bytes.fromhex(text) if encoding == "hex" else text.encode()
        return cls(payload=payload, **fields)


class JobDriver(Protocol):
    """A queue engine, as the consumers and ``rt.jobs`` use it."""

    async def declare(self, jobs: Sequence[JobSettings]) -> None:
        """Create (or update) what the engine needs for *jobs*: streams, consumers, the
        dead-letter queue. Idempotent."""

    async def enqueue(self, job: str, payload: bytes, *, msg_id: str | None = None) -> int:
        """Store a message for *job*; returns its sequence number. A second enqueue with the
        same *msg_id* within the engine's de-duplication window stores nothing and returns the
        first one's sequence.

        Raises:
            LookupError: *job* was not declared.
            megatrio.BackendUnavailable: the engine cannot be reached.
        """

    async def fetch(self, job: str, batch: int, *, timeout_seconds: float) -> list[Delivery]:
        """Up to *batch* deliveries of *job* (never more), waiting at most *timeout_seconds*
        for the first; an empty list when none came."""

    async def settle(self, actions: Sequence[Settle]) -> None:
        """Send every acknowledgement in *actions*, in order."""

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Store *letter* in the dead-letter queue (at most once per job stream sequence)."""

    async def dead_letters(self, *, limit: int = 100) -> list[tuple[int, DeadLetter]]:
        """The oldest *limit* dead letters with their ids."""

    async def purge_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        """Remove the dead letters *ids* (all with None); how many went."""

    async def aclose(self) -> None:
        """Release the engine's resources; pending fetches end."""
