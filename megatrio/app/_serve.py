"""Serving an App: the runtime, the HTTP and admin listeners, the app's children, readiness."""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import trio

from .._config import Config
from .._runtime import Runtime, mega_runtime
from .._samples import Sample, SampleSource, gather
from ..nursery._child import ChildContext, current_child
from ..services.http._access import HttpMetrics
from ..services.http._addresses import is_loopback, parse_address
from ..services.http._admin import admin_app
from ..services.http._app_front import app_front
from ..services.http._server import ASGIApp, HttpOptions, serve_http
from ..services.http._sockets import bind_listeners, closing_all
from ..services.logs._redact import Redactor
from ..services.ws._hub import Hub
from ..services.ws._roster import Roster
from ..supervisor import ChildSpec
from ._app import App
from ._jobs import open_jobs
from ._nats import open_bus
from ._stores import start_stores
from ._ws import upgrade_router

if TYPE_CHECKING:
    from ..services.nats._bus import Bus

log = logging.getLogger("megatrio.serve")

JOBS_GRACE_SHARE = 0.8
"""The share of ``grace_seconds`` in-flight job handlers get to finish on a graceful stop."""

_NOT_READY_STATES = frozenset({"starting", "stopping", "restarting"})


@attrs.frozen
class Serving:
    """What ``serve_app`` reports once everything has started."""

    http: tuple[str, ...]
    """Bound public URLs (with the real ports when port 0 was configured)."""
    admin: tuple[str, ...]
    """Bound admin URLs; empty when the admin listener is disabled."""


def not_ready(snapshot: dict[str, Any], path: str) -> list[str]:
    """Paths of the supervisors and children in *snapshot* that are not ready."""
    waiting = [path] if snapshot["state"] != "running" else []
    for child in snapshot["children"]:
        child_path = f"{path}/{child['name']}"
        if child["state"] in _NOT_READY_STATES:
            waiting.append(child_path)
        nested = child.get("supervisor")
        if nested is not None:
            waiting.extend(not_ready(nested, child_path))
    return waiting


class _Readiness:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.started = False

    def __call__(self) -> tuple[bool, list[str]]:
        if self._rt.stopping:
            return False, [f"{self._rt.name} (stopping)"]
        waiting = not_ready(self._rt.snapshot(), self._rt.name)
        if not self.started:
            waiting.append(f"{self._rt.name} (starting)")
        return not waiting, waiting


