"""Loading a :class:`Config`: TOML, then the environment, then CLI flags; and its JSON form.

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

The JSON form (:func:`config_to_json` / :func:`config_from_json`) hands a loaded config to a
worker process.
"""

from __future__ import annotations

import enum
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from .._exceptions import ConfigError
from ._schema import Config, parse_setting

ENV_PREFIX: Final = "MEGATRIO_"
INTERNAL_ENV_PREFIX: Final = "MEGATRIO__"
"""Variables megatrio sets for its own child processes; never read as configuration."""


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
    return Config(**{k: parse_setting(source, k, v, from_text=False) for k, v in values.items()})


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
            values[key] = parse_setting(source, key, value, from_text=False)
    for name, text in environ.items():
        setting = _setting_of(name)
        if setting is not None:
            values[setting] = parse_setting(
                f"environment variable {name}", setting, text, from_text=True
            )
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = parse_setting(
                f"command-line option --{key.replace('_', '-')}", key, value, from_text=True
            )
    try:
        return Config(**values)
    except ConfigError as exc:  # a rule across keys: name where the settings came from
        raise ConfigError(f"{path if path is not None else 'configuration'}: {exc}") from None
