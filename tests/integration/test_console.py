"""``megatrio console``: tracebacks, log records around the prompt, scope, the redacted tree.

Each test drives a real ``megatrio console`` process: through pipes, or through a
pseudo-terminal where the prompt and line editing are those a person sees.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from .cli_support import APPS, Process

CONSOLE = ["console", "--bind", "127.0.0.1:0", "--admin-bind", ""]

APP = '''\
import megatrio
import trio


class Leaky(megatrio.App):
    """Its child crashes once, with a secret in the message, then runs."""

    name = "leaky"
    crashed = False

    def setup(self):
        self.add_child(megatrio.ChildSpec("flaky", self.flaky))

    async def flaky(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        if not Leaky.crashed:
            Leaky.crashed = True
            raise RuntimeError("login failed: password=hunter2")
        await trio.sleep_forever()


def explode():
    raise RuntimeError("from the app's module")
'''


def _console(target: str, statements: str, *, cwd: Path = APPS) -> Process:
    """Run the console on *target*, feed it *statements* on a pipe, then end of input."""
    proc = Process([CONSOLE[0], target, *CONSOLE[1:]], cwd=cwd, stdin=True)
    assert proc.proc.stdin is not None
    proc.proc.stdin.write(statements)
    proc.proc.stdin.close()
    assert proc.finish() == 0
    return proc


def test_a_traceback_starts_at_the_users_statement(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    statements = (
        "def f():\n"
        "    raise ValueError('boom')\n"
        "\n"
        "f()\n"
        "async def g():\n"
        "    await trio.sleep(0)\n"
        "    raise KeyError('k')\n"
        "\n"
        "await g()\n"
        "await rt.stop_child('nope')\n"
        "import app as module\n"
        "module.explode()\n"
    )
    proc = _console("app:Leaky", statements, cwd=tmp_path)
    # What the REPL printed; log records (JSON lines on a pipe) carry their own tracebacks.
    err = "\n".join(line for line in proc.err if not line.startswith("{"))
    head = "Traceback (most recent call last):\n"
    statement = '  File "<console>", line 1, in <module>\n'
    assert head + statement + '  File "<console>", line 2, in f\nValueError: boom\n' in err
    assert head + statement + "  File \"<console>\", line 3, in g\nKeyError: 'k'\n" in err
    # Raised inside megatrio: only the user's line is shown.
    assert head + statement + "LookupError: supervisor 'leaky' has no child 'nope'\n" in err
    # The user's own module is not machinery.
    assert (
        head + statement + f'  File "{tmp_path / "app.py"}", line 23, in explode\n'
        '    raise RuntimeError("from the app\'s module")\n'
        "RuntimeError: from the app's module\n"
    ) in err
    assert err.count(head) == 4
    for machinery in ("trio/_threads.py", "outcome", "concurrent/futures", "/megatrio/"):
        assert machinery not in err


def test_megatrio_is_in_scope_and_tree_prints_the_tree_redacted(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    statements = (
        "print('version', megatrio.__version__, trio.__name__)\n"
        "while rt.snapshot()['children'][-1]['restarts'] == 0:\n"
        "    await trio.sleep(0.01)\n"
        "\n"
        "tree()\n"
    )
    proc = _console("app:Leaky", statements, cwd=tmp_path)
    out = "\n".join(proc.out)
    assert f"version {_version()} trio" in out
    [flaky] = [line for line in proc.out if "flaky" in line]
    assert flaky.endswith("last error: RuntimeError: login failed: password=[REDACTED]")
    assert "hunter2" not in out


def _version() -> str:
    import megatrio

    return megatrio.__version__


def test_log_records_from_the_prompt_go_to_stderr() -> None:
    proc = _console(
        "basic:Basic",
        "import logging\nlogging.getLogger('shop').warning('written from the prompt')\n",
    )
    assert any("written from the prompt" in line for line in proc.err)
    assert not any("written from the prompt" in line for line in proc.out)


class Terminal:
    """A process on a pseudo-terminal: everything it writes, as the terminal receives it."""

    def __init__(self, args: list[str], *, cwd: Path) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "megatrio", *args],
            cwd=cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "TERM": "dumb", "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        os.close(slave)
        self.screen = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # the last writer is gone
                return
            if not data:
                return
            self.screen.extend(data)

    def wait_for(self, pattern: bytes, timeout: float = 15) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, bytes(self.screen))
            if match:
                return match
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {pattern!r}; screen: {bytes(self.screen)!r}")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self, *, wait: bool = True) -> int:
        """Wait for the process to exit (kill it without *wait*); returns its exit code."""
        try:
            if wait:
                return self.proc.wait(timeout=30)
            return -1
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            os.close(self.master)


def test_a_log_record_at_the_prompt_gets_its_own_line_and_the_prompt_is_redrawn() -> None:
    terminal = Terminal([CONSOLE[0], "basic:Basic", *CONSOLE[1:]], cwd=APPS)
    try:
        url = terminal.wait_for(rb"serving on (http://\S+)")[1].decode()
        terminal.wait_for(rb">>> $")
        terminal.type(b"pri")  # half a statement, not yet entered
        terminal.wait_for(rb">>> pri$")
        with urllib.request.urlopen(url + "/slow?seconds=0", timeout=10) as response:
            assert response.read() == b"slow done"  # its handler logs a record
        # The prompt line is blanked, the record written from the left margin, then the
        # prompt and the typed text are back.
        terminal.wait_for(rb">>> pri\r\x1b\[K[^\r\n]*slow request started[^\r\n]*\r\n>>> pri")
        # And the request's access record the same way, before anything is typed.
        terminal.wait_for(rb"\r\x1b\[K[^\r\n]*GET /slow 200[^\r\n]*\r\n>>> pri$")
        terminal.type(b"nt('typed', 6 * 7)\n")  # readline still holds "pri"
        terminal.wait_for(rb"\r\ntyped 42\r\n")
        terminal.type(b"\x04")  # Ctrl-D
        terminal.wait_for(rb"stopped\r\n")
    except BaseException:
        terminal.close(wait=False)
        raise
    assert terminal.close() == 0
