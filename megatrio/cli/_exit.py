"""The ``megatrio`` command's exit codes, the same with one process and with ``--workers``."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
"""A graceful stop: everything stopped within its grace."""
EXIT_FATAL: Final = 1
"""A fatal error: a listener could not be bound, the app's code failed to import or build, a
child crashed past its restart intensity, ``on_start`` raised."""
EXIT_USAGE: Final = 2
"""A usage or configuration error (one line naming what was wrong)."""
EXIT_FORCED: Final = 3
"""A forced stop: a second signal, or the grace ran out, and work in progress was cut off
(with ``--workers``: a worker had to be killed)."""
# A further signal while the event loop is blocked exits from the signal handler with
# 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process
# killed by that signal: see megatrio.nursery._signals.
