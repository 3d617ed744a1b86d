"""Wiring a served App's jobs: the engine chosen from the Config, the ``[jobs.NAME]``
overrides, ``rt.jobs``, and the ``jobs`` supervisor with one consumer child per job."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from .._config import Config
from .._exceptions import ConfigError
from .._runtime import Runtime
from .._samples import SampleSource
from ..services.jobs._driver import JobDriver
from ..services.jobs._embedded import EmbeddedDriver
from ..services.jobs._jobs import Jobs, JobSpec
from ..services.logs._redact import Redactor
from ..supervisor import ChildSpec
from ._app import App
from ._nats import open_connection

if TYPE_CHECKING:
    from ..services.jobs._jetstream import JetStreamDriver
    from ..services.nats._connection import NatsConnection


@contextlib.asynccontextmanager
async def open_job_engine(
    config: Config, namespace: str, *, connection: NatsConnection | None = None
) -> AsyncIterator[JobEngine]:
    """The job engine *config* asks for, open for the block.

    With *connection* (an open NATS connection the caller keeps and closes), the JetStream
    engine on it. Otherwise with ``nats_url``: a NATS connection of its own (nats-py on its
    own asyncio loop in a thread), closed with the block, and the JetStream engine on it.
    Either way its streams are named after *namespace* (the app's name), so two apps on one
    NATS never share a stream. Without either: the embedded engine, in this process's memory
    (not durable: queued jobs are lost when the process exits).

    Raises:
        megatrio.BackendUnavailable: NATS cannot be reached.
    """
    if connection is not None:
        async with _jetstream_engine(connection, namespace) as engine:
            yield engine
        return
    if not config.nats_url:
        embedded = EmbeddedDriver()
        try:
            yield JobEngine(embedded, None, None)
        finally:
            await embedded.aclose()
        return
    # nats-py is imported only by a process that uses NATS.
    from ..services.nats._connection import open_nats

    async with (
        open_nats(config.nats_url, name=namespace) as conn,
        _jetstream_engine(conn, namespace) as engine,
    ):
        yield engine


@contextlib.asynccontextmanager
async def _jetstream_engine(conn: NatsConnection, namespace: str) -> AsyncIterator[JobEngine]:
    """The JetStream engine on *conn*, which outlives the block (its caller closes it)."""
    from ..services.jobs._bridged import BridgedDriver
    from ..services.jobs._jetstream import JetStreamDriver

    async def new_engine(client: Any) -> JetStreamDriver:
        # Built on the connection's loop: its asyncio objects belong there.
        return JetStreamDriver(client, namespace=namespace)

    engine = await conn.run(new_engine, conn.client)
    driver = BridgedDriver(conn, engine)
    try:
        yield JobEngine(driver, conn, engine)
    finally:
        with anyio.CancelScope(shield=True):
            await driver.aclose()


@attrs.frozen
class JobEngine:
    """An open job engine: the driver consumers use, and for JetStream its connection and the
    asyncio-side engine (whose dead-letter advisories need a task of their own)."""

    driver: JobDriver
    connection: NatsConnection | None
    jetstream: JetStreamDriver | None


def configured_specs(app: App, config: Config, source: str = "configuration") -> list[JobSpec]:
    """*app*'s declared jobs with the ``[jobs.NAME]`` overrides of *config* applied.

    Raises:
        ConfigError: a table names no declared job, or an override is invalid.
    """
    specs = list(app.job_specs())
    declared = {spec.name: spec for spec in specs}
    for name in config.jobs:
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise ConfigError(
                f"{source}: [jobs.{name}] configures no job of app {app.name!r} (declared: {known})"
            )
    result = []
    for spec in specs:
        table = config.jobs.get(spec.name)
        if table is not None and table.overrides():
            try:
                settings = attrs.evolve(spec.settings, **table.overrides())
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{source}: jobs.{spec.name}: {exc}") from None
            spec = attrs.evolve(spec, settings=settings)
        result.append(spec)
    return result


async def open_jobs(rt: Runtime, app: App, config: Config) -> Jobs | None:
    """Install *app*'s jobs as ``rt.jobs`` on the engine *config* names
    (:func:`open_job_engine`), declared and ready for ``enqueue``; None (and nothing opened)
    when the app declares no jobs.

    With ``nats_url``, the JetStream engine runs on the runtime's one NATS connection
    (:func:`~megatrio.app._nats.open_connection`: the bus's, opened here if nothing opened it
    yet, with its ``nats`` child), and the supervised child ``jobs-advisories``
    (dead-lettering what JetStream gave up on — a job whose worker died on its final
    delivery) is started too. The engine closes and ``rt.jobs`` goes when the runtime stops,
    after every child and before the connection. The consumers are started separately
    (:meth:`Jobs.child_spec`), so ``on_start`` and HTTP handlers may enqueue before they run.

    Raises:
        ConfigError: see :func:`configured_specs`.
        megatrio.BackendUnavailable: NATS cannot be reached.
    """
    specs = configured_specs(app, config)
    if not specs:
        return None
    connection = await open_connection(rt, config, app.name)
    engine = await rt.enter_async_context(open_job_engine(config, app.name, connection=connection))
    jobs = Jobs(engine.driver, specs, redactor=Redactor(config.redact_keys))
    await jobs.declare()
    if engine.connection is not None and engine.jetstream is not None:
        await rt.start_child(
            ChildSpec("jobs-advisories", _serve_advisories, (engine.connection, engine.jetstream))
        )
    rt.install_jobs(jobs)
    samples = jobs.samples
    rt.metric_sources.add("jobs", samples)
    rt.push_async_callback(_uninstall, rt, jobs, samples)
    return jobs


async def _serve_advisories(
    conn: NatsConnection,
    engine: JetStreamDriver,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """JetStream's max-deliveries and terminated advisories turned into dead letters, on the
    connection's loop; ready once subscribed."""
    subscribed = anyio.Event()

    def on_ready() -> None:  # on the connection's loop
        conn.bridge.call_soon_in_host(subscribed.set)

    async with anyio.create_task_group() as tg:
        tg.start_soon(conn.run, engine.run_advisories, on_ready)
        await subscribed.wait()
        task_status.started()


async def _uninstall(rt: Runtime, jobs: Jobs, samples: SampleSource) -> None:
    rt.metric_sources.discard("jobs", samples)
    rt.uninstall_jobs(jobs)
