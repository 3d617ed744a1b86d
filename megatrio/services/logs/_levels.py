"""The vocabulary of the logging pipeline: how records are rendered and the minimum level.

Defined here, with the pipeline that uses them, so that services need nothing from the config
layer above them; :mod:`megatrio._config` uses these enums for its ``log_*`` keys.
"""

from __future__ import annotations

import enum


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
