"""The ``megatrio`` command: ``run``, ``console`` and ``tree``.

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
import textwrap
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, cast

import trio

from .._config import Config, config_keys, load_config, unknown_environment_variables
from .._exceptions import AppLoadError, AppNotFound, ConfigError, ListenError
from ..app._app import App
from ..services.http._addresses import parse_address
from ..services.http._admin import TREE_PATH
from ..services.logs._levels import LogFormat, LogLevel
from ..services.logs._logging import configure_logging
from ..services.logs._redact import Redactor
from ._exit import EXIT_FATAL, EXIT_FORCED, EXIT_OK, EXIT_USAGE
from ._startup import freeze_startup_objects
from ._target import AppTarget, check_target, format_load_error, load_app, parse_target

log = logging.getLogger("megatrio.cli")


class _UsageError(Exception):
    pass


def resolve_app(target: str, *, directory: Path | None = None, factory: bool = False) -> App:
    """Import *target* — ``module:attr`` or ``path/to/file.py:attr``, relative to *directory*
    (default: the current one) — and return the App; an App subclass is instantiated with no
    arguments, and with *factory* the attribute is called to return the App.

    Raises:
        AppNotFound: malformed target, module, file or attribute missing, or not an App.
        AppLoadError: the app's own code raised while importing or building it.
    """
    return load_app(parse_target(target, app_dir=directory, factory=factory))


_EXIT_CODES = """\
exit codes:
  0  graceful stop (with --workers: every worker exited within the grace)
  1  fatal error: a listener could not be bound, the app's own code failed to
     import or build, a child crashed past its restart intensity, on_start
     raised
  2  usage or configuration error (one line naming what was wrong)
  3  forced stop: a second signal, or the grace ran out, cut work off (with
     --workers: a worker had to be killed)
  130, 143  a further SIGINT/SIGTERM while the event loop was blocked ended the
     process at once, from the signal handler, with no clean-up"""

_DEFAULTS = Config()
_DEFAULT_HOST, _DEFAULT_PORT = parse_address(_DEFAULTS.bind[0])


def _environment_help() -> str:
    names = [f"MEGATRIO_{key.upper()}" for key in config_keys() if key != "cache"]
    lines = textwrap.wrap(", ".join(names), width=76)
    listed = "\n".join(f"     {line}" for line in lines)
    return (
        "configuration, later sources winning (file < environment < options):\n"
        "  1. megatrio.toml in the current directory, or [tool.megatrio] in\n"
        "     pyproject.toml there, or the file given with --config\n"
        "  2. MEGATRIO_<KEY> environment variables (lists comma-separated):\n"
        f"{listed}\n"
        "  3. the options above; defaults shown are those without a file or variable"
    )


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose unrecognized arguments are reported with the usage of the
    subcommand they were given to, not the top-level one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.subcommands: dict[str, argparse.ArgumentParser] = {}

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args)
        if extras:
            parser = self.subcommands.get(getattr(parsed, "command", None) or "", self)
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def _parser() -> _Parser:
    from .. import __version__

    parser = _Parser(
        prog="megatrio",
        description="megatrio: serve an App as a supervised tree of trio tasks.",
        epilog=_EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"megatrio {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    levels = ", ".join(level.value for level in LogLevel)
    formats = ", ".join(fmt.value for fmt in LogFormat)

    def add_serving_options(p: argparse.ArgumentParser, *, workers_help: str) -> None:
        p.add_argument(
            "target",
            metavar="MODULE:ATTR",
            help="the App: an App object or subclass (app:app, app:Shop), or with --factory "
            "a function returning one; MODULE may be a file path (./app.py:app)",
        )
        p.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="TOML file (default: ./megatrio.toml, else [tool.megatrio] in ./pyproject.toml)",
        )
        p.add_argument(
            "--bind",
            action="append",
            metavar="HOST:PORT",
            help="public listener, repeatable; [V6]:PORT for IPv6, port 0 for any free port "
            f"(default: {', '.join(_DEFAULTS.bind)})",
        )
        p.add_argument(
            "--host",
            metavar="HOST",
            help=f"with --port, the same as --bind HOST:PORT (default: {_DEFAULT_HOST})",
        )
        p.add_argument(
            "--port",
            metavar="PORT",
            help=f"with --host, the same as --bind HOST:PORT (default: {_DEFAULT_PORT})",
        )
        p.add_argument(
            "--admin-bind",
            metavar="HOST:PORT",
            help="admin listener (/_megatrio/tree); '' disables it "
            f"(default: {_DEFAULTS.admin_bind})",
        )
        p.add_argument(
            "--grace-seconds",
            metavar="SECONDS",
            help=f"bound on a graceful stop (default: {_DEFAULTS.grace_seconds:g})",
        )
        p.add_argument(
            "--shutdown-delay-seconds",
            metavar="SECONDS",
            help="on SIGTERM keep serving this long while /readyz answers 503, so load "
            f"balancers drain (default: {_DEFAULTS.shutdown_delay_seconds:g})",
        )
        p.add_argument(
            "--uds",
            metavar="PATH",
            help="also listen on a Unix domain socket at PATH (default: none)",
        )
        p.add_argument(
            "--keep-alive-timeout-seconds",
            metavar="SECONDS",
            help="close idle keep-alive connections after this long "
            f"(default: {_DEFAULTS.keep_alive_timeout_seconds:g})",
        )
        p.add_argument(
            "--max-concurrent-connections",
            metavar="N",
            help="answer 503 past this many connections; 0: no limit "
            f"(default: {_DEFAULTS.max_concurrent_connections})",
        )
        p.add_argument(
            "--root-path",
            metavar="PATH",
            help="path prefix the app is mounted under behind a proxy (default: none)",
        )
        p.add_argument(
            "--forwarded-allow-ips",
            metavar="IPS",
            help="comma-separated proxies (IPs, networks, '*', 'unix') whose X-Forwarded-For "
            "and X-Forwarded-Proto are trusted (default: none)",
        )
        p.add_argument(
            "--certfile", metavar="FILE", help="TLS certificate chain, PEM (default: none)"
        )
        p.add_argument("--keyfile", metavar="FILE", help="TLS private key, PEM (default: none)")
        p.add_argument(
            "--workers",
            metavar="N",
            help=f"{workers_help} (default: {_DEFAULTS.workers})",
        )
        p.add_argument(
            "--log-level",
            metavar="LEVEL",
            help=f"one of {levels} (default: {_DEFAULTS.log_level.value})",
        )
        p.add_argument(
            "--log-format",
            metavar="FORMAT",
            help=f"one of {formats}; auto is json when stdout is not a terminal "
            f"(default: {_DEFAULTS.log_format.value})",
        )
        p.add_argument(
            "--app-dir",
            type=Path,
            metavar="DIR",
            help="directory MODULE is imported from, and a file path in it is relative to "
            "(default: the current directory)",
        )
        p.add_argument(
            "--factory",
            action="store_true",
            help="ATTR is a function returning the App, called with no arguments "
            "(like app:create_app) (default: off)",
        )

    run = commands.add_parser(
        "run",
        help="serve an App",
        description="Serve an App until SIGTERM or SIGINT (a second one stops at once).",
        epilog=f"{_environment_help()}\n\n{_EXIT_CODES}",
    )
    add_serving_options(run, workers_help="worker processes under a supervising primary")
    run.add_argument(
        "--reload",
        action="store_true",
        help="for development: restart the worker process(es) when a .py file under the app "
        "directory changes, keeping the listening sockets open (default: off)",
    )
    run.add_argument(
        "--reload-dir",
        action="append",
        type=Path,
        metavar="DIR",
        help="with --reload, watch DIR instead of the app directory; repeatable "
        "(default: the directory the app's module is imported from)",
    )
    console = commands.add_parser(
        "console",
        help="serve an App with a REPL (rt and app in scope)",
        description="Serve an App in this process and open a REPL with rt and app in scope "
        "and top-level await. Ctrl-D stops the app.",
        epilog=f"{_environment_help()}\n\n{_EXIT_CODES}",
    )
    add_serving_options(console, workers_help="only 1: the console serves one process")
    worker = commands.add_parser("worker-process")  # started by a primary, not by people
    worker.add_argument("target")
    worker.add_argument("--app-dir", type=Path, required=True)
    worker.add_argument("--factory", action="store_true")
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--status-fd", type=int, required=True)
    worker.add_argument("--parent-fd", type=int, required=True)
    worker.add_argument("--listen-fd", type=int, action="append", default=[])
    tree = commands.add_parser(
        "tree",
        help="print the live supervision tree of a running app",
        description="Print the live supervision tree of a running app, from its admin listener.",
    )
    tree.add_argument(
        "--admin", metavar="HOST:PORT", help="admin listener (default: admin_bind from the config)"
    )
    tree.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file to read admin_bind from"
    )
    tree.add_argument("--json", action="store_true", help="print JSON instead of a tree")
    parser.subcommands.update(run=run, console=console, **{"worker-process": worker}, tree=tree)
    return parser


def _config_from(args: argparse.Namespace) -> Config:
    bind = ",".join(args.bind) if args.bind else None
    if args.host is not None or args.port is not None:
        if args.bind:
            _fail("--host/--port and --bind cannot be combined: use --bind HOST:PORT")
        bind = _host_port(args.host, args.port)
    overrides = {
        "bind": bind,
        "admin_bind": args.admin_bind,
        "grace_seconds": args.grace_seconds,
        "shutdown_delay_seconds": args.shutdown_delay_seconds,
        "uds": args.uds,
        "keep_alive_timeout_seconds": args.keep_alive_timeout_seconds,
        "max_concurrent_connections": args.max_concurrent_connections,
        "root_path": args.root_path,
        "forwarded_allow_ips": args.forwarded_allow_ips,
        "certfile": args.certfile,
        "keyfile": args.keyfile,
        "workers": getattr(args, "workers", None),
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    return load_config(path=args.config, overrides=overrides)


def _host_port(host: str | None, port: str | None) -> str:
    """``--host``/``--port`` as the one bind address they stand for (uvicorn's options)."""
    port_text = str(_DEFAULT_PORT) if port is None else port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        _fail(f"command-line option --port: expected a port 0..65535, got {port_text!r}")
    host = _DEFAULT_HOST if host is None else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    address = f"{host}:{port_text}"
    try:
        parse_address(address)
    except ValueError:
        _fail(f"command-line option --host: expected a host name or an IP address, got {host!r}")
    return address


def _target_from(args: argparse.Namespace) -> tuple[AppTarget, Path]:
    """The target and the directory it is resolved in (``--app-dir``, default the cwd)."""
    app_dir = Path.cwd() if args.app_dir is None else args.app_dir
    if not app_dir.is_dir():
        _fail(f"command-line option --app-dir: not a directory: {str(app_dir)!r}")
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


def _fail(message: str) -> NoReturn:
    raise _UsageError(message)


def _reload_dirs(args: argparse.Namespace, target: AppTarget, config: Config) -> list[Path] | None:
    """The directories ``--reload`` watches (default: the one the app's module is imported
    from), or None without ``--reload``."""
    if not args.reload:
        if args.reload_dir:
            _fail("command-line option --reload-dir needs --reload")
        return None
    if config.uds:
        _fail("--reload cannot serve uds: its primary binds only the bind addresses")
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        _fail("--reload needs the watchfiles package: pip install 'megatrio[reload]'")
    dirs: list[Path] = []
    for directory in args.reload_dir or [target.directory]:
        if not directory.is_dir():
            _fail(f"command-line option --reload-dir: not a directory: {str(directory)!r}")
        if directory.resolve() not in dirs:
            dirs.append(directory.resolve())
    return dirs


def _run(args: argparse.Namespace) -> int:
    from ..app._serve import serve_app

    config = _config_from(args)
    target, app_dir = _target_from(args)
    reload_dirs = _reload_dirs(args, target, config)
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
            )
        )
    app = _load_app(target, config)
    if app is None:
        return EXIT_FATAL
    freeze_startup_objects()
    try:
        forced = trio.run(serve_app, app, config)
    except ListenError:
        raise
    except Exception:
        return EXIT_FATAL  # mega_runtime logged it once, with its traceback
    return EXIT_FORCED if forced else EXIT_OK


def _console(args: argparse.Namespace) -> int:
    from ._console import PromptAwareStream, run_console

    config = _config_from(args)
    if config.workers > 1 and args.workers is not None:
        _fail(f"the console serves one process: --workers {args.workers} is for megatrio run")
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
            from ._worker import worker_process_main

            return worker_process_main(
                args.target,
                args.app_dir,
                args.factory,
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
