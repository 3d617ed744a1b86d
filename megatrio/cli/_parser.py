"""The ``megatrio`` command line: its parser (subcommands, options with their defaults, the
exit codes and ``MEGATRIO_*`` variables in ``--help``) and the Config the options stand for."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .._config import Config, config_keys, load_config
from ..services.http._addresses import parse_address
from ..services.http._front import HttpFront
from ..services.logs._levels import LogFormat, LogLevel


class UsageError(Exception):
    """A usage error: the command prints its one-line message and exits 2."""


def fail(message: str) -> NoReturn:
    raise UsageError(message)


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
    names = [f"MEGATRIO_{key.upper()}" for key in config_keys() if key not in ("cache", "jobs")]
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
        self.subcommand_dest = "command"
        """The namespace attribute naming which of :attr:`subcommands` was chosen."""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args)
        if extras:
            # The innermost subcommand given (dlq list), so its usage is the one shown.
            parser: argparse.ArgumentParser = self
            while isinstance(parser, _Parser):
                chosen = getattr(parsed, parser.subcommand_dest, None) or ""
                if chosen not in parser.subcommands:
                    break
                parser = parser.subcommands[chosen]
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def add_target_options(p: argparse.ArgumentParser) -> None:
    """The App a command loads: ``MODULE:ATTR``, ``--config``, ``--app-dir``, ``--factory``
    (what ``_main._target_from`` and ``config_from`` read)."""
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


def build_parser() -> _Parser:
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
        add_target_options(p)
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
            "--no-access-log",
            dest="access_log",
            action="store_const",
            const=False,
            default=None,
            help="no log record per HTTP request (default: one per request, on megatrio.access)",
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
            "--http",
            "--http-front",
            dest="http_front",
            metavar="{" + ",".join(front.value for front in HttpFront) + "}",
            help="who serves plain HTTP/1.1: megatrio's fast front or hypercorn; TLS and "
            f"HTTP/2 are always hypercorn's (default: {_DEFAULTS.http_front.value})",
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
    jobs_worker = commands.add_parser(
        "worker",
        help="run an App's job consumers, without HTTP",
        description="Run the job consumers of an App (no public HTTP listener, not the "
        "app's other children) until SIGTERM or SIGINT; on_start/on_stop, the stores and the "
        "admin listener run as with run. The listener options (--bind, --host, --port, --uds) "
        "do not apply.",
        epilog=f"{_environment_help()}\n\n{_EXIT_CODES}",
    )
    add_serving_options(jobs_worker, workers_help="worker processes under a supervising primary")
    worker = commands.add_parser("worker-process")  # started by a primary, not by people
    worker.add_argument("target")
    worker.add_argument("--app-dir", type=Path, required=True)
    worker.add_argument("--factory", action="store_true")
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--status-fd", type=int, required=True)
    worker.add_argument("--parent-fd", type=int, required=True)
    worker.add_argument("--listen-fd", type=int, action="append", default=[])
    worker.add_argument("--jobs-only", action="store_true")
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
    dlq = _add_dlq_parser(commands)
    parser.subcommands.update(
        run=run,
        console=console,
        worker=jobs_worker,
        **{"worker-process": worker},
        tree=tree,
        dlq=dlq,
    )
    return parser


_DLQ_EXIT_CODES = """\
exit codes:
  0  done
  1  NATS cannot be reached, the app's own code failed to import or build, or
     (retry) a letter's job is no longer declared by the app: it stays queued
  2  usage or configuration error (one line naming what was wrong): an unknown
     id, an app without nats_url (the embedded engine's dead letters live in the
     serving process's memory)"""

_DLQ_ABOUT = (
    "The dead-letter queue of an App's JetStream jobs (nats_url): the messages that will not "
    "be delivered again, each with its envelope (job, reason, deliveries, error, traceback, "
    "payload). The app is loaded as by run (MODULE:ATTR, --config, --app-dir, --factory, "
    "MEGATRIO_* variables) to find its name, its jobs and nats_url; nothing is served."
)


def _about(text: str) -> str:
    """:data:`_DLQ_ABOUT` and *text*, filled (the raw formatter keeps line breaks as given)."""
    return "\n\n".join(textwrap.fill(part, width=79) for part in (_DLQ_ABOUT, text))


def _dlq_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a dead-letter id (a number >= 1), got {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return int(text)


def _add_dlq_parser(commands: argparse._SubParsersAction[_Parser]) -> _Parser:
    """``megatrio dlq list|show|retry|purge MODULE:ATTR ...`` (run by ``_dlq.py``)."""
    dlq = commands.add_parser(
        "dlq",
        help="list, show, retry or purge the dead letters of an App's jobs",
        description=textwrap.fill(_DLQ_ABOUT, width=79) + "\n\n"
        "  list   the oldest dead letters, one line each (or JSON lines)\n"
        "  show   one dead letter's whole envelope, traceback included\n"
        "  retry  enqueue a dead letter's payload to its job again, then remove it\n"
        "  purge  remove dead letters",
        epilog=_DLQ_EXIT_CODES,
    )
    dlq.subcommand_dest = "dlq_command"
    actions = dlq.add_subparsers(
        dest="dlq_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    listing = actions.add_parser(
        "list",
        help="the oldest dead letters, one line each",
        description=_about(
            "Print the oldest dead letters, one line each: id, job, "
            "reason, deliveries, when it failed (UTC) and the error, cut to fit 100 columns. "
            "The id is what show, retry and purge take."
        ),
        epilog=_DLQ_EXIT_CODES,
    )
    add_target_options(listing)
    listing.add_argument(
        "--limit", type=_positive, default=100, metavar="N", help="at most N (default: 100)"
    )
    listing.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line instead: the id and the whole envelope, the payload "
        "as text (payload_encoding hex when it is not UTF-8) (default: off)",
    )
    show = actions.add_parser(
        "show",
        help="one dead letter's whole envelope, traceback included",
        description=_about(
            "Print the whole envelope of dead letter ID: job, "
            "subject and sequence, reason, deliveries, when it failed, the error, the payload and "
            "the traceback (capped and redacted when it was stored)."
        ),
        epilog=_DLQ_EXIT_CODES,
    )
    add_target_options(show)
    show.add_argument("id", type=_dlq_id, metavar="ID", help="a dead-letter id (from list)")
    show.add_argument(
        "--json", action="store_true", help="print it as one JSON object (default: off)"
    )
    retry = actions.add_parser(
        "retry",
        help="enqueue dead letters to their jobs again, then remove them",
        description=_about(
            "Enqueue each dead letter's payload to its job again, "
            "as a new message (a fresh msg id, so de-duplication never swallows it), then remove "
            "the dead letter; one line per letter with the new sequence. A letter whose job the "
            "app no longer declares is reported and left in the queue (exit 1)."
        ),
        epilog=_DLQ_EXIT_CODES,
    )
    purge = actions.add_parser(
        "purge",
        help="remove dead letters",
        description=_about("Remove dead letters without running them; prints how many went."),
        epilog=_DLQ_EXIT_CODES,
    )
    for p, verb in ((retry, "retry"), (purge, "remove")):
        add_target_options(p)
        p.add_argument(
            "ids", type=_dlq_id, nargs="*", metavar="ID", help=f"dead-letter ids to {verb}"
        )
        p.add_argument(
            "--all", action="store_true", help=f"{verb} every dead letter (default: off)"
        )
    dlq.subcommands.update(list=listing, show=show, retry=retry, purge=purge)
    return dlq


def config_from(args: argparse.Namespace) -> Config:
    """The Config of a command with :func:`add_target_options`: the file, the environment,
    then whichever serving options the command has (``dlq`` has none of them)."""

    def option(name: str) -> Any:
        return getattr(args, name, None)

    bind = ",".join(option("bind")) if option("bind") else None
    if option("host") is not None or option("port") is not None:
        if bind:
            fail("--host/--port and --bind cannot be combined: use --bind HOST:PORT")
        bind = _host_port(option("host"), option("port"))
    keys = (
        "admin_bind",
        "access_log",
        "grace_seconds",
        "shutdown_delay_seconds",
        "uds",
        "http_front",
        "keep_alive_timeout_seconds",
        "max_concurrent_connections",
        "root_path",
        "forwarded_allow_ips",
        "certfile",
        "keyfile",
        "workers",
        "log_level",
        "log_format",
    )
    overrides = {"bind": bind, **{key: option(key) for key in keys}}
    return load_config(path=args.config, overrides=overrides)


def _host_port(host: str | None, port: str | None) -> str:
    """``--host``/``--port`` as the one bind address they stand for (uvicorn's options)."""
    port_text = str(_DEFAULT_PORT) if port is None else port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        fail(f"command-line option --port: expected a port 0..65535, got {port_text!r}")
    host = _DEFAULT_HOST if host is None else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    address = f"{host}:{port_text}"
    try:
        parse_address(address)
    except ValueError:
        fail(f"command-line option --host: expected a host name or an IP address, got {host!r}")
    return address
