"""Structured logging on the standard library, rendered by structlog, redacted by default.

Every record — megatrio's, the application's and libraries' (hypercorn, ...) — goes through
the root logger's one handler. Its formatter adds the level, logger name, UTC timestamp and the
supervision path of the task that logged (from :func:`megatrio.current_child`), applies the
:class:`Redactor` to every key, the message and the formatted traceback, then renders JSON lines
or readable console lines.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import IO, Any

import structlog

from ...nursery._child import current_child
from ...nursery._errors import format_exception
from ._context import add_request_id
from ._levels import LogFormat
from ._redact import Redactor

_HANDLER_NAME = "megatrio"


def add_supervision_path(
    logger: object, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``task`` = the logging task's supervision path, if any."""
    ctx = current_child()
    if ctx is not None and "task" not in event_dict:
        event_dict["task"] = "/".join(ctx.path)
    return event_dict


class _RedactProcessor:
    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(
        self, logger: object, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        redacted = self._redactor.redact(dict(event_dict))
        assert isinstance(redacted, dict)
        return redacted


def build_formatter(
    *,
    fmt: LogFormat,
    redactor: Redactor,
    stream: IO[str],
    static_fields: Mapping[str, object] | None = None,
) -> structlog.stdlib.ProcessorFormatter:
    """The formatter that renders (and redacts) every record for *stream*.

    *static_fields* are added to every record (a worker process adds its index and pid).
    """
    use_json = fmt is LogFormat.JSON or (fmt is LogFormat.AUTO and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(default=repr)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_plain_exception)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(),
            _keep_formatted_traceback,
            *_shared_processors(),
            *_static(static_fields),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before redaction, so secrets in exception messages and
            # in frames' reprs are scrubbed like everything else.
            _format_exc_info,
            _RedactProcessor(redactor),
            renderer,
        ],
    )


_FORMATTED = "_megatrio_exc_text"


def _keep_formatted_traceback(
    logger: object, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # A record logged with megatrio's log_exception carries its traceback formatted once
    # (record.exc_text); ProcessorFormatter clears that field before its processors run.
    record = event_dict.get("_record")
    text = getattr(record, "exc_text", None)
    if text:
        event_dict[_FORMATTED] = text
    return event_dict


def _format_exc_info(
    logger: object, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``exc_info`` → ``exception`` (text): the traceback formatted at the call if it was,
    else by :func:`~megatrio.nursery._errors.format_exception` (capped, no column markers)."""
    text = event_dict.pop(_FORMATTED, None)
    exc_info = event_dict.pop("exc_info", None)
    if text is None and exc_info:
        error = _exception_of(exc_info)
        if error is not None:
            text = format_exception(error)
    if text:
        event_dict["exception"] = text
    return event_dict


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        return exc_info[1] if len(exc_info) > 1 else None
    if exc_info is True:
        return sys.exc_info()[1]
    return None


def _static(fields: Mapping[str, object] | None) -> list[Any]:
    if not fields:
        return []

    def add(
        logger: object, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    return [add]


def _plain_exception(sio: IO[str], exc_info: Any) -> None:
    # format_exc_info has already turned exc_info into redacted text.
    sio.write("\n" + str(exc_info))


def _shared_processors() -> list[Any]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_supervision_path,
        add_request_id,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(
    *,
    level: int = logging.INFO,
    fmt: LogFormat = LogFormat.AUTO,
    redact_keys: Iterable[str] = (),
    stream: IO[str] | None = None,
    static_fields: Mapping[str, object] | None = None,
) -> logging.Handler:
    """Route all logging through one redacting structlog handler on the root logger.

    Replaces a handler installed by an earlier call (idempotent); other handlers are kept.
    structlog's own loggers (``structlog.get_logger()``) go through the same handler.
    Returns the handler.
    """
    stream = sys.stdout if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        build_formatter(
            fmt=fmt, redactor=Redactor(redact_keys), stream=stream, static_fields=static_fields
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return handler
