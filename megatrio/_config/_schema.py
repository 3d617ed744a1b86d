"""The configuration schema: :class:`Config`, :class:`CacheConfig`, :class:`JobConfig` and the
driver-kind enums.

Each field carries its parser and a one-line description in its metadata
(``{"parse": ..., "doc": ...}``); :func:`parse_setting` applies a field's parser, and
:class:`Config` runs every field through it on construction, so a directly built ``Config`` is
checked exactly as a loaded one. Rules across keys (``certfile`` with ``keyfile``, ...) are
checked in ``Config.__attrs_post_init__``. Loading from files, the environment and flags is
in :mod:`._loading`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

from .._exceptions import ConfigError
from ..services.http._front import HttpFront
from ..services.logs._levels import LogFormat, LogLevel
from . import _parsers as parse


def _meta(parser: Callable[[Any, bool], Any], doc: str) -> dict[str, Any]:
    return {"parse": parser, "doc": doc}


class CacheDriverKind(enum.Enum):
    """Where a cache keeps its entries."""

    MEMORY = "memory"
    FILE = "file"
    REDIS = "redis"


class NonceDriverKind(enum.Enum):
    """Where the replay-protection store keeps nonces."""

    MEMORY = "memory"
    REDIS = "redis"


@attrs.frozen(kw_only=True)
class CacheConfig:
    """One ``[cache.<alias>]`` table."""

    driver: CacheDriverKind = attrs.field(
        default=CacheDriverKind.MEMORY,
        metadata=_meta(parse.one_of(CacheDriverKind), "memory|file|redis"),
    )
    max_entries: int = attrs.field(
        default=10_000, metadata=_meta(parse.count(1), "entry cap (memory, file)")
    )
    max_bytes: int = attrs.field(
        default=0, metadata=_meta(parse.count(0), "value-bytes cap (memory, file); 0: none")
    )
    path: str = attrs.field(
        default="",
        metadata=_meta(parse.path, "file driver directory (default .megatrio/cache/ALIAS)"),
    )
    sweep_interval_seconds: float = attrs.field(
        default=60.0, metadata=_meta(parse.positive_seconds, "how often expired entries are swept")
    )


def _optional(parser: Callable[[Any, bool], Any]) -> Callable[[Any, bool], Any]:
    # None means "not overridden": what the job declared stays.
    def parse_optional(value: Any, from_text: bool) -> Any:
        return None if value is None else parser(value, from_text)

    return parse_optional


@attrs.frozen(kw_only=True)
class JobConfig:
    """One ``[jobs.<name>]`` table: overrides of what ``@app.job(name, ...)`` declared; a key
    left out (None) keeps the declared value."""

    max_deliver: int | None = attrs.field(
        default=None, metadata=_meta(_optional(parse.count(1)), "deliveries at most, then DLQ")
    )
    retry_delays: tuple[float, ...] | None = attrs.field(
        default=None,
        metadata=_meta(_optional(parse.delays), "seconds before each retry; the last repeats"),
    )
    ack_wait_seconds: float | None = attrs.field(
        default=None,
        metadata=_meta(_optional(parse.positive_seconds), "unacked this long: redelivered"),
    )
    concurrency: int | None = attrs.field(
        default=None, metadata=_meta(_optional(parse.count(1)), "handlers at once per process")
    )

    def overrides(self) -> dict[str, Any]:
        """The keys this table sets, with their values."""
        return {
            field.name: getattr(self, field.name)
            for field in attrs.fields(JobConfig)
            if getattr(self, field.name) is not None
        }


def _jobs(value: Any, from_text: bool) -> dict[str, JobConfig]:
    if from_text and isinstance(value, str):
        raise ValueError("jobs are configured in the config file, as [jobs.NAME] tables")
    if not isinstance(value, dict):
        raise ValueError(f"expected tables [jobs.NAME], got {value!r}")
    fields = attrs.fields_dict(JobConfig)
    jobs: dict[str, JobConfig] = {}
    for name, table in value.items():
        if isinstance(table, JobConfig):
            jobs[name] = table
            continue
        if not isinstance(name, str) or not name:
            raise ValueError(f"job name must be a non-empty string, got {name!r}")
        if not isinstance(table, dict):
            raise ValueError(f"jobs.{name}: expected a table, got {table!r}")
        values = {}
        for key, raw in table.items():
            field = fields.get(key)
            if field is None:
                known = ", ".join(fields)
                raise ValueError(f"jobs.{name}: unknown key {key!r} (known keys: {known})")
            try:
                values[key] = field.metadata["parse"](raw, from_text)
            except ValueError as exc:
                raise ValueError(f"jobs.{name}.{key}: {exc}") from None
        jobs[name] = JobConfig(**values)
    return jobs


def _as_job_configs(value: Any) -> Any:
    """Plain tables built into :class:`JobConfig` (``Config(jobs={"x": {...}})``); a bad value
    is passed on for validation to reject, with the usual ConfigError."""
    try:
        return _jobs(value, False)
    except ValueError:
        return value


def _caches(value: Any, from_text: bool) -> dict[str, CacheConfig]:
    if from_text and isinstance(value, str):
        raise ValueError("caches are configured in the config file, as [cache.ALIAS] tables")
    if not isinstance(value, dict):
        raise ValueError(f"expected tables [cache.ALIAS], got {value!r}")
    fields = attrs.fields_dict(CacheConfig)
    caches: dict[str, CacheConfig] = {}
    for alias, table in value.items():
        if isinstance(table, CacheConfig):
            caches[alias] = table
            continue
        if not isinstance(alias, str) or not alias or ":" in alias:
            raise ValueError(f"cache alias must be a non-empty name without ':', got {alias!r}")
        if not isinstance(table, dict):
            raise ValueError(f"cache.{alias}: expected a table, got {table!r}")
        values = {}
        for key, raw in table.items():
            field = fields.get(key)
            if field is None:
                known = ", ".join(fields)
                raise ValueError(f"cache.{alias}: unknown key {key!r} (known keys: {known})")
            try:
                values[key] = field.metadata["parse"](raw, from_text)
            except ValueError as exc:
                raise ValueError(f"cache.{alias}.{key}: {exc}") from None
        caches[alias] = CacheConfig(**values)
    return caches


def _with_default_cache(value: Any) -> Any:
    """*value* with the implicit memory ``default`` cache first, unless it defines its own.

    ``app.cache()`` means ``app.cache("default")``: declaring ``[cache.pages]`` must not take
    that away. Anything but a table is passed on for validation to reject.
    """
    if isinstance(value, dict) and "default" not in value:
        return {"default": CacheConfig(), **value}
    return value


@attrs.frozen(kw_only=True)
class Config:
    """Everything ``megatrio run`` reads. Build it with :func:`load_config`."""

    bind: tuple[str, ...] = attrs.field(
        default=("127.0.0.1:8000",),
        metadata=_meta(parse.addresses, "public listeners, HOST:PORT (port 0: any free) or fd://N"),
    )
    admin_bind: str = attrs.field(
        default="127.0.0.1:8001",
        metadata=_meta(parse.optional_address, "admin listener (/_megatrio/*); empty disables it"),
    )
    grace_seconds: float = attrs.field(
        default=30.0, metadata=_meta(parse.seconds, "bound on a graceful stop")
    )
    shutdown_delay_seconds: float = attrs.field(
        default=0.0,
        metadata=_meta(
            parse.finite_seconds,
            "on a stop, keep serving this long while /readyz is 503 (within the grace)",
        ),
    )
    blocked_loop_warn_seconds: float = attrs.field(
        default=2.0,
        metadata=_meta(
            parse.finite_seconds, "log which child blocks the event loop this long; 0: off"
        ),
    )
    uds: str = attrs.field(
        default="", metadata=_meta(parse.socket_path, "also listen on this Unix socket path")
    )
    http_front: HttpFront = attrs.field(
        default=HttpFront.FAST,
        metadata=_meta(
            parse.one_of(HttpFront), "fast or hypercorn: who serves plain HTTP/1.1 (TLS: hypercorn)"
        ),
    )
    keep_alive_timeout_seconds: float = attrs.field(
        default=5.0, metadata=_meta(parse.positive_seconds, "idle keep-alive connections close")
    )
    max_concurrent_connections: int = attrs.field(
        default=0, metadata=_meta(parse.count(0), "past this many: 503 (0: no limit)")
    )
    request_timeout_seconds: float = attrs.field(
        default=10.0,
        metadata=_meta(
            parse.positive_seconds, "fast front: a request head, or a body pause, past this: 408"
        ),
    )
    max_body_bytes: int = attrs.field(
        default=0, metadata=_meta(parse.count(0), "fast front: a request body past this: 413")
    )
    max_header_count: int = attrs.field(
        default=100, metadata=_meta(parse.count(0), "fast front: more request headers: 431")
    )
    max_head_bytes: int = attrs.field(
        default=64 * 1024,
        metadata=_meta(parse.count(0), "fast front: a request head past this size: 431"),
    )
    root_path: str = attrs.field(
        default="", metadata=_meta(parse.root_path, "path prefix the app is mounted under")
    )
    forwarded_allow_ips: tuple[str, ...] = attrs.field(
        default=(), metadata=_meta(parse.trusted_peers, "proxies trusted for X-Forwarded-*")
    )
    certfile: str = attrs.field(
        default="", metadata=_meta(parse.path, "TLS certificate chain (PEM), with keyfile")
    )
    keyfile: str = attrs.field(default="", metadata=_meta(parse.path, "TLS private key (PEM)"))
    max_restarts: int = attrs.field(
        default=3, metadata=_meta(parse.count(0), "root supervisor intensity: restarts ...")
    )
    period_seconds: float = attrs.field(
        default=5.0, metadata=_meta(parse.positive_seconds, "... within this many seconds")
    )
    log_level: LogLevel = attrs.field(
        default=LogLevel.INFO, metadata=_meta(parse.one_of(LogLevel), "minimum level logged")
    )
    log_format: LogFormat = attrs.field(
        default=LogFormat.AUTO, metadata=_meta(parse.one_of(LogFormat), "auto, json or console")
    )
    redact_keys: tuple[str, ...] = attrs.field(
        default=(), metadata=_meta(parse.strings, "extra keys whose values are masked in logs")
    )
    workers: int = attrs.field(
        default=1, metadata=_meta(parse.count(1), "worker processes; 1 serves in-process")
    )
    worker_max_restarts: int = attrs.field(
        default=4, metadata=_meta(parse.count(0), "rapid worker crashes tolerated ...")
    )
    worker_period_seconds: float = attrs.field(
        default=10.0, metadata=_meta(parse.positive_seconds, "... within this many seconds")
    )
    worker_min_uptime_seconds: float = attrs.field(
        default=1.0, metadata=_meta(parse.seconds, "a crash after less uptime is rapid")
    )
    redis_url: str = attrs.field(
        default="", metadata=_meta(parse.url, "redis://HOST:PORT/DB for Redis-backed stores")
    )
    redis_max_connections: int = attrs.field(
        default=2,
        metadata=_meta(parse.count(1), "connections the Redis client opens at most (pipelined)"),
    )
    access_log: bool = attrs.field(
        default=True,
        metadata=_meta(parse.boolean, "one log record per HTTP request (megatrio.access)"),
    )
    ws_roster_ttl_seconds: float = attrs.field(
        default=30.0,
        metadata=_meta(
            parse.positive_seconds, "a WebSocket roster entry outlives its node's last refresh"
        ),
    )
    ws_roster_refresh_seconds: float = attrs.field(
        default=10.0,
        metadata=_meta(parse.positive_seconds, "how often a node refreshes its roster entries"),
    )
    cache: dict[str, CacheConfig] = attrs.field(
        factory=lambda: {"default": CacheConfig()},
        converter=_with_default_cache,
        metadata=_meta(_caches, "[cache.ALIAS] tables; 'default' (memory) is always there"),
    )
    nats_url: str = attrs.field(
        default="",
        metadata=_meta(
            parse.nats_url,
            "nats://HOST:PORT: the bus and JetStream jobs; empty: no bus, embedded jobs",
        ),
    )
    jobs: dict[str, JobConfig] = attrs.field(
        factory=dict,
        converter=_as_job_configs,
        metadata=_meta(_jobs, "[jobs.NAME] tables overriding what @app.job declared"),
    )
    nonce_driver: NonceDriverKind = attrs.field(
        default=NonceDriverKind.MEMORY,
        metadata=_meta(parse.one_of(NonceDriverKind), "memory|redis"),
    )
    nonce_skew_seconds: float = attrs.field(
        default=300.0, metadata=_meta(parse.seconds, "allowed clock skew of message timestamps")
    )
    nonce_max_entries: int = attrs.field(
        default=100_000, metadata=_meta(parse.count(1), "memory nonce store cap (fails closed)")
    )
    alerts_telegram_bot_token: str = attrs.field(
        default="", metadata=_meta(parse.path, "Telegram bot token (prefer the environment)")
    )
    alerts_telegram_chat_id: str = attrs.field(
        default="", metadata=_meta(parse.path, "Telegram chat to send error alerts to")
    )
    alerts_webhook_url: str = attrs.field(
        default="", metadata=_meta(parse.path, "URL receiving error alerts as JSON POSTs")
    )
    alerts_per_minute: int = attrs.field(
        default=20,
        metadata=_meta(parse.count(1), "alert throttle; excess alerts are dropped, counted"),
    )
    alerts_queue_dir: str = attrs.field(
        default="",
        metadata=_meta(parse.path, "retry queue of failed alerts (default .megatrio/alerts)"),
    )

    def __attrs_post_init__(self) -> None:
        # Direct construction gets the same checks as loading.
        for field in attrs.fields(Config):
            parse_setting("Config", field.name, getattr(self, field.name), from_text=False)
        if not self.redis_url:
            for alias, cache in self.cache.items():
                if cache.driver is CacheDriverKind.REDIS:
                    raise ConfigError(f"cache.{alias}: driver 'redis' needs redis_url")
            if self.nonce_driver is NonceDriverKind.REDIS:
                raise ConfigError("nonce_driver 'redis' needs redis_url")
        if self.ws_roster_refresh_seconds >= self.ws_roster_ttl_seconds:
            raise ConfigError(
                f"ws_roster_refresh_seconds ({self.ws_roster_refresh_seconds:g}) must be below "
                f"ws_roster_ttl_seconds ({self.ws_roster_ttl_seconds:g}): entries would expire "
                "between refreshes"
            )
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("certfile and keyfile go together")
        if self.uds and self.workers > 1:
            raise ConfigError(
                "uds serves one process: with workers > 1 the primary binds the listeners, "
                "and it binds only bind addresses"
            )
        if bool(self.alerts_telegram_bot_token) != bool(self.alerts_telegram_chat_id):
            raise ConfigError("alerts_telegram_bot_token and alerts_telegram_chat_id go together")
        if self.alerts_telegram_bot_token and self.alerts_webhook_url:
            raise ConfigError("choose one alert destination: Telegram or alerts_webhook_url")
        if self.alerts_webhook_url and not self.alerts_webhook_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError("alerts_webhook_url must be an http:// or https:// URL")


def config_keys() -> tuple[str, ...]:
    """Every :class:`Config` key, in declaration order."""
    return tuple(a.name for a in attrs.fields(Config))


def parse_setting(source: str, key: str, value: Any, *, from_text: bool) -> Any:
    """*value* parsed by the parser of the :class:`Config` field *key*.

    Raises:
        ConfigError: *key* is no field, or *value* is bad; the message starts with *source*.
    """
    field = attrs.fields_dict(Config).get(key)
    if field is None:
        known = ", ".join(config_keys())
        raise ConfigError(f"{source}: unknown key {key!r} (known keys: {known})")
    try:
        return field.metadata["parse"](value, from_text)
    except ValueError as exc:
        raise ConfigError(f"{source}: key {key!r}: {exc}") from None
