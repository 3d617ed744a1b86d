"""The dead-letter envelope: what is kept of a message that will not be delivered again."""

from __future__ import annotations

import time

from ...nursery._errors import format_exception, unwrap_group
from ..logs._redact import Redactor
from ._driver import DeadLetter, Delivery, job_subject

MAX_TRACEBACK_CHARS = 8_000
"""Characters of traceback kept in one dead letter: the head (where the handler was entered)
and the tail (where it failed), the middle elided. Frames are capped first, by
:func:`~megatrio.nursery._errors.format_exception`."""
MAX_MESSAGE_CHARS = 2_000
"""Characters of the error message kept."""

_DEFAULT_REDACTOR = Redactor()


def cap_text(text: str, limit: int) -> str:
    """*text* if it is at most *limit* characters, else its head and tail around a marker
    saying how many characters were left out (the result is at most *limit* characters plus
    the marker)."""
    if len(text) <= limit:
        return text
    omitted = len(text) - limit
    head = limit // 2
    tail = text[len(text) - (limit - head) :]
    return f"{text[:head]}\n[... {omitted} characters omitted ...]\n{tail}"


def format_failure(error: BaseException, redactor: Redactor | None = None) -> str:
    """*error*'s traceback, capped in frames and characters, secrets masked."""
    redactor = redactor or _DEFAULT_REDACTOR
    return redactor.scrub(cap_text(format_exception(error), MAX_TRACEBACK_CHARS))


def build_dead_letter(
    delivery: Delivery,
    reason: str,
    error: BaseException | None = None,
    *,
    redactor: Redactor | None = None,
    failed_at: float | None = None,
) -> DeadLetter:
    """The :class:`DeadLetter` of *delivery*, dead-lettered for *reason* after *error* (None
    when no handler error was seen, such as a lost worker).

    The error's type is its qualified name; its message and traceback are capped and
    redacted with *redactor* (default: the default sensitive keys). *failed_at* is wall-clock
    time (default: now), as :attr:`DeadLetter.failed_at` is.
    """
    redactor = redactor or _DEFAULT_REDACTOR
    error_type = message = traceback = None
    if error is not None:
        error = unwrap_group(error)
        error_type = type(error).__qualname__
        message = redactor.scrub(cap_text(str(error), MAX_MESSAGE_CHARS))
        traceback = format_failure(error, redactor)
    return DeadLetter(
        job=delivery.job,
        subject=job_subject(delivery.job),
        sequence=delivery.sequence,
        deliveries=delivery.delivery,
        failed_at=time.time() if failed_at is None else failed_at,
        reason=reason,
        error_type=error_type,
        error_message=message,
        traceback=traceback,
        payload=delivery.payload,
    )
