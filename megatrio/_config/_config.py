"""Configuration: a frozen attrs class loaded from TOML, then the environment, then CLI flags.

Sources, later ones winning:

1. ``megatrio.toml`` (top-level keys) in the current directory, or ``[tool.megatrio]`` in
   ``pyproject.toml`` there, or the file named with ``--config``;
2. ``MEGATRIO_<KEY>`` environment variables (``MEGATRIO_GRACE_SECONDS=10``; lists are
   comma-separated);
3. command-line flags.

Unknown keys and bad values are rejected before anything starts, with the source (file or
variable), the key and what was expected in the message. The one exception is a
``MEGATRIO_*`` variable that names no setting: it is ignored (the CLI warns once, see
:func:`unknown_environment_variables`), because the environment is not only ours — Kubernetes
sets ``MEGATRIO_PORT``, ``MEGATRIO_SERVICE_HOST``, ... for a Service named megatrio.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from .._exceptions import ConfigError

ENV_PREFIX: Final = "MEGATRIO_"
INTERNAL_ENV_PREFIX: Final = "MEGATRIO__"
"""Variables megatrio sets for its own child processes; never read as configuration."""


class LogFormat(enum.Enum):
    """How log records are rendered."""

    AUTO = "auto"
    """JSON lines when stdout is not a terminal, readable lines when it is."""
    JSON = "json"
    CONSOLE = "console"


class LogLevel(enum.Enum):
    """The minimum level of records that are logged."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def number(self) -> int:
        return {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}[self.value]


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[V6]:PORT"`` → ``(host, port)``; port 0 means any free port.

    Raises:
        ValueError: not of that form, or the port is out of range.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port} in {text!r}")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"expected [IPV6]:PORT, but {host!r} is not an IPv6 address in {text!r}"
            ) from None
    return host, port


