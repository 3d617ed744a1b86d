"""``megatrio run --reload``: a real primary, real workers, real edits to the app's files."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .cli_support import Process

APP_V1 = """\
import megatrio

app = megatrio.App("dev")


@app.get("/")
async def index():
    return "v1"
"""


class Client(threading.Thread):
    """Sends GET / on a fresh connection, one request after the other, until stopped;
    keeps every answer and every error."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.bodies: list[str] = []
        self.errors: list[BaseException] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                self.bodies.append(conn.getresponse().read().decode())
            except Exception as exc:
                self.errors.append(exc)
            finally:
                conn.close()

    def latest(self) -> str | None:
        return self.bodies[-1] if self.bodies else None

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=20)


class Reloading(Process):
    """``megatrio run TARGET --reload ...`` on a free port, ready once it serves and watches."""

    def __init__(self, cwd: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        args = ["run", "app:app", "--reload", "--bind", "127.0.0.1:0", "--log-format", "json"]
        super().__init__([*args, *extra], cwd=cwd, env=env)
        self.wait_line("for changes to .py files")
        url = self.wait_for(lambda: self._event(r"serving (http://\S+) with"), what="serving")
        self.port = int(url.rsplit(":", 1)[1])

    def _event(self, pattern: str) -> str | None:
        for event in self.events():
            match = re.search(pattern, event)
            if match:
                return match[1]
        return None

    def events(self) -> list[str]:
        return [str(r.get("event")) for r in self.records()]

    def reload_lines(self) -> list[str]:
        return [e for e in self.events() if "reloading" in e]


def _rewrite(path: Path, text: str, *, keep_mtime: bool = False) -> None:
    """Write *text* to *path*; with *keep_mtime*, restore its old mtime, as an edit within
    the same second would leave it (the bytecode cache cannot tell then)."""
    before = path.stat()
    path.write_text(text)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_edit_is_served_by_a_new_worker_and_no_connection_is_refused(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP_V1)
    # Bytecode is written (as it is by default), so a stale cache would show.
    server = Reloading(tmp_path, "--admin-bind", "", env={"PYTHONDONTWRITEBYTECODE": ""})
    client = Client(server.port)
    try:
        client.start()
        server.wait_for(lambda: client.latest() == "v1", what="v1 served")
        assert list((tmp_path / "__pycache__").glob("app.*.pyc"))
        # Same size, same mtime: only the reloader's removal of the bytecode makes v2 load.
        _rewrite(app, APP_V1.replace("v1", "v2"), keep_mtime=True)
        edited = time.monotonic()
        server.wait_for(lambda: client.latest() == "v2", timeout=10, what="v2 served")
        assert time.monotonic() - edited < 5
        assert server.reload_lines() == ["app.py changed: reloading 1 worker(s)"]

        app.write_text(APP_V1.replace("v1", "v2") + "\ndef broken(:\n    pass\n")
        server.wait_line("waiting for a change to reload")
        error = (
            "megatrio: error: cannot load 'app:app': SyntaxError: invalid syntax (app.py, line 10)"
        )
        server.wait_line(error)
        assert server.proc.poll() is None, "the primary gave up on a syntax error"
        assert server.err.count(error) == 1
        assert f'  File "{app}", line 10' in server.err
        [failed] = [e for e in server.events() if "cannot load" in e]
        assert failed == "worker 1 cannot load the app: waiting for a change to reload"

        app.write_text(APP_V1.replace("v1", "v3"))
        server.wait_for(lambda: client.latest() == "v3", timeout=10, what="v3 served")
        assert len(server.reload_lines()) == 3
    finally:
        client.stop()
        server.signal(signal.SIGTERM)
        code = server.finish()
        server.kill()
    # The requests made while no worker could serve waited in the backlog and got v3; none
    # was refused. A stopping worker closes a connection it accepted but has not read a
    # request from yet (as any graceful HTTP stop does with idle connections): at most one
    # such request per reload with one client sending one request at a time.
    refused = [e for e in client.errors if isinstance(e, ConnectionRefusedError)]
    assert refused == []
    unanswered = (http.client.RemoteDisconnected, ConnectionResetError)
    assert all(isinstance(e, unanswered) for e in client.errors), client.errors
    assert len(client.errors) <= len(server.reload_lines())
    assert set(client.bodies) == {"v1", "v2", "v3"}
    assert code == 0


APP_WITH_LIB = """\
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent / "lib"))

import a
import b
import megatrio

app = megatrio.App("dev")


@app.get("/")
async def index():
    return a.VALUE + b.VALUE
"""


def _workers(server: Process, admin: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(admin + "/_megatrio/tree", timeout=10) as response:
        tree = json.loads(response.read())
    [workers] = [c for c in tree["children"] if c["name"] == "workers"]
    children: list[dict[str, Any]] = workers["supervisor"]["children"]
    return children


def test_a_burst_in_a_reload_dir_restarts_every_worker_once_and_never_counts_as_a_crash(
    tmp_path: Path,
) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.py").write_text('VALUE = "a1"\n')
    (tmp_path / "lib" / "b.py").write_text('VALUE = "b1"\n')
    (tmp_path / "app.py").write_text(APP_WITH_LIB)
    # No rapid crash tolerated at all: a reload that counted as one would stop the primary.
    server = Reloading(
        tmp_path,
        "--reload-dir",
        "lib",
        "--workers",
        "2",
        "--admin-bind",
        "127.0.0.1:0",
        env={"MEGATRIO_WORKER_MAX_RESTARTS": "0"},
    )
    admin = server.wait_for(lambda: server._event(r"serving admin on (http://\S+)"))

    def replaced(old: set[int]) -> set[int] | None:
        """The pids of the two workers once both are ready and none of them is in *old*."""
        info = [w.get("info", {}) for w in _workers(server, admin)]
        pids = {i["pid"] for i in info if i.get("ready")}
        return pids if len(pids) == 2 and not pids & old else None

    try:
        before = server.wait_for(lambda: replaced(set()), what="both workers ready")
        # Outside the reload dir, and not Python: neither may be named or cause a reload.
        (tmp_path / "app.py").write_text(APP_WITH_LIB + "\n")
        (tmp_path / "lib" / "notes.txt").write_text("not code\n")
        (tmp_path / "lib" / "a.py").write_text('VALUE = "a2"\n')
        (tmp_path / "lib" / "b.py").write_text('VALUE = "b2"\n')
        server.wait_line("reloading")
        after = server.wait_for(lambda: replaced(before), what="both workers replaced")
        assert server.reload_lines() == ["lib/a.py, lib/b.py changed: reloading 2 worker(s)"]
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=10) as r:
            assert r.read() == b"a2b2"
        # Again at once, while the new workers have been up for well under a second.
        (tmp_path / "lib" / "a.py").write_text('VALUE = "a3"\n')
        server.wait_for(lambda: replaced(after), what="both workers replaced again")
        assert server.proc.poll() is None
        assert [w["restarts"] for w in _workers(server, admin)] == [0, 0]
        assert [w["name"] for w in _workers(server, admin)] == ["worker-1", "worker-2"]
        assert not [e for e in server.events() if "crashed" in e or "giving up" in e]
    finally:
        server.signal(signal.SIGTERM)
        code = server.finish()
        server.kill()
    assert code == 0


def test_a_worker_failing_before_ready_waits_for_the_next_change(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    failing = (
        "import megatrio\n\n\nclass Dev(megatrio.App):\n    async def on_start(self, rt):\n"
        '        raise RuntimeError("no db")\n\n\napp = Dev("dev")\n'
    )
    app.write_text(APP_V1)
    server = Reloading(tmp_path, "--admin-bind", "")
    try:
        server.wait_line("worker 1 (pid")
        app.write_text(failing)
        line = server.wait_line("before it was ready: waiting for a change to reload")
        assert re.search(r"worker 1 \(pid \d+\) exited with code 1 during boot", line)
        assert server.proc.poll() is None
        app.write_text(APP_V1.replace("v1", "v2"))

        def serves_v2() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=10) as r:
                    return bool(r.read() == b"v2")
            except OSError:
                return False

        server.wait_for(serves_v2, what="v2 served")
        assert not [e for e in server.events() if "crashed" in e or "giving up" in e]
    finally:
        server.signal(signal.SIGTERM)
        code = server.finish()
        server.kill()
    assert code == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--reload-dir", "."], "command-line option --reload-dir needs --reload"),
        (
            ["--reload", "--reload-dir", "no/such/dir"],
            "command-line option --reload-dir: not a directory: 'no/such/dir'",
        ),
        (
            ["--reload", "--uds", "/tmp/megatrio-reload-test.sock"],
            "--reload cannot serve uds: its primary binds only the bind addresses",
        ),
    ],
    ids=["reload-dir-alone", "missing-dir", "uds"],
)
def test_bad_reload_options_are_one_line_and_exit_two(
    tmp_path: Path, options: list[str], message: str
) -> None:
    (tmp_path / "app.py").write_text(APP_V1)
    proc = Process(["run", "app:app", "--admin-bind", "", *options], cwd=tmp_path)
    assert proc.finish() == 2
    assert proc.err == [f"megatrio: error: {message}"]


def test_reload_without_watchfiles_says_how_to_get_it(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP_V1)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "watchfiles.py").write_text("raise ImportError(\"No module named 'watchfiles'\")\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])}
    proc = Process(["run", "app:app", "--reload", "--admin-bind", ""], cwd=tmp_path, env=env)
    assert proc.finish() == 2
    assert proc.err == [
        "megatrio: error: --reload needs the watchfiles package: pip install 'megatrio[reload]'"
    ]
