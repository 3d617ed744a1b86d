"""The one-way protocol from a worker process to its primary: the status pipe and the config
hand-off. Both ends import it; it imports neither."""

from __future__ import annotations

import contextlib
from typing import IO

from ._exit import EXIT_FATAL

CONFIG_ENV = "MEGATRIO__CONFIG"
"""The environment variable carrying the primary's config (JSON) to its workers."""


class WorkerStatus:
    """What a worker said on its status pipe, parsed from the bytes fed to it (sans-IO).

    The pipe goes one way, worker to primary: ``loaded`` once the app is imported and built,
    then ``ready`` once it serves; or, instead, ``failed CODE`` and then, until EOF, the
    report to print — the worker could not load the app, and the primary should stop with
    exit code CODE (2: the target is wrong; 1: the app's own code raised). Lines end in
    ``\n``.
    """

    def __init__(self) -> None:
        self.loaded = False
        self.ready = False
        self._buffer = b""
        self._failed_code: int | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._failed_code is None and b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line == b"loaded":
                self.loaded = True
            elif line == b"ready":
                self.ready = True
            elif line.startswith(b"failed "):
                code = line.removeprefix(b"failed ")
                self._failed_code = int(code) if code.isdigit() else EXIT_FATAL

    def failure(self) -> tuple[int, str] | None:
        """``(exit code, report)`` once the pipe reached EOF after ``failed``, else None."""
        if self._failed_code is None:
            return None
        return self._failed_code, self._buffer.decode(errors="replace")


def tell(status: IO[bytes], message: bytes) -> None:
    # The primary may be gone already; then the parent pipe stops this worker anyway.
    with contextlib.suppress(OSError):
        status.write(message)


def report_load_failure(status: IO[bytes], code: int, report: str) -> int:
    """Hand *report* to the primary, which prints it once for all workers; exit *code*."""
    tell(status, f"failed {code}\n".encode() + report.encode())
    status.close()
    return code
