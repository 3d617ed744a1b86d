"""Wiring a served App's jobs: the engine chosen from the Config, the ``[jobs.NAME]``
overrides, ``rt.jobs``, and the ``jobs`` supervisor with one consumer child per job."""

from __future__ import annotations

import attrs

from .._config import Config
from .._exceptions import ConfigError
from .._runtime import Runtime
from ..services.jobs._driver import JobDriver
from ..services.jobs._embedded import EmbeddedDriver
from ..services.jobs._jobs import Jobs, JobSpec
from ..services.logs._redact import Redactor
from ._app import App


class JetStreamUnavailable(NotImplementedError):
    """``nats_url`` is set but this build has no JetStream job engine to connect with."""


def jetstream_driver(config: Config) -> JobDriver:
    """The JetStream engine for ``config.nats_url``: where the engine plugs in.

    Raises:
        JetStreamUnavailable: always, for now: the JetStream engine is not available in
            this build (unset ``nats_url`` to use the embedded, non-durable engine).
    """
    # The URL itself is not repeated: it may carry credentials (nats://user:pass@host).
    raise JetStreamUnavailable(
        "nats_url is set, but the JetStream engine not available in this build: unset "
        "nats_url to run jobs on the embedded engine (in memory, not durable)"
    )


def job_driver(config: Config) -> JobDriver:
    """The engine *config* asks for: JetStream with ``nats_url``, else the embedded one
    (in this process's memory: queued jobs are lost when it exits)."""
    if config.nats_url:
        return jetstream_driver(config)
    return EmbeddedDriver()


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
    """Install *app*'s jobs as ``rt.jobs`` on the engine *config* names, declared and ready
    for ``enqueue``; None (and nothing installed) when the app declares no jobs.

    The engine closes and ``rt.jobs`` goes when the runtime stops, after every child. The
    consumers are started separately (:meth:`Jobs.child_spec`), so ``on_start`` and HTTP
    handlers may enqueue before they run.

    Raises:
        ConfigError: see :func:`configured_specs`.
        JetStreamUnavailable: ``nats_url`` is set (see :func:`jetstream_driver`).
    """
    specs = configured_specs(app, config)
    if not specs:
        return None
    driver = job_driver(config)
    rt.push_async_callback(driver.aclose)
    jobs = Jobs(driver, specs, redactor=Redactor(config.redact_keys))
    await jobs.declare()
    rt.install_jobs(jobs)
    rt.push_async_callback(_uninstall, rt, jobs)
    return jobs


async def _uninstall(rt: Runtime, jobs: Jobs) -> None:
    rt.uninstall_jobs(jobs)
