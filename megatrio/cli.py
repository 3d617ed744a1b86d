"""The ``megatrio`` command: ``run``, ``console`` and ``tree``.

Exit codes: 0 after a graceful stop, 1 after a fatal error, 2 for usage or configuration
errors (a one-line message naming what was wrong, no traceback).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio

from ._config import Config, load_config, parse_address, unknown_environment_variables
from ._exceptions import AppLoadError, AppNotFound, ConfigError, ListenError
from ._target import AppTarget, check_target, format_load_error, load_app, parse_target
from .app import App
from .services._admin import TREE_PATH
from .services._logging import configure_logging
from .services._redact import Redactor

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2

log = logging.getLogger("megatrio.cli")


class _UsageError(Exception):
    pass


def resolve_app(target: str, *, directory: Path | None = None) -> App:
    """Import *target* — ``module:attr`` or ``path/to/file.py:attr``, relative to *directory*
    (default: the current one) — and return the App; an App subclass is instantiated with no
    arguments.

    Raises:
        AppNotFound: malformed target, module, file or attribute missing, or not an App.
        AppLoadError: the app's own code raised while importing or building it.
    """
    return load_app(parse_target(target, app_dir=directory))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megatrio", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_serving_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("target", metavar="MODULE:ATTR", help="the App, e.g. app:App")
        p.add_argument("--config", type=Path, help="TOML file (default: ./megatrio.toml)")
        p.add_argument(
            "--bind", action="append", metavar="HOST:PORT", help="public listener (repeatable)"
        )
        p.add_argument("--admin-bind", metavar="HOST:PORT", help="admin listener ('' disables)")
        p.add_argument("--grace-seconds", metavar="SECONDS", help="bound on a graceful stop")
        p.add_argument("--workers", metavar="N", help="worker processes under a primary")
        p.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning, error")
        p.add_argument("--log-format", metavar="FORMAT", help="auto, json or console")

    add_serving_options(commands.add_parser("run", help="serve an App"))
    add_serving_options(
        commands.add_parser("console", help="serve an App with a REPL (rt and app in scope)")
    )
    worker = commands.add_parser("worker-process")  # started by a primary, not by people
    worker.add_argument("target")
    worker.add_argument("--app-dir", type=Path, required=True)
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--status-fd", type=int, required=True)
    worker.add_argument("--parent-fd", type=int, required=True)
    worker.add_argument("--listen-fd", type=int, action="append", default=[])
    tree = commands.add_parser("tree", help="print the live supervision tree of a running app")
    tree.add_argument("--admin", metavar="HOST:PORT", help="admin listener (default: config)")
    tree.add_argument("--config", type=Path, help="TOML file to read admin_bind from")
    tree.add_argument("--json", action="store_true", help="print JSON instead of a tree")
    return parser


def _config_from(args: argparse.Namespace) -> Config:
    overrides = {
        "bind": ",".join(args.bind) if args.bind else None,
        "admin_bind": args.admin_bind,
        "grace_seconds": args.grace_seconds,
        "workers": getattr(args, "workers", None),
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    return load_config(path=args.config, overrides=overrides)


def _configure_logging(config: Config, **options: Any) -> None:
    """Install the log handler, then say once which ``MEGATRIO_*`` variables were ignored."""
    configure_logging(
        level=config.log_level.number,
        fmt=config.log_format,
        redact_keys=config.redact_keys,
        **options,
    )
    unknown = unknown_environment_variables()
    if unknown:
        log.warning(
            "ignoring environment variables that name no megatrio setting: %s",
            ", ".join(unknown),
        )


def _load_app(target: AppTarget, config: Config) -> App | None:
    """The app, or None after printing why the app's own code failed to load (on stderr: its
    frames' traceback, then one line).

    Raises:
        AppNotFound: the target itself is wrong.
    """
    try:
        return load_app(target)
    except AppLoadError as exc:
        sys.stderr.write(format_load_error(exc, Redactor(config.redact_keys)))
        return None


def _freeze_startup_objects() -> None:
    """Move everything allocated so far (modules, the app) out of the cyclic GC's reach.

    Imported modules hold a large, immortal object graph; without this every full collection
    walks it again while requests are served (bench/bench_http.py showed it in CPU per request
    and p99 latency).
    """
    gc.collect()
    gc.freeze()


def _fail(message: str) -> NoReturn:
    raise _UsageError(message)


def _run(args: argparse.Namespace) -> int:
    from ._serve import serve_app

    config = _config_from(args)
    app_dir = Path.cwd()
    target = parse_target(args.target, app_dir=app_dir)
    _configure_logging(config)
    if config.workers > 1:
        from ._cluster import serve_cluster

        check_target(target)
        _freeze_startup_objects()
        return trio.run(serve_cluster, args.target, app_dir, config)
    app = _load_app(target, config)
    if app is None:
        return EXIT_FATAL
    _freeze_startup_objects()
    try:
        trio.run(serve_app, app, config)
    except ListenError:
        raise
    except Exception:
        return EXIT_FATAL  # mega_runtime logged it once, with its traceback
    return EXIT_OK


def _console(args: argparse.Namespace) -> int:
    from ._console import run_console

    config = _config_from(args)
    if config.workers > 1 and args.workers is not None:
        _fail(f"the console serves one process: --workers {args.workers} is for megatrio run")
    target = parse_target(args.target, app_dir=Path.cwd())
    _configure_logging(config, stream=sys.stderr)
    if config.workers > 1:
        log.warning(
            "the console serves one process: workers = %d from the configuration is ignored",
            config.workers,
        )
    app = _load_app(target, config)
    if app is None:
        return EXIT_FATAL
    return run_console(app, config)


def _tree(args: argparse.Namespace) -> int:
    address = args.admin
    if address is not None:
        try:
            parse_address(address)
        except ValueError as exc:
            _fail(f"command-line option --admin: {exc}")
    else:
        address = load_config(path=args.config).admin_bind
        if not address:
            _fail("admin_bind is disabled in the config; pass --admin HOST:PORT")
    url = f"http://{address}{TREE_PATH}" + ("" if args.json else "?format=text")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"megatrio: error: no admin listener at {address}: {reason}", file=sys.stderr)
        return EXIT_FATAL
    if args.json:
        body = json.dumps(json.loads(body), indent=2) + "\n"
    sys.stdout.write(body)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``megatrio`` command and ``python -m megatrio``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "console":
            return _console(args)
        if args.command == "worker-process":
            from ._cluster import worker_process_main

            return worker_process_main(
                args.target,
                args.app_dir,
                args.index,
                args.status_fd,
                args.parent_fd,
                args.listen_fd,
            )
        return _tree(args)
    except (ConfigError, AppNotFound, _UsageError) as exc:
        print(f"megatrio: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ListenError as exc:
        print(f"megatrio: error: {exc}", file=sys.stderr)
        return EXIT_FATAL


def entry_point() -> NoReturn:
    """Console-script entry: exit with :func:`main`'s code."""
    sys.exit(main())
