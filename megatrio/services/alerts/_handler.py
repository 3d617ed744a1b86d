"""The logging side of alerts: :class:`AlertHandler`, which turns ERROR records into
redacted :class:`~._alert.Alert` texts in a bounded buffer that never blocks the caller.

Records are rendered by the same formatter as the logs
(:func:`~megatrio.services.logs._logging.build_formatter` with a :class:`Redactor`), so an
alert never shows more than the logs do. The alert path's own records (``megatrio.alerts``,
``megatrio.retry_queue``) are never turned into alerts: an alert about a failing alert would
feed itself.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from typing import Final, final

from ..._policy._checks import check_count
from ..logs._levels import LogFormat
from ..logs._logging import build_formatter
from ..logs._redact import Redactor
from ._alert import Alert, truncate

DROP_BUFFER_FULL: Final = "buffer_full"
"""The handler's buffer was full when the record arrived."""
DROP_FORMAT_ERROR: Final = "format_error"
"""The record could not be formatted."""

# Records from these loggers never become alerts: they are the alert path itself.
INTERNAL_LOGGERS: Final = ("megatrio.alerts", "megatrio.retry_queue")


@final
class AlertHandler(logging.Handler):
    """A logging handler that buffers records at *level* and above as redacted alerts.

    Each record is rendered by the logging formatter (*fmt*, console lines by default) with
    *redactor*, so an alert shows exactly what the logs show, secrets masked; the text is cut
    to *max_text_chars*. :meth:`emit` never blocks and never raises: when *max_buffered*
    alerts are waiting, the new record is dropped and counted (the first errors of a storm
    usually carry its cause, so those are the ones kept). Records of the alert path's own
    loggers (``megatrio.alerts``, ``megatrio.retry_queue``) are ignored.

    Thread-safe: any thread may log; an :class:`AlertDispatcher` takes the buffer.
    """

    def __init__(
        self,
        *,
        redactor: Redactor | None = None,
        level: int = logging.ERROR,
        max_buffered: int = 1000,
        max_text_chars: int = 4000,
        fmt: LogFormat = LogFormat.CONSOLE,
    ) -> None:
        super().__init__(level)
        self.max_buffered = check_count("max_buffered", max_buffered, minimum=1)
        self.max_text_chars = check_count("max_text_chars", max_text_chars, minimum=64)
        self.redactor = Redactor() if redactor is None else redactor
        # The stream only decides AUTO's JSON-or-console; alerts have no stream of their own.
        self.setFormatter(build_formatter(fmt=fmt, redactor=self.redactor, stream=sys.stderr))
        self._buffer: collections.deque[Alert] = collections.deque()
        self._drops: collections.Counter[str] = collections.Counter()
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if any(record.name == n or record.name.startswith(n + ".") for n in INTERNAL_LOGGERS):
            return
        try:
            with self._guard:
                if len(self._buffer) >= self.max_buffered:
                    self._drops[DROP_BUFFER_FULL] += 1
                    return
            # Formatting outside the guard: it can be slow (tracebacks) and must not hold up
            # other threads' records; the formatter copies the record, never mutates it.
            text = self.redactor.scrub(self.format(record))
        except Exception:
            with self._guard:
                self._drops[DROP_FORMAT_ERROR] += 1
            return
        alert = Alert(
            text=truncate(text, self.max_text_chars),
            level=record.levelname.lower(),
            logger=record.name,
            created=record.created,
        )
        with self._guard:
            if len(self._buffer) >= self.max_buffered:
                self._drops[DROP_BUFFER_FULL] += 1
            else:
                self._buffer.append(alert)

    def take(self) -> tuple[list[Alert], dict[str, int]]:
        """Remove and return every buffered alert, with the drops counted since the last take.

        Not a checkpoint; never blocks for longer than another thread's append.
        """
        with self._guard:
            alerts = list(self._buffer)
            self._buffer.clear()
            drops = dict(self._drops)
            self._drops.clear()
        return alerts, drops

    def __len__(self) -> int:
        return len(self._buffer)
