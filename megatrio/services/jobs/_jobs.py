"""Declaring jobs (:class:`JobSpec`) and enqueueing them (:class:`Jobs`, ``app.jobs``)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, final

import attrs

from ..._samples import Sample
from ...supervisor import ChildSpec, Strategy, Supervisor
from ..logs._redact import Redactor
from ._codec import JSON, Codec, encode_payload
from ._driver import DeadLetter, JobDriver, JobSettings
from ._stats import JobStats, job_samples

Handler = Callable[[Any], Awaitable[object]]
"""``async def handler(payload)``: the decoded payload in, anything out (ignored)."""


def _check_handler(instance: object, attribute: object, value: Handler) -> None:
    if not callable(value):
        raise TypeError(f"a job handler must be an async callable, got {value!r}")


def _as_exception_types(value: Iterable[type[BaseException]]) -> tuple[type[BaseException], ...]:
    types = tuple(value)
    for tp in types:
        if not (isinstance(tp, type) and issubclass(tp, Exception)):
            raise TypeError(f"no_retry takes Exception subclasses, got {tp!r}")
    return types


@attrs.frozen
class JobSpec:
    """One declared job: its *handler*, its delivery *settings*, the exception types that are
    never retried (*no_retry*: the message is dead-lettered at once) and its payload *codec*
    (JSON by default).

    *settings* defaults to ``JobSettings(name)``.

    Raises:
        ValueError: ``settings.name`` is not *name*, or *name* is not a valid job name.
        TypeError: *handler* is not callable, or *no_retry* holds something that is not an
            ``Exception`` subclass.
    """

    name: str
    handler: Handler = attrs.field(validator=_check_handler)
    settings: JobSettings = attrs.field(
        default=attrs.Factory(lambda self: JobSettings(self.name), takes_self=True)
    )
    no_retry: tuple[type[BaseException], ...] = attrs.field(
        default=(), converter=_as_exception_types
    )
    codec: Codec = JSON

    @settings.validator
    def _check_settings(self, attribute: object, value: JobSettings) -> None:
        if not isinstance(value, JobSettings):
            raise TypeError(f"settings must be a megatrio.JobSettings, got {value!r}")
        if value.name != self.name:
            raise ValueError(f"job {self.name!r} has settings for {value.name!r}")


@final
class Jobs:
    """The declared jobs of a runtime, on one engine (*driver*): ``rt.jobs``, ``app.jobs``.

    Built by ``megatrio run`` for an App's ``@app.job`` handlers; when embedding, build one
    yourself, ``await jobs.declare()``, and run its consumers with
    ``await rt.start_child(jobs.child_spec())``.

    Raises:
        ValueError: two specs share a name.
    """

    def __init__(
        self, driver: JobDriver, specs: Iterable[JobSpec], *, redactor: Redactor | None = None
    ) -> None:
        self.driver = driver
        self.redactor = redactor or Redactor()
        self._specs: dict[str, JobSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"job {spec.name!r} is declared twice")
            self._specs[spec.name] = spec
        self._stats = {name: JobStats() for name in self._specs}

    def samples(self) -> Iterator[Sample]:
        """Per job: deliveries handled by outcome, enqueued, in flight (a source for
        ``Runtime.metric_sources``; ``megatrio run`` registers it as ``jobs``)."""
        return job_samples(sorted(self._stats.items()))

    @property
    def names(self) -> list[str]:
        """The declared job names, sorted."""
        return sorted(self._specs)

    def spec(self, name: str) -> JobSpec:
        """The declaration of job *name*.

        Raises:
            LookupError: no such job (the message lists the declared ones).
        """
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(self.names) or "none"
            raise LookupError(f"no job {name!r} is declared (declared: {known})") from None

    async def declare(self) -> None:
        """Create what the engine needs for every declared job. Idempotent."""
        await self.driver.declare([spec.settings for spec in self._specs.values()])

    async def enqueue(self, name: str, payload: Any, *, msg_id: str | None = None) -> int:
        """Queue *payload* for job *name*, encoded by the job's codec; returns its sequence
        number in the job's stream. A second enqueue with the same *msg_id* within the
        engine's de-duplication window queues nothing and returns the first one's sequence.

        The message is handled at least once, by some consumer, after this returns.

        Raises:
            LookupError: no job *name* is declared (the message lists the declared ones).
            TypeError / ValueError: the codec cannot encode *payload* (the job is named).
            megatrio.BackendUnavailable: the engine cannot be reached.
        """
        spec = self.spec(name)
        data = encode_payload(spec.codec, name, payload)
        sequence = await self.driver.enqueue(name, data, msg_id=msg_id)
        self._stats[name].enqueued += 1
        return sequence

    async def dead_letters(self, *, limit: int = 100) -> list[tuple[int, DeadLetter]]:
        """The oldest *limit* dead letters, with the ids :meth:`purge_dead_letters` takes."""
        return await self.driver.dead_letters(limit=limit)

    async def purge_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        """Remove the dead letters *ids* (all of them with None); returns how many went."""
        return await self.driver.purge_dead_letters(ids)

    def child_spec(self, name: str = "jobs", *, shutdown_seconds: float = 30.0) -> ChildSpec:
        """A supervised child running one consumer child per declared job (named after the
        job) under a one-for-one supervisor *name*.

        Each consumer gets *shutdown_seconds* to let its in-flight handlers finish when
        stopped; what is unfinished then is cancelled and released to another worker.
        """
        from ._consumer import consumer_spec

        children = [
            consumer_spec(
                spec,
                self.driver,
                redactor=self.redactor,
                shutdown_seconds=shutdown_seconds,
                stats=self._stats[spec.name],
            )
            for spec in self._specs.values()
        ]
        supervisor = Supervisor(children, strategy=Strategy.ONE_FOR_ONE, name=name)
        return supervisor.child_spec(name, shutdown_seconds=math.inf)

    def __repr__(self) -> str:
        return f"<Jobs {', '.join(self.names) or 'none'} on {self.driver!r}>"
