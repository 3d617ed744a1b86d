"""The ``megatrio`` command: ``run``, ``console``, ``tree`` and ``dlq`` (its exit codes are in
``_dlq.py``).

Exit codes of ``megatrio run`` (and ``console``, ``tree``):

- 0: a graceful stop (with ``--workers``: every worker exited within the grace);
- 1: a fatal error — a listener could not be bound, the app's own code failed while it was
  imported or built, a child crashed past its restart intensity, ``on_start`` raised,
  ``tree`` found no admin listener;
- 2: a usage or configuration error: one line naming what was wrong (the option, the file or
  variable and key, the module or attribute), no traceback;
- 3: a forced stop — a second signal, or the grace ran out, and work in progress was cut off
  (with ``--workers``: a worker had to be killed);
- 128 + signal (130, 143): a further SIGINT/SIGTERM arrived while the event loop was blocked,
  and the signal handler ended the process at once, without clean-up.

Other codes are reserved for future use.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, cast

import attrs
import trio

from .._config import Config, load_config, unknown_environment_variables
from .._exceptions import AppLoadError, AppNotFound, ConfigError, ListenError
from ..app._app import App
from ..services.http._addresses import parse_address
from ..services.http._admin import TREE_PATH
from ..services.logs._levels import LogLevel
from ..services.logs._logging import configure_logging
from ..services.logs._redact import Redactor
from ._exit import EXIT_FATAL, EXIT_FORCED, EXIT_OK, EXIT_USAGE
from ._parser import UsageError, build_parser, config_from, fail
from ._startup import freeze_startup_objects
from ._target import (
    AppTarget,
    check_target,
    format_load_error,
    load_app,
    no_jobs_reason,
    parse_target,
)

log = logging.getLogger("megatrio.cli")


def resolve_app(target: str, *, directory: Path | None = None, factory: bool = False) -> App:
    """Import *target* — ``module:attr`` or ``path/to/file.py:attr``, relative to *directory*
    (default: the current one) — and return the App; an App subclass is instantiated with no
    arguments, and with *factory* the attribute is called to return the App.

    Raises:
        AppNotFound: malformed target, module, file or attribute missing, or not an App.
        AppLoadError: the app's own code raised while importing or building it.
    """
    return load_app(parse_target(target, app_dir=directory, factory=factory))


def _target_from(args: argparse.Namespace) -> tuple[AppTarget, Path]:
    """The target and the directory it is resolved in (``--app-dir``, default the cwd)."""
    app_dir = Path.cwd() if args.app_dir is None else args.app_dir
    if not app_dir.is_dir():
        fail(f"command-line option --app-dir: not a directory: {str(app_dir)!r}")
    app_dir = app_dir.resolve()
    return parse_target(args.target, app_dir=app_dir, factory=args.factory), app_dir


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


def _reload_dirs(args: argparse.Namespace, target: AppTarget, config: Config) -> list[Path] | None:
    """The directories ``--reload`` watches (default: the one the app's module is imported
    from), or None without ``--reload``."""
    if not args.reload:
        if args.reload_dir:
            fail("command-line option --reload-dir needs --reload")
        return None
    if config.uds:
        fail("--reload cannot serve uds: its primary binds only the bind addresses")
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        fail("--reload needs the watchfiles package: pip install 'megatrio[reload]'")
    dirs: list[Path] = []
    for directory in args.reload_dir or [target.directory]:
        if not directory.is_dir():
            fail(f"command-line option --reload-dir: not a directory: {str(directory)!r}")
        if directory.resolve() not in dirs:
            dirs.append(directory.resolve())
    return dirs


def _run(args: argparse.Namespace, *, jobs_only: bool = False) -> int:
    """``run``, or with *jobs_only* ``worker`` (the job consumers without HTTP)."""
    from ..app._serve import serve_app

    config = config_from(args)
    target, app_dir = _target_from(args)
    reload_dirs = _reload_dirs(args, target, config) if not jobs_only else None
    _configure_logging(config)
    if config.workers > 1 or reload_dirs is not None:
        from ._primary import serve_cluster

        check_target(target)
        freeze_startup_objects()
        return trio.run(
            functools.partial(
                serve_cluster,
                args.target,
                app_dir,
                config,
                factory=args.factory,
                reload_dirs=reload_dirs,
                jobs_only=jobs_only,
            )
        )
    app = _load_app(target, config)
    if app is None:
        return EXIT_FATAL
    reason = no_jobs_reason(app) if jobs_only else None
    if reason is not None:
        fail(reason)
    freeze_startup_objects()
    try:
        forced = trio.run(functools.partial(serve_app, app, config, jobs_only=jobs_only))
    except ListenError:
        raise
    except Exception:
        return EXIT_FATAL  # mega_runtime logged it once, with its traceback
    return EXIT_FORCED if forced else EXIT_OK


def _console(args: argparse.Namespace) -> int:
    from ._console import PromptAwareStream, run_console

    config = config_from(args)
    if config.workers > 1 and args.workers is not None:
        fail(f"the console serves one process: --workers {args.workers} is for megatrio run")
    target, _ = _target_from(args)
    # Records go to stderr, and around the prompt when it is on a terminal (see _console).
    log_stream = PromptAwareStream(sys.stderr)
    _configure_logging(config, stream=cast("IO[str]", log_stream))
    if config.workers > 1:
        log.warning(
            "the console serves one process: workers = %d from the configuration is ignored",
            config.workers,
        )
    app = _load_app(target, config)
    if app is None:
        return EXIT_FATAL
    return run_console(app, config, log_stream=log_stream)


def _dlq(args: argparse.Namespace) -> int:
    from ._dlq import run_dlq

    config = config_from(args)
    target, _ = _target_from(args)
    # stdout is the command's output (JSON lines with --json): records go to stderr, and
    # only warnings and errors (info would announce every NATS connection).
    if config.log_level.number < logging.WARNING:
        config = attrs.evolve(config, log_level=LogLevel.WARNING)
    _configure_logging(config, stream=sys.stderr)
    app = _load_app(target, config)
    if app is None:
        return EXIT_FATAL
    return run_dlq(args, app, config)


def _tree(args: argparse.Namespace) -> int:
    address = args.admin
    if address is not None:
        try:
            parse_address(address)
        except ValueError as exc:
            fail(f"command-line option --admin: {exc}")
    else:
        address = load_config(path=args.config).admin_bind
        if not address:
            fail("admin_bind is disabled in the config; pass --admin HOST:PORT")
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
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "worker":
            return _run(args, jobs_only=True)
        if args.command == "console":
            return _console(args)
        if args.command == "dlq":
            return _dlq(args)
        if args.command == "worker-process":
            from ._worker import worker_process_main

            return worker_process_main(
                args.target,
                args.app_dir,
                args.factory,
                args.index,
                args.status_fd,
                args.parent_fd,
                args.listen_fd,
                jobs_only=args.jobs_only,
            )
        return _tree(args)
    except (ConfigError, AppNotFound, UsageError) as exc:
        print(f"megatrio: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ListenError as exc:
        print(f"megatrio: error: {exc}", file=sys.stderr)
        return EXIT_FATAL


def entry_point() -> NoReturn:
    """Console-script entry: exit with :func:`main`'s code."""
    sys.exit(main())
