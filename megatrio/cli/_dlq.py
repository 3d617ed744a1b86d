"""``megatrio dlq list|show|retry|purge MODULE:ATTR``: the dead-letter queue of an App's
JetStream jobs, from outside the processes that serve it.

The command acts as one more process of the app: ``_main`` loads the app and its Config as
``run`` does, and here the job engine that Config names is opened
(:func:`~megatrio.app._jobs.open_job_engine` with the app's name, so the same streams) and the
app's jobs are declared, as every serving process declares them at start — the same settings
from the same Config, so nothing changes for the processes serving it; ``enqueue`` (retry)
needs its job declared.

Ids are the DLQ stream's sequences (:meth:`JobDriver.dead_letters`). Reading one letter by id
reads the queue from its oldest letter: the driver contract has no lookup by id.

Exit codes: 0 done; 1 NATS cannot be reached (one line, credentials redacted), or ``retry``
left a letter in place because the app no longer declares its job; 2 a usage error (one
line): an unknown id, neither ids nor ``--all``, an app without ``nats_url``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from .._config import Config
from .._exceptions import BackendUnavailable
from ..app._app import App
from ..app._jobs import configured_specs, open_job_engine
from ..nursery._errors import unwrapped_groups
from ..services.jobs._driver import DeadLetter, JobDriver, JobSettings
from ._exit import EXIT_FATAL, EXIT_OK
from ._parser import fail

TABLE_WIDTH = 100
"""Columns a ``list`` line fits in: the error column is cut to what the others leave."""
_MIN_ERROR_WIDTH = 24
_EVERY_LETTER = sys.maxsize


def run_dlq(args: argparse.Namespace, app: App, config: Config) -> int:
    """The ``dlq`` action *args* names, on *app*'s dead-letter queue; the exit code.

    Raises:
        UsageError: an unknown id, neither ids nor ``--all``, no ``nats_url``.
        ConfigError: see :func:`~megatrio.app._jobs.configured_specs`.
    """
    if args.dlq_command in ("retry", "purge"):
        if args.all and args.ids:
            fail(f"dlq {args.dlq_command}: give dead-letter ids or --all, not both")
        if not args.all and not args.ids:
            fail(f"dlq {args.dlq_command}: give the dead-letter ids (from dlq list) or --all")
    if not config.nats_url:
        fail(
            f"app {app.name!r} has no nats_url: its jobs run on the embedded engine, whose "
            "dead letters live in the serving process's memory and cannot be inspected from "
            "another process (set nats_url to keep them in JetStream)"
        )
    specs = configured_specs(app, config)
    if not specs:
        fail(f"app {app.name!r} declares no jobs, so it has no dead-letter queue")
    try:
        code: int = trio.run(_main, args, app, config, [spec.settings for spec in specs])
    except BackendUnavailable as exc:
        from ..services.nats._connection import redact_url

        # Its message names the redacted URL already; scrubbed again because it also quotes
        # nats-py's error, and one line because it is all the user sees.
        print(f"megatrio: error: {' '.join(redact_url(str(exc)).split())}", file=sys.stderr)
        return EXIT_FATAL
    return code


async def _main(
    args: argparse.Namespace, app: App, config: Config, settings: list[JobSettings]
) -> int:
    action = _ACTIONS[args.dlq_command]
    with unwrapped_groups():
        async with open_job_engine(config, app.name) as engine:
            await engine.driver.declare(settings)
            return await action(_Queue(engine.driver, app, {s.name for s in settings}), args)
    raise AssertionError("unreachable")  # pragma: no cover -- the block always returns


class _Queue:
    """The app's dead-letter queue on an open, declared engine."""

    def __init__(self, driver: JobDriver, app: App, jobs: set[str]) -> None:
        self.driver = driver
        self.app = app.name
        self.jobs = jobs

    async def chosen(self, ids: Sequence[int]) -> list[tuple[int, DeadLetter]]:
        """The letters *ids*, in that order (each once).

        Raises:
            UsageError: one of them is not in the queue (checked before anything changes).
        """
        letters = dict(await self.driver.dead_letters(limit=_EVERY_LETTER))
        for dlq_id in ids:
            if dlq_id not in letters:
                fail(f"no dead letter {dlq_id} in {self.app}")
        return [(dlq_id, letters[dlq_id]) for dlq_id in dict.fromkeys(ids)]


# -- the actions ------------------------------------------------------------------------------


async def _list(queue: _Queue, args: argparse.Namespace) -> int:
    # One more than asked for, to say whether the listing stopped short.
    letters = await queue.driver.dead_letters(limit=args.limit + 1)
    more = len(letters) > args.limit
    letters = letters[: args.limit]
    if args.json:
        for dlq_id, letter in letters:
            print(json.dumps(envelope(dlq_id, letter), ensure_ascii=False))
    elif letters:
        for line in format_table(letters):
            print(line)
    else:
        print(f"no dead letters in {queue.app}")
    if more:
        # Not on stdout with --json: every line there is one letter.
        print(
            f"(the oldest {args.limit} shown; --limit N for more)",
            file=sys.stderr if args.json else sys.stdout,
        )
    return EXIT_OK


