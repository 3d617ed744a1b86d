"""The worker-to-primary status pipe protocol, fed as the primary reads it."""

from __future__ import annotations

from megatrio.cli._protocol import WorkerStatus


def test_loaded_then_ready_in_any_chunking() -> None:
    status = WorkerStatus()
    for chunk in (b"loa", b"ded\nre", b"ady", b"\n"):
        status.feed(chunk)
        assert not status.ready or status.loaded
    assert (status.loaded, status.ready, status.failure()) == (True, True, None)


def test_a_failure_carries_its_exit_code_and_the_report_until_eof() -> None:
    status = WorkerStatus()
    status.feed(b"failed 2\nmegatrio: error: module 'x' has no attribute 'y'\n")
    status.feed(b"second line, ready\n")
    assert not status.loaded
    assert not status.ready  # the report is text, not protocol
    assert status.failure() == (
        2,
        "megatrio: error: module 'x' has no attribute 'y'\nsecond line, ready\n",
    )


def test_a_garbled_failure_code_means_a_fatal_error() -> None:
    status = WorkerStatus()
    status.feed(b"failed x\nboom\n")
    assert status.failure() == (1, "boom\n")
