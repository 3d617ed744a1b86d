"""Serving an App: the runtime, the HTTP and admin listeners, the app's children, readiness."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import anyio
import attrs
import trio

from ._config import Config, is_loopback, parse_address
from ._runtime import Runtime, mega_runtime
from ._stores import open_stores
from .app import App
from .services._admin import admin_app
from .services._http import HttpOptions, health_front, serve_http
from .services._redact import Redactor
from .supervisor import ChildSpec

log = logging.getLogger("megatrio.serve")

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
    task_status: trio.TaskStatus[Serving] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* under a runtime until stopped (signal, ``app.rt.stop()``) or a fatal error.

    Start order: the configured stores (Redis, caches with their cleaners, the nonce store;
    see :func:`~megatrio._stores.open_stores`), ``app.on_start(rt)``, the public HTTP
    listener, the admin listener (if ``config.admin_bind``), then ``app.children()`` and
    *extra_children*. Reports started with the bound addresses once all are ready. Stops in
    reverse, then ``app.on_stop(rt)``, then resources.

    Raises whatever :func:`mega_runtime` raises for a fatal error (already logged).
    """
    redactor = Redactor(config.redact_keys)
    if config.admin_bind:
        host, _ = parse_address(config.admin_bind)
        if not is_loopback(host):
            log.warning("admin listener %s is not on loopback: it exposes internals", host)
    async with mega_runtime(
        name=app.name,
        grace_seconds=config.grace_seconds,
        handle_signals=handle_signals,
        max_restarts=config.max_restarts,
        period_seconds=config.period_seconds,
    ) as rt:
        app._attach(rt)
        rt.push_async_callback(_detach, app)
        readiness = _Readiness(rt)
        await open_stores(rt, config)
        await app.on_start(rt)
        rt.push_async_callback(app.on_stop, rt)
        front = health_front(app.asgi(), readiness)
        binds = (*config.bind, f"unix:{config.uds}") if config.uds else config.bind
        http_urls = await rt.start_child(
            ChildSpec(
                "http",
                functools.partial(serve_http, options=http_options(config)),
                (front, binds, "http", config.grace_seconds),
                shutdown_seconds=config.grace_seconds,
            )
        )
        admin_urls: object = []
        if config.admin_bind:
            admin_urls = await rt.start_child(
                ChildSpec(
                    "admin",
                    serve_http,
                    (admin_app(rt.snapshot, redactor), [config.admin_bind], "admin", 1.0),
                    shutdown_seconds=1.0,
                )
            )
        for spec in (*app.children(), *extra_children):
            await rt.start_child(spec)
        readiness.started = True
        assert isinstance(http_urls, list)
        assert isinstance(admin_urls, list)
        task_status.started(Serving(tuple(http_urls), tuple(admin_urls)))
        await anyio.sleep_forever()


def http_options(config: Config) -> HttpOptions:
    """The public listener's serving options from *config*."""
    return HttpOptions(
        keep_alive_timeout_seconds=config.keep_alive_timeout_seconds,
        max_concurrent_connections=config.max_concurrent_connections,
        root_path=config.root_path,
        forwarded_allow_ips=config.forwarded_allow_ips,
        certfile=config.certfile,
        keyfile=config.keyfile,
    )


async def _detach(app: App) -> None:
    app._attach(None)