async def _show(queue: _Queue, args: argparse.Namespace) -> int:
    [(dlq_id, letter)] = await queue.chosen([args.id])
    if args.json:
        print(json.dumps(envelope(dlq_id, letter), ensure_ascii=False, indent=2))
    else:
        print(format_letter(dlq_id, letter, queue.app))
    return EXIT_OK


async def _retry(queue: _Queue, args: argparse.Namespace) -> int:
    if args.all:
        letters = await queue.driver.dead_letters(limit=_EVERY_LETTER)
    else:
        letters = await queue.chosen(args.ids)
    code = EXIT_OK
    for dlq_id, letter in letters:
        if letter.job not in queue.jobs:
            print(
                f"dead letter {dlq_id}: app {queue.app} declares no job {letter.job!r} any "
                "more; left in the queue",
                file=sys.stderr,
            )
            code = EXIT_FATAL
            continue
        # A fresh id every time: the original enqueue's msg_id, or one derived from the
        # DLQ id alone (sequences restart when the stream is recreated), may still be in the
        # de-duplication window, and the retry would be swallowed as a duplicate.
        msg_id = f"retry-{dlq_id}-{uuid.uuid4().hex}"
        sequence = await queue.driver.enqueue(letter.job, letter.payload, msg_id=msg_id)
        # Enqueued before removed: an interruption in between leaves the letter to be
        # retried twice, never lost.
        await queue.driver.purge_dead_letters([dlq_id])
        print(f"retried dead letter {dlq_id} ({letter.job}) as sequence {sequence}")
    if args.all and not letters:
        print(f"no dead letters in {queue.app}")
    return code


async def _purge(queue: _Queue, args: argparse.Namespace) -> int:
    if args.all:
        removed = await queue.driver.purge_dead_letters(None)
    else:
        letters = await queue.chosen(args.ids)
        removed = await queue.driver.purge_dead_letters([dlq_id for dlq_id, _ in letters])
    print(f"purged {removed} dead letter{'' if removed == 1 else 's'} from {queue.app}")
    return EXIT_OK


_ACTIONS: dict[str, Callable[[_Queue, argparse.Namespace], Awaitable[int]]] = {
    "list": _list,
    "show": _show,
    "retry": _retry,
    "purge": _purge,
}


# -- formatting -------------------------------------------------------------------------------


def envelope(dlq_id: int, letter: DeadLetter) -> dict[str, Any]:
    """*letter* as ``--json`` prints it: its id, then the stored envelope (payload as text,
    ``payload_encoding`` hex when it is not UTF-8)."""
    fields: dict[str, Any] = json.loads(letter.to_json())
    return {"id": dlq_id, **fields}


def utc(timestamp: float) -> str:
    """*timestamp* (``time.time()``) as ISO 8601 in UTC, to the second: 2025-01-31T12:00:00Z."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def error_text(letter: DeadLetter) -> str:
    """``Type: message`` on one line, or ``-`` when no handler error was seen."""
    if letter.error_type is None:
        return "-"
    message = " ".join((letter.error_message or "").split())
    return f"{letter.error_type}: {message}" if message else letter.error_type


def format_table(letters: Sequence[tuple[int, DeadLetter]]) -> list[str]:
    """The ``list`` table: a header, then one line per letter, the error cut to fit
    :data:`TABLE_WIDTH` columns (never narrower than a short ``Type: message``)."""
    header = ("ID", "JOB", "REASON", "DELIVERIES", "FAILED AT (UTC)", "ERROR")
    rows = [
        (str(i), d.job, d.reason, str(d.deliveries), utc(d.failed_at), error_text(d))
        for i, d in letters
    ]
    widths = [max(len(row[col]) for row in (header, *rows)) for col in range(5)]
    room = max(_MIN_ERROR_WIDTH, TABLE_WIDTH - sum(widths) - 2 * len(widths))
    lines = []
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        error = row[5] if len(row[5]) <= room else row[5][: room - 3] + "..."
        lines.append("  ".join([*cells, error]).rstrip())
    return lines


def format_letter(dlq_id: int, letter: DeadLetter, app: str) -> str:
    """``show``'s text: every field of the envelope, the traceback last, indented."""
    try:
        payload = letter.payload.decode()
    except UnicodeDecodeError:
        payload = f"{letter.payload.hex()} (hex: not UTF-8)"
    error = "-" if letter.error_type is None else letter.error_type
    if letter.error_message:
        error += ": " + _indented(letter.error_message, 13).lstrip()
    lines = [
        f"dead letter {dlq_id} in {app}",
        f"job:         {letter.job}",
        f"subject:     {letter.subject} (sequence {letter.sequence})",
        f"reason:      {letter.reason}",
        f"deliveries:  {letter.deliveries}",
        f"failed at:   {utc(letter.failed_at)}",
        f"error:       {error}",
        f"payload:     {_indented(payload, 13).lstrip()}",
    ]
    if letter.traceback:
        lines += ["traceback:", _indented(letter.traceback.rstrip("\n"), 2)]
    else:
        lines.append("traceback:   - (no handler error was seen)")
    return "\n".join(lines)


def _indented(text: str, columns: int) -> str:
    return "\n".join(" " * columns + line for line in text.splitlines() or [""])
