"""Signals in a real process: first = graceful stop within grace, second = immediate."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

APP = Path(__file__).with_name("signal_app.py")


def wait_for_line(stream: IO[str], text: str, timeout: float = 30) -> bool:
    """Read *stream* line by line until one contains *text*; False at EOF or timeout."""
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(timeout=left):
                line = stream.readline()
                if not line:
                    return False
                if text in line:
                    return True
        return False
    finally:
        sel.close()


def spawn(mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(APP), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    if not wait_for_line(proc.stdout, "ready"):
        proc.kill()
        pytest.fail(f"{APP.name} did not report ready: {proc.communicate()}")
    return proc


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process did not exit within {timeout} s:\n{out}\n{err}")
    return proc.returncode, out, err, time.monotonic() - t0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_stops_gracefully_and_exits_zero(signum: signal.Signals) -> None:
    proc = spawn("graceful")
    proc.send_signal(signum)
    code, out, err, elapsed = finish(proc, timeout=20)
    assert code == 0, err
    assert out.splitlines() == ["slow: cleaned up", "runtime exited"]
    assert f"received {signum.name}: stopping gracefully" in err
    assert "Traceback" not in err
    assert elapsed < 10  # 0.5 s of cleanup, far inside the 30 s grace


def test_second_signal_cancels_at_once() -> None:
    proc = spawn("stubborn")
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    # Once the first signal is read, the runtime waits on "stubborn" (60 s grace).
    assert wait_for_line(proc.stderr, "received SIGTERM: stopping gracefully")
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    code, out, err, elapsed = finish(proc, timeout=20)
    assert code == 0, err
    assert "received SIGINT again: cancelling everything now" in err
    # "slow" never got to clean up: everything was cancelled.
    assert out.splitlines() == ["runtime exited"]
    assert elapsed < 10


def test_a_signal_still_ends_a_process_whose_loop_is_blocked() -> None:
    proc = spawn("blocked")
    assert proc.stderr is not None
    # The watchdog thread names the child that holds the loop, with its stack.
    assert wait_for_line(proc.stderr, "supervised child megatrio/blocker holds it")
    proc.send_signal(signal.SIGTERM)  # cannot be read: the loop does not run
    assert wait_for_line(proc.stderr, "SIGTERM received while the event loop is blocked")
    proc.send_signal(signal.SIGTERM)  # ends the process from the handler
    code, out, err, _elapsed = finish(proc, timeout=20)
    assert code == 128 + signal.SIGTERM
    assert "SIGTERM again while the event loop is blocked: exiting at once" in err
    assert "slow: cleaned up" not in out