async def serve_app(
    app: App,
    config: Config,
    *,
    handle_signals: bool = True,
    extra_children: Sequence[ChildSpec] = (),
    jobs_only: bool = False,
    task_status: trio.TaskStatus[Serving] = trio.TASK_STATUS_IGNORED,
) -> bool:
    """Serve *app* under a runtime until stopped (signal, ``app.rt.stop()``) or a fatal error;
    returns whether the stop was forced (see :attr:`Runtime.forced`).

    Every listener — ``config.bind`` and ``config.admin_bind`` — is bound first, before the
    runtime starts: an address that cannot be used fails the whole start, before any store
    opens and before any listener is announced or served. The sockets are closed on every path.

    Start order: the configured stores (Redis, caches with their cleaners, the nonce store;
    see :func:`~megatrio.app._stores.start_stores`), with ``nats_url`` the NATS connection
    (its ``nats`` child) and ``rt.bus`` on it (:func:`~megatrio.app._nats.open_bus`), the
    app's jobs on their engine (``rt.jobs``, on that same connection with JetStream; see
    :func:`~megatrio.app._jobs.open_jobs`), ``app.on_start(rt)``, the
    public HTTP listener, the admin listener (if ``config.admin_bind``), the ``jobs``
    supervisor (one consumer child per declared job), then ``app.children()`` and
    *extra_children*. Reports started with the bound addresses once all are ready. Stops in
    reverse, then ``app.on_stop(rt)``, then resources.

    With *jobs_only* (``megatrio worker``) it runs the stores, ``on_start``/``on_stop``, the
    admin listener and the job consumers, but no public HTTP listener and not
    ``app.children()``.

    Raises:
        ListenError: an address could not be bound; nothing was started (not logged).
        Exception: whatever :func:`mega_runtime` raises for a fatal error (already logged).
    """
    redactor = Redactor(config.redact_keys)
    if config.admin_bind:
        host, _ = parse_address(config.admin_bind)
        if not is_loopback(host):
            log.warning("admin listener %s is not on loopback: it exposes internals", host)
    public_binds = [*config.bind, f"unix:{config.uds}"] if config.uds else list(config.bind)
    if jobs_only:
        public_binds = []
    admin_binds = [config.admin_bind] if config.admin_bind else []
    # Every listener is bound before anything starts or is announced.
    with closing_all(bind_listeners([*public_binds, *admin_binds])) as sockets:
        public, admin = sockets[: len(public_binds)], sockets[len(public_binds) :]
        async with mega_runtime(
            name=app.name,
            grace_seconds=config.grace_seconds,
            handle_signals=handle_signals,
            max_restarts=config.max_restarts,
            period_seconds=config.period_seconds,
            shutdown_delay_seconds=config.shutdown_delay_seconds,
            blocked_loop_warn_seconds=config.blocked_loop_warn_seconds or None,
        ) as rt:
            app._attach(rt)
            rt.push_async_callback(_detach, app)
            readiness = _Readiness(rt)
            http_metrics = app._http_metrics = HttpMetrics()
            redis = await start_stores(rt, config)
            # The bus first: it opens the process's one NATS connection, which the jobs'
            # JetStream engine then shares.
            await open_bus(rt, config, app.name)
            jobs = await open_jobs(rt, app, config)
            await app.on_start(rt)
            rt.push_async_callback(app.on_stop, rt)
            http_urls: object = []
            if not jobs_only:
                options = http_options(config)
                endpoints = app.ws_endpoints()
                if endpoints:
                    # Before the listener, so a handshake never finds it missing; stopped
                    # after it, whose graceful stop has sent every connection 1001 by then.
                    roster = None
                    if redis is not None:
                        roster = Roster(
                            redis,
                            namespace=app.name,
                            ttl_seconds=config.ws_roster_ttl_seconds,
                            refresh_seconds=config.ws_roster_refresh_seconds,
                        )
                    hub = Hub(
                        endpoints,
                        redactor=redactor,
                        bus=_bus_of(rt),
                        roster=roster,
                        namespace=app.name,
                    )
                    await rt.start_child(
                        ChildSpec("ws", hub.run, shutdown_seconds=config.grace_seconds)
                    )
                    app._hub = hub
                    samples = hub.samples
                    rt.metric_sources.add("ws", samples)
                    rt.push_async_callback(_forget_hub, app, rt, samples)
                    options = attrs.evolve(options, upgrade=upgrade_router(hub))
                front = app_front(
                    app.asgi(),
                    readiness,
                    http_metrics,
                    access_log=config.access_log,
                    raw=app._raw_routes,
                )
                http_urls = await rt.start_child(
                    ChildSpec(
                        "http",
                        functools.partial(serve_http_on, options=options),
                        (front, public, "http", config.grace_seconds),
                        shutdown_seconds=config.grace_seconds,
                    )
                )
            admin_urls: object = []
            if admin:
                admin_urls = await rt.start_child(
                    admin_spec(rt, redactor, admin, http_metrics=http_metrics)
                )
            if jobs is not None:
                # One consumer per job under a nested supervisor: a consumer's engine
                # failure restarts that consumer, not the app's other children. In-flight
                # handlers get most of the grace; the rest is for handing back (nak) what is
                # unfinished and for the children stopped after them, within the grace.
                await rt.start_child(
                    jobs.child_spec(shutdown_seconds=config.grace_seconds * JOBS_GRACE_SHARE)
                )
            for spec in (*(() if jobs_only else app.children()), *extra_children):
                await rt.start_child(spec)
            readiness.started = True
            assert isinstance(http_urls, list)
            assert isinstance(admin_urls, list)
            task_status.started(Serving(tuple(http_urls), tuple(admin_urls)))
            await anyio.sleep_forever()
        return rt.forced


ADMIN_GRACE_SECONDS = 1.0
"""The admin listener only answers short introspection requests; its drain is brief."""