def is_loopback(host: str) -> bool:
    """Whether *host* only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- value parsers: (raw value, came from text) -> typed value, or ValueError "expected ..." ------


def _seconds(value: Any, from_text: bool) -> float:
    if from_text and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    if value < 0:
        raise ValueError(f"expected a number of seconds >= 0, got {value!r}")
    return float(value)


def _finite_seconds(value: Any, from_text: bool) -> float:
    seconds = _seconds(value, from_text)
    if math.isinf(seconds):
        raise ValueError(f"expected a finite number of seconds >= 0, got {value!r}")
    return seconds


def _positive_seconds(value: Any, from_text: bool) -> float:
    seconds = _seconds(value, from_text)
    if seconds <= 0 or math.isinf(seconds):
        raise ValueError(f"expected a finite number of seconds > 0, got {value!r}")
    return seconds


def _count(minimum: int) -> Callable[[Any, bool], int]:
    def parse(value: Any, from_text: bool) -> int:
        if from_text and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"expected an integer >= {minimum}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        return value

    return parse


def _enum(cls: type[enum.Enum]) -> Callable[[Any, bool], Any]:
    choices = ", ".join(repr(m.value) for m in cls)

    def parse(value: Any, from_text: bool) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        raise ValueError(f"expected one of {choices}, got {value!r}")

    return parse


def _strings(value: Any, from_text: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected a list of strings, got {value!r}")


def _addresses(value: Any, from_text: bool) -> tuple[str, ...]:
    addresses = _strings(value, from_text)
    if not addresses:
        raise ValueError("expected at least one HOST:PORT address")
    for address in addresses:
        if address.startswith("fd://"):
            if not address.removeprefix("fd://").isdigit():
                raise ValueError(f"expected fd://N with N a file descriptor, got {address!r}")
        else:
            parse_address(address)
    return addresses


def _optional_address(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT or an empty string, got {value!r}")
    if value:
        parse_address(value)
    return value


def _root_path(value: Any, from_text: bool) -> str:
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise ValueError(f"expected a path starting with '/' (or an empty string), got {value!r}")
    if any(c in value for c in "?#") or any(ord(c) < 0x21 for c in value):
        raise ValueError(f"expected a URL path without spaces, '?' or '#', got {value!r}")
    return value.rstrip("/")


def _trusted_peers(value: Any, from_text: bool) -> tuple[str, ...]:
    peers = _strings(value, from_text)
    for peer in peers:
        if peer in ("*", "unix"):
            continue
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError:
            raise ValueError(
                f"expected IP addresses or networks (10.0.0.0/8), '*' or 'unix', got {peer!r}"
            ) from None
    return peers


UNIX_PATH_MAX: Final = 107
"""Bytes in a Unix socket path on Linux (``sun_path`` is 108, with the terminating NUL)."""


def _socket_path(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a socket file path (or an empty string), got {value!r}")
    if "\0" in value:
        raise ValueError("expected a socket file path without NUL characters")
    if len(os.fsencode(value)) > UNIX_PATH_MAX:
        raise ValueError(f"expected a socket path of at most {UNIX_PATH_MAX} bytes, got {value!r}")
    return value


def _meta(parse: Callable[[Any, bool], Any], doc: str) -> dict[str, Any]:
    return {"parse": parse, "doc": doc}


def _url(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a URL string, got {value!r}")
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected redis://HOST:PORT/DB (or rediss://, unix://)")
    return value


def _path(value: Any, from_text: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a path string, got {value!r}")
    return value


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
        default=CacheDriverKind.MEMORY, metadata=_meta(_enum(CacheDriverKind), "memory|file|redis")
    )
    max_entries: int = attrs.field(
        default=10_000, metadata=_meta(_count(1), "entry cap (memory, file)")
    )
    max_bytes: int = attrs.field(
        default=0, metadata=_meta(_count(0), "value-bytes cap (memory, file); 0: none")
    )
    path: str = attrs.field(
        default="", metadata=_meta(_path, "file driver directory (default .megatrio/cache/ALIAS)")
    )
    sweep_interval_seconds: float = attrs.field(
        default=60.0, metadata=_meta(_positive_seconds, "how often expired entries are swept")
    )


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
        metadata=_meta(_addresses, "public listeners, HOST:PORT (port 0: any free) or fd://N"),
    )
    admin_bind: str = attrs.field(
        default="127.0.0.1:8001",
        metadata=_meta(_optional_address, "admin listener (/_megatrio/*); empty disables it"),
    )
    grace_seconds: float = attrs.field(
        default=30.0, metadata=_meta(_seconds, "bound on a graceful stop")
    )
    shutdown_delay_seconds: float = attrs.field(
        default=0.0,
        metadata=_meta(
            _finite_seconds,
            "on a stop, keep serving this long while /readyz is 503 (within the grace)",
        ),
    )
    blocked_loop_warn_seconds: float = attrs.field(
        default=2.0,
        metadata=_meta(_finite_seconds, "log which child blocks the event loop this long; 0: off"),
    )
    uds: str = attrs.field(
        default="", metadata=_meta(_socket_path, "also listen on this Unix socket path")
    )
    keep_alive_timeout_seconds: float = attrs.field(
        default=5.0, metadata=_meta(_positive_seconds, "idle keep-alive connections close")
    )
    max_concurrent_connections: int = attrs.field(
        default=0, metadata=_meta(_count(0), "past this many: 503 (0: no limit)")
    )
    root_path: str = attrs.field(
        default="", metadata=_meta(_root_path, "path prefix the app is mounted under")
    )
    forwarded_allow_ips: tuple[str, ...] = attrs.field(
        default=(), metadata=_meta(_trusted_peers, "proxies trusted for X-Forwarded-*")
    )
    certfile: str = attrs.field(
        default="", metadata=_meta(_path, "TLS certificate chain (PEM), with keyfile")
    )
    keyfile: str = attrs.field(default="", metadata=_meta(_path, "TLS private key (PEM)"))
    max_restarts: int = attrs.field(
        default=3, metadata=_meta(_count(0), "root supervisor intensity: restarts ...")
    )
    period_seconds: float = attrs.field(
        default=5.0, metadata=_meta(_positive_seconds, "... within this many seconds")
    )
    log_level: LogLevel = attrs.field(
        default=LogLevel.INFO, metadata=_meta(_enum(LogLevel), "minimum level logged")
    )
    log_format: LogFormat = attrs.field(
        default=LogFormat.AUTO, metadata=_meta(_enum(LogFormat), "auto, json or console")
    )
    redact_keys: tuple[str, ...] = attrs.field(
        default=(), metadata=_meta(_strings, "extra keys whose values are masked in logs")
    )
    workers: int = attrs.field(
        default=1, metadata=_meta(_count(1), "worker processes; 1 serves in-process")
    )
    worker_max_restarts: int = attrs.field(
        default=4, metadata=_meta(_count(0), "rapid worker crashes tolerated ...")
    )
    worker_period_seconds: float = attrs.field(
        default=10.0, metadata=_meta(_positive_seconds, "... within this many seconds")
    )
    worker_min_uptime_seconds: float = attrs.field(
        default=1.0, metadata=_meta(_seconds, "a crash after less uptime is rapid")
    )
    redis_url: str = attrs.field(
        default="", metadata=_meta(_url, "redis://HOST:PORT/DB for Redis-backed stores")
    )
    cache: dict[str, CacheConfig] = attrs.field(
        factory=lambda: {"default": CacheConfig()},
        converter=_with_default_cache,
        metadata=_meta(_caches, "[cache.ALIAS] tables; 'default' (memory) is always there"),
    )
    nonce_driver: NonceDriverKind = attrs.field(
        default=NonceDriverKind.MEMORY, metadata=_meta(_enum(NonceDriverKind), "memory|redis")
    )
    nonce_skew_seconds: float = attrs.field(
        default=300.0, metadata=_meta(_seconds, "allowed clock skew of message timestamps")
    )
    nonce_max_entries: int = attrs.field(
        default=100_000, metadata=_meta(_count(1), "memory nonce store cap (fails closed)")
    )
    alerts_telegram_bot_token: str = attrs.field(
        default="", metadata=_meta(_path, "Telegram bot token (prefer the environment)")
    )
    alerts_telegram_chat_id: str = attrs.field(
        default="", metadata=_meta(_path, "Telegram chat to send error alerts to")
    )
    alerts_webhook_url: str = attrs.field(
        default="", metadata=_meta(_path, "URL receiving error alerts as JSON POSTs")
    )
    alerts_per_minute: int = attrs.field(
        default=20, metadata=_meta(_count(1), "alert throttle; excess alerts are dropped, counted")
    )
    alerts_queue_dir: str = attrs.field(
        default="", metadata=_meta(_path, "retry queue of failed alerts (default .megatrio/alerts)")
    )

    def __attrs_post_init__(self) -> None:
        # Direct construction gets the same checks as loading.
        for field in attrs.fields(Config):
            _parse("Config", field.name, getattr(self, field.name), from_text=False)
        if not self.redis_url:
            for alias, cache in self.cache.items():
                if cache.driver is CacheDriverKind.REDIS:
                    raise ConfigError(f"cache.{alias}: driver 'redis' needs redis_url")
            if self.nonce_driver is NonceDriverKind.REDIS:
                raise ConfigError("nonce_driver 'redis' needs redis_url")
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


def config_to_json(config: Config) -> str:
    """*config* as JSON, for handing to a child process (see :func:`config_from_json`)."""
    values = {field.name: _plain(getattr(config, field.name)) for field in attrs.fields(Config)}
    return json.dumps(values)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    return value


def config_from_json(text: str, source: str) -> Config:
    """The :class:`Config` that :func:`config_to_json` wrote; *source* names it in errors."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    return Config(**{k: _parse(source, k, v, from_text=False) for k, v in values.items()})


