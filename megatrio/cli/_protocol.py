"""The one-way protocol from a worker process to its primary: the status pipe and the config
hand-off. Both ends import it; it imports neither."""

from __future__ import annotations

import contextlib
import json
from typing import IO, Any

from .._samples import Sample, from_data
from ._exit import EXIT_FATAL

CONFIG_ENV = "MEGATRIO__CONFIG"
"""The environment variable carrying the primary's config (JSON) to its workers."""


class WorkerStatus:
    """What a worker said on its status pipe, parsed from the bytes fed to it (sans-IO).

    The pipe goes one way, worker to primary: ``loaded`` once the app is imported and built,
    then ``ready`` once it serves; or, instead, ``failed CODE`` and then, until EOF, the
    report to print — the worker could not load the app, and the primary should stop with
    exit code CODE (2: the target is wrong; 1: the app's own code raised). After ``ready``,
    ``tree <json>`` lines carry the worker's supervision tree (:attr:`tree`, the latest one;
    a torn or malformed line is dropped). Lines end in ``\n``.
    """

    def __init__(self) -> None:
        self.loaded = False
        self.ready = False
        self.tree: dict[str, Any] | None = None
        self.http: dict[str, Any] | None = None
        """The worker's request counts with its latest tree (``HttpMetrics.to_dict()``)."""
        self.samples: list[Sample] | None = None
        """Its services' metric samples with its latest tree."""
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
            elif line.startswith(b"tree "):
                self._take_tree(line.removeprefix(b"tree "))
            elif line.startswith(b"failed "):
                code = line.removeprefix(b"failed ")
                self._failed_code = int(code) if code.isdigit() else EXIT_FATAL

    def _take_tree(self, data: bytes) -> None:
        try:
            report = json.loads(data)
        except ValueError:
            return
        if isinstance(report, dict) and isinstance(report.get("tree"), dict):
            self.tree = report["tree"]
            http = report.get("http")
            self.http = http if isinstance(http, dict) else None
            self.samples = list(from_data(report.get("samples")))

    def failure(self) -> tuple[int, str] | None:
        """``(exit code, report)`` once the pipe reached EOF after ``failed``, else None."""
        if self._failed_code is None:
            return None
        return self._failed_code, self._buffer.decode(errors="replace")


def tree_line(
    snapshot: dict[str, Any],
    http: dict[str, Any] | None = None,
    samples: list[list[Any]] | None = None,
) -> bytes:
    """The status-pipe line that reports *snapshot* (a worker's tree), *http* (its request
    counts, ``HttpMetrics.to_dict()``) and *samples* (its services' metrics,
    :func:`megatrio._samples.to_data`)."""
    report = {"tree": snapshot, "http": http, "samples": samples or []}
    return b"tree " + json.dumps(report, default=str, separators=(",", ":")).encode() + b"\n"


def tell(status: IO[bytes], message: bytes) -> None:
    # The primary may be gone already; then the parent pipe stops this worker anyway.
    with contextlib.suppress(OSError):
        status.write(message)


def report_load_failure(status: IO[bytes], code: int, report: str) -> int:
    """Hand *report* to the primary, which prints it once for all workers; exit *code*."""
    tell(status, f"failed {code}\n".encode() + report.encode())
    status.close()
    return code