def admin_spec(
    rt: Runtime,
    redactor: Redactor,
    sockets: Sequence[socket.socket],
    *,
    opens_after: trio.Event | None = None,
    http_metrics: HttpMetrics | Callable[[], HttpMetrics] | None = None,
    samples: Callable[[], Iterable[Sample]] | None = None,
) -> ChildSpec:
    """The ``admin`` child: the tree and health endpoints of *rt* on *sockets*; ``/metrics``
    has every sample of ``rt.metric_sources`` and those of *samples* (a primary's workers').

    With *opens_after* the child reports started at once but serves only once that event is
    set, and never if it is asked to stop first (a cluster primary opens its admin listener
    only when a worker has loaded the app). It reports the bound URLs only without it.
    """

    def every_sample() -> Iterator[Sample]:
        yield from gather(rt.metric_sources.values())
        if samples is not None:
            yield from samples()

    return ChildSpec(
        "admin",
        _serve_admin,
        (admin_app(rt.snapshot, redactor, http_metrics, every_sample), sockets, opens_after),
        shutdown_seconds=ADMIN_GRACE_SECONDS,
    )


async def _serve_admin(
    asgi: ASGIApp,
    sockets: Sequence[socket.socket],
    opens_after: trio.Event | None,
    *,
    task_status: trio.TaskStatus[list[str] | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    if opens_after is None:
        await serve_http_on(asgi, sockets, "admin", ADMIN_GRACE_SECONDS, task_status=task_status)
        return
    ctx = current_child()
    assert ctx is not None
    task_status.started(None)
    async with trio.open_nursery() as gate:

        async def open_on_stop() -> None:
            await ctx.wait_stopping()
            gate.cancel_scope.cancel()

        gate.start_soon(open_on_stop)
        await opens_after.wait()
        gate.cancel_scope.cancel()
    if not ctx.stopping:
        await serve_http_on(asgi, sockets, "admin", ADMIN_GRACE_SECONDS)


async def serve_http_on(
    asgi: ASGIApp,
    sockets: Sequence[socket.socket],
    label: str,
    graceful_seconds: float,
    *,
    options: HttpOptions | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`serve_http` (with *options*) on listening *sockets* that the caller bound, keeps
    and closes.

    Each run serves on duplicates of the sockets, which it owns and closes, so a restarted
    child serves on the same addresses without binding again. Reports started with the bound
    URLs, as :func:`serve_http` does. Once this child is asked to stop, the caller's sockets
    are closed too: the listening then ends when the server closes its duplicates, and new
    connections are refused during the drain instead of queueing unserved.
    """
    ctx = current_child()
    fds: list[int] = []
    try:
        for sock in sockets:
            fds.append(os.dup(sock.fileno()))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    # From here serve_http owns the duplicates: it wraps each fd:// in a socket it closes.
    binds = [f"fd://{fd}" for fd in fds]
    async with trio.open_nursery() as nursery:
        if ctx is not None:
            nursery.start_soon(_close_when_stopping, ctx, sockets)
        await serve_http(
            asgi, binds, label, graceful_seconds, options=options, task_status=task_status
        )
        nursery.cancel_scope.cancel()


async def _close_when_stopping(ctx: ChildContext, sockets: Sequence[socket.socket]) -> None:
    await ctx.wait_stopping()
    for sock in sockets:
        sock.close()


def http_options(config: Config) -> HttpOptions:
    """The public listener's serving options from *config*."""
    return HttpOptions(
        keep_alive_timeout_seconds=config.keep_alive_timeout_seconds,
        front=config.http_front,
        max_concurrent_connections=config.max_concurrent_connections,
        request_timeout_seconds=config.request_timeout_seconds,
        max_body_bytes=config.max_body_bytes,
        max_header_count=config.max_header_count,
        max_head_bytes=config.max_head_bytes,
        root_path=config.root_path,
        forwarded_allow_ips=config.forwarded_allow_ips,
        certfile=config.certfile,
        keyfile=config.keyfile,
    )


def _bus_of(rt: Runtime) -> Bus | None:
    """The bus when ``nats_url`` opened one: the hub's cross-node fan-out."""
    try:
        return rt.bus
    except LookupError:
        return None


async def _forget_hub(app: App, rt: Runtime, samples: SampleSource) -> None:
    rt.metric_sources.discard("ws", samples)
    app._hub = None


async def _detach(app: App) -> None:
    app._attach(None)