def config_keys() -> tuple[str, ...]:
    return tuple(a.name for a in attrs.fields(Config))


def _parse(source: str, key: str, value: Any, *, from_text: bool) -> Any:
    field = attrs.fields_dict(Config).get(key)
    if field is None:
        known = ", ".join(config_keys())
        raise ConfigError(f"{source}: unknown key {key!r} (known keys: {known})")
    try:
        return field.metadata["parse"](value, from_text)
    except ValueError as exc:
        raise ConfigError(f"{source}: key {key!r}: {exc}") from None


def _setting_of(name: str) -> str | None:
    """The config key the environment variable *name* sets, or None if it sets none."""
    if not name.startswith(ENV_PREFIX) or name.startswith(INTERNAL_ENV_PREFIX):
        return None
    key = name[len(ENV_PREFIX) :].lower()
    return key if key in attrs.fields_dict(Config) else None


def unknown_environment_variables(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The ``MEGATRIO_*`` variables in *environ* (default: ``os.environ``) that name no setting,
    sorted — what :func:`load_config` ignores. ``MEGATRIO__*`` variables (megatrio's own, for
    its child processes) are not listed."""
    environ = os.environ if environ is None else environ
    return tuple(
        sorted(
            name
            for name in environ
            if name.startswith(ENV_PREFIX)
            and not name.startswith(INTERNAL_ENV_PREFIX)
            and _setting_of(name) is None
        )
    )


def _read_toml(path: Path) -> tuple[str, Mapping[str, Any]]:
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if path.name == "pyproject.toml":
        table = document.get("tool", {}).get("megatrio", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [tool.megatrio] must be a table")
        return f"{path} [tool.megatrio]", table
    return str(path), document


def find_config_file(directory: Path) -> Path | None:
    """``megatrio.toml`` in *directory*, else its ``pyproject.toml`` if that has a
    ``[tool.megatrio]`` table, else None."""
    candidate = directory / "megatrio.toml"
    if candidate.is_file():
        return candidate
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        try:
            document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            return None
        if "megatrio" in document.get("tool", {}):
            return pyproject
    return None


def load_config(
    *,
    path: Path | None = None,
    directory: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the :class:`Config` from a file, the environment and *overrides* (CLI flags).

    With no *path*, looks for a config file in *directory* (default: the current one).
    ``MEGATRIO_*`` variables that name no setting are ignored (see
    :func:`unknown_environment_variables`); a known one with a bad value is an error.

    Raises:
        ConfigError: a file is missing or invalid, a key is unknown, or a value is bad; the
            message names the file or variable, the key, and what was expected.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if path is None:
        path = find_config_file(Path.cwd() if directory is None else directory)
    if path is not None:
        source, table = _read_toml(path)
        for key, value in table.items():
            values[key] = _parse(source, key, value, from_text=False)
    for name, text in environ.items():
        setting = _setting_of(name)
        if setting is not None:
            values[setting] = _parse(f"environment variable {name}", setting, text, from_text=True)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _parse(
                f"command-line option --{key.replace('_', '-')}", key, value, from_text=True
            )
    try:
        return Config(**values)
    except ConfigError as exc:  # a rule across keys: name where the settings came from
        raise ConfigError(f"{path if path is not None else 'configuration'}: {exc}") from None
