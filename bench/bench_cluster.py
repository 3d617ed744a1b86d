"""Cluster benchmark: ``megatrio run --workers N`` on real processes, with same-run baselines.

Run ``python bench/bench_cluster.py`` from anywhere (``--quick`` for a short run); part 3 needs
``wrk`` on PATH. Every server is its own process tree, started with the repository root as its
working directory (so ``bench.cluster_apps`` is importable) and bound to 127.0.0.1 on a free
port. The app (``bench/cluster_apps.py``) answers ``GET /`` with a 13-byte body and
``GET /pid`` with the serving process's pid.

1. Respawn latency. ``megatrio run bench.cluster_apps:app --workers 2`` with the admin
   listener and JSON logs on stdout. The worker pids come from the ``worker I (pid P) ready``
   log lines and are checked against the admin endpoint ``GET /_megatrio/tree``. One worker at
   a time (alternating) gets SIGKILL, each at least ``stable`` (5.5) seconds after its own
   ready line and ``spacing`` (1.5) seconds after the previous kill: no crash is a rapid one
   (the primary gives up after more than 4 crashes with less than 1 s of uptime within 10 s)
   and every restart is a first one (the default backoff resets after 5 s of uptime; a worker
   killed again sooner waits ~0.1, 0.2, 0.4 s ... before its restart). A crash line whose
   logged uptime is well below the time the worker had been ready is reported as a problem.
   Measured from just before the kill: the primary's crash line (reaped), the replacement's
   ready line (both by the log records' own timestamps against the wall clock taken before the
   kill), and the first answer to ``GET /pid`` from the new pid (one short request on the
   public port every ``poll`` seconds; the kernel hands connections to the live workers in
   turn). With no backoff a respawn is mostly interpreter start-up, importing the app and
   starting to serve. Baselines, interleaved in the same run: ``python -c pass``,
   ``python -c "import megatrio"``, importing what a worker imports
   (``megatrio.cli._worker``, ``megatrio.app._serve`` and the app module) — each from spawn to
   the end of the script, the interpreter's finalization timed separately — and a complete
   ``python -m megatrio run bench.cluster_apps:app --workers 1`` from spawn to its first HTTP
   answer (polled every 5 ms).
2. SIGTERM-to-exit: start the server, wait until every worker is ready, leave it idle for
   ``idle`` seconds, send SIGTERM to the top process and wait for its exit on a pidfd (no
   polling). ``--workers 1`` is one process (no primary); 2 and 4 are a primary with workers.
   Baselines in the same run: the single-process ``megatrio run``, the interpreter's
   finalization with a worker's imports loaded, and bare hypercorn (``python -m hypercorn
   --worker-class trio --workers N``, a parent with N spawned worker processes) serving the
   same two handlers on bare quart-trio. ``hypercorn --workers 0`` (serving in its own
   process) is timed too but is no baseline: it installs no SIGTERM handler, so the signal
   kills it. The primary's own log lines give the phases (workers' runtimes stopped, last
   worker reaped, primary's runtime stopped). Medians over the repetitions, configurations
   interleaved.
3. Requests/s: ``wrk -t1 -c64`` on ``GET /`` (keep-alive) against ``--workers 2`` and
   ``--workers 1``, and, for reference, bare hypercorn+quart-trio with ``--workers 2`` and
   ``--workers 1``. Warm-up, then the measurement; the four servers rotate (A B C D A B C D
   ...) and each cell is the median over the rotations. The CPU time of the whole server
   process tree and of wrk during the measurement is recorded (on a 2-core machine wrk and two
   workers share two cores).

Every process this script starts carries a marker in its environment (inherited by the
workers); each server is stopped in a ``finally`` (SIGTERM, then SIGKILL of its process group
after a timeout), and at the end ``/proc`` is scanned for leftovers: any marked process still
running is reported and killed, unmarked ``megatrio worker-process`` processes (other runs) are
only counted. Progress goes to stderr, the table to stdout. Exit status 0 when every run was
valid, 1 when something went wrong (a problem is listed), 2 when wrk is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import markdown_table

REPO = Path(__file__).resolve().parent.parent
APP = "bench.cluster_apps:app"
QUART_APP = "bench.cluster_apps:quart_app"
BODY = b"hello, world\n"  # bench/cluster_apps.py: BODY
PYTHON = sys.executable
MARKER_ENV = "BENCH_CLUSTER_RUN"  # not MEGATRIO_*: megatrio reads those as config
MARKER = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0  # a measured SIGTERM-to-exit longer than this counts as a failure
KILL_AFTER = 5.0  # cleanup: SIGTERM, then SIGKILL after this long
CLK_TCK = os.sysconf("SC_CLK_TCK")
TREE_PATH = "/_megatrio/tree"
WORKER_IMPORTS = "import megatrio.cli._worker, megatrio.app._serve, bench.cluster_apps"


class BenchError(Exception):
    """A run could not be carried out (server did not start, wrk failed, ...)."""


def progress(text: str) -> None:
    print(f"[{time.perf_counter() - BEGAN:6.1f} s] {text}", file=sys.stderr, flush=True)


BEGAN = time.perf_counter()


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Line:
    mono: float
    """time.monotonic() when this script read the line."""
    text: str
    record: dict[str, Any] | None
    """The JSON log record, when the line is one."""

    @property
    def event(self) -> str:
        if self.record is None:
            return self.text
        return str(self.record.get("event", ""))

    @property
    def wall(self) -> float:
        """The record's own timestamp (UTC ISO), as seconds since the epoch."""
        assert self.record is not None
        return datetime.fromisoformat(self.record["timestamp"]).timestamp()


def marked_env() -> dict[str, str]:
    return {**os.environ, MARKER_ENV: MARKER}


class Server:
    """A server process tree started by this script; a thread reads its stdout+stderr."""

    def __init__(self, label: str, argv: list[str]) -> None:
        self.label = label
        self.argv = argv
        self.lines: list[Line] = []
        self._cond = threading.Condition()
        self._eof = False
        self.spawned = time.monotonic()
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=marked_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so cleanup can kill it all
        )
        LIVE.append(self)
        threading.Thread(target=self._read, name=f"read {label}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            mono = time.monotonic()
            text = raw.decode(errors="replace").rstrip("\n")
            record = None
            if text.startswith("{"):
                try:
                    record = json.loads(text)
                except ValueError:
                    record = None
            with self._cond:
                self.lines.append(Line(mono, text, record))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(
        self, pattern: str, *, since: int = 0, timeout: float = START_TIMEOUT
    ) -> tuple[Line, re.Match[str]]:
        """The first line from index *since* whose event matches *pattern* (re.search)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = since
        with self._cond:
            while True:
                while index < len(self.lines):
                    line = self.lines[index]
                    index += 1
                    match = regex.search(line.event)
                    if match is not None:
                        return line, match
                if self._eof:
                    raise BenchError(
                        f"{self.label}: output ended (exit {self.popen.poll()}) without "
                        f"{pattern!r}:\n{self.tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(f"{self.label}: no {pattern!r} within {timeout:.0f} s")
                self._cond.wait(remaining)

    def count_lines(self, pattern: str, count: int, timeout: float = START_TIMEOUT) -> list[Line]:
        found: list[Line] = []
        since = 0
        while len(found) < count:
            line, _ = self.wait_line(pattern, since=since, timeout=timeout)
            since = self.lines.index(line) + 1
            found.append(line)
        return found

    def tail(self, lines: int = 15) -> str:
        with self._cond:
            text = [line.text for line in self.lines[-lines:]]
        return "\n".join(text) or "(no output)"

    def sigterm_and_time(self, timeout: float = STOP_TIMEOUT) -> tuple[int | None, float]:
        """SIGTERM to the top process; (exit status or None, seconds until it exited)."""
        try:
            pidfd: int | None = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            pidfd = None
        began = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        if pidfd is None:  # no pidfd: Popen.wait polls (coarser, up to 50 ms)
            try:
                code: int | None = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
            return code, time.monotonic() - began
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            exited = bool(poller.poll(timeout * 1000))
            elapsed = time.monotonic() - began
        finally:
            os.close(pidfd)
        return (self.popen.wait() if exited else None), elapsed

    def close(self) -> None:
        """Make sure it is gone: SIGTERM, then SIGKILL to its process group."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(KILL_AFTER)
            except subprocess.TimeoutExpired:
                progress(f"{self.label}: still running {KILL_AFTER:.0f} s after SIGTERM: killing")
                with suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        if self in LIVE:
            LIVE.remove(self)


LIVE: list[Server] = []


@contextmanager
def running(label: str, argv: list[str]) -> Iterator[Server]:
    server = Server(label, argv)
    try:
        yield server
    finally:
        server.close()


def megatrio_argv(port: int, workers: int, *, admin: bool = False) -> list[str]:
    return [
        PYTHON, "-m", "megatrio", "run", APP, "--workers", str(workers),
        "--bind", f"127.0.0.1:{port}", "--admin-bind", "127.0.0.1:0" if admin else "",
        "--log-format", "json",
    ]  # fmt: skip


def hypercorn_argv(port: int, workers: int) -> list[str]:
    # --log-level info: its error log then has one "Running on" line per serving process.
    return [
        PYTHON, "-m", "hypercorn", "--worker-class", "trio", "--workers", str(workers),
        "--bind", f"127.0.0.1:{port}", "--log-level", "info", QUART_APP,
    ]  # fmt: skip


READY_RE = r"^worker (\d+) \(pid (\d+)\) ready$"


def wait_serving(server: Server, kind: str, workers: int, port: int) -> None:
    """Until every serving process is up: megatrio's ready lines, hypercorn's "Running on"."""
    if kind == "hypercorn":
        server.count_lines(r"\] Running on http://", max(workers, 1))
    elif workers > 1:
        server.count_lines(READY_RE, workers)
    else:
        wait_http(server, port)


def time_python(code: str) -> tuple[float, float]:
    """Run ``python -c CODE``: (spawn -> exit, last atexit handler -> exit) in seconds.

    The atexit handler, registered before *code* runs, runs last (after logging's): what
    follows it is the interpreter's finalization (modules, GC), until the parent reaps it.
    """
    read_fd, write_fd = os.pipe()
    stamp = (
        f"import atexit, os, time\n"
        f"atexit.register(lambda: os.write({write_fd}, repr(time.time()).encode()))\n"
    )
    try:
        began = time.monotonic()
        done = subprocess.run(
            [PYTHON, "-c", stamp + code],
            cwd=REPO,
            env=marked_env(),
            capture_output=True,
            pass_fds=(write_fd,),
            check=False,
        )
        ended_wall, ended = time.time(), time.monotonic()
        os.close(write_fd)
        write_fd = -1
        if done.returncode != 0:
            raise BenchError(f"python -c {code!r} failed: {done.stderr.decode()}")
        at_exit = float(os.read(read_fd, 100))
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    return ended - began, ended_wall - at_exit


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- /proc -------------------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (field 3, the state, is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """*root* and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(proc_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pid: int) -> float:
    try:
        fields = proc_stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def alive(pid: int) -> bool:
    try:
        return proc_stat(pid)[0] != "Z"
    except OSError:
        return False


def marked_processes() -> list[int]:
    """Live processes whose environment carries this run's marker."""
    needle = f"{MARKER_ENV}={MARKER}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0") and alive(
                    int(entry.name)
                ):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def worker_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"megatrio" in argv and b"worker-process" in argv and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def sweep() -> list[str]:
    """Stop every server still registered, then kill any process left with this run's marker.

    Returns a description of each stray process found (none after a clean run)."""
    for server in list(LIVE):
        server.close()
    strays = marked_processes()
    deadline = time.monotonic() + 2.0
    while strays and time.monotonic() < deadline:  # give orphaned workers a moment to go
        time.sleep(0.1)
        strays = [pid for pid in strays if alive(pid)]
    report = [f"pid {pid}: {cmdline(pid)}" for pid in strays]
    for pid in strays:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return report


# -- HTTP --------------------------------------------------------------------------------------


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """One ``Connection: close`` request on a fresh connection; (status, body).

    Reads up to Content-Length rather than to EOF: hypercorn's own trio worker (the baseline)
    does not always close the connection after answering ``Connection: close``.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"connection closed after {data[:80]!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        if length is None:
            raise OSError(f"no content-length in {head[:200]!r}")
        while len(body) < int(length[1]):
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"connection closed after {len(body)} bytes of body")
            body += chunk
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError(f"malformed response {head[:80]!r}") from None
    return status, body


def wait_http(server: Server, port: int, interval: float = 0.005) -> float:
    """Poll ``GET /`` until it answers 200 with the body; returns the monotonic time."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            status, body = http_get(port, "/")
        except OSError:
            if server.popen.poll() is not None:
                raise BenchError(
                    f"{server.label} exited with status {server.popen.returncode}:\n{server.tail()}"
                ) from None
            time.sleep(interval)
            continue
        answered = time.monotonic()
        if status != 200 or body != BODY:
            raise BenchError(f"{server.label}: GET / answered {status} {body!r}")
        return answered
    raise BenchError(f"{server.label}: no HTTP answer on port {port} within {START_TIMEOUT} s")


def admin_worker_pids(admin_url: str) -> dict[str, int]:
    with urllib.request.urlopen(admin_url + TREE_PATH, timeout=5) as response:
        tree = json.load(response)
    workers = next(child for child in tree["children"] if child["name"] == "workers")
    return {
        child["name"]: int(child["info"]["pid"])
        for child in workers["supervisor"]["children"]
        if child.get("info", {}).get("pid") is not None
    }


# -- statistics and the table ------------------------------------------------------------------


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def listed(values: list[float]) -> str:
    return ", ".join(f"{v * 1e3:.1f}" for v in values) + " ms"


@dataclass
class Row:
    key: str
    what: str
    megatrio: str
    baseline: str
    ratio: float | None
    target: str = "-"
    result: str = "info"


def render(rows: list[Row]) -> str:
    header = ("#", "benchmark", "megatrio", "baseline (same run)", "ratio", "target", "result")
    cells = [
        (
            r.key,
            r.what,
            r.megatrio,
            r.baseline,
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
            r.result,
        )
        for r in rows
    ]
    return markdown_table(header, cells, right={2, 4})


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    mode: str
    kills: int
    spacing: float  # at least this many seconds between two kills
    stable: float  # a worker is killed this many seconds after its ready line, not sooner
    poll: float  # seconds between HTTP polls after a kill
    start_reps: int  # repetitions of each start-up baseline
    stop_reps: int
    idle: float  # seconds idle between "all ready" and SIGTERM
    rotations: int
    warmup_seconds: int
    seconds: int
    connections: int = 64
    threads: int = 1
    parts: frozenset[int] = frozenset({1, 2, 3})


@dataclass
class Bench:
    settings: Settings
    rows: list[Row] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    finalize: list[float] = field(default_factory=list)
    """Interpreter finalization times (s) measured with the start-up baselines."""

    # -- 1. respawn ------------------------------------------------------------------------

    def respawn(self) -> None:
        s = self.settings
        port = free_port()
        progress(f"1. respawn: megatrio --workers 2 on port {port}, {s.kills} kills")
        kills: list[dict[str, float]] = []
        with running("megatrio --workers 2", megatrio_argv(port, 2, admin=True)) as server:
            _, match = server.wait_line(r"^serving admin on (http://\S+)$")
            admin = match[1]
            server.wait_line(r"^primary \(pid \d+\) serving http://\S+ with 2 worker\(s\)$")
            current: dict[int, tuple[int, Line]] = {}
            for line in server.count_lines(READY_RE, 2):
                ready_match = re.match(READY_RE, line.event)
                assert ready_match is not None
                current[int(ready_match[1])] = (int(ready_match[2]), line)
            self._check_tree(admin, current, "after start")
            last_kill = 0.0
            poll_errors = 0
            for number in range(s.kills):
                index = 1 + number % 2
                old_pid, ready_line = current[index]
                others = {pid for i, (pid, _) in current.items() if i != index}
                wake = max(ready_line.mono + s.stable, last_kill + s.spacing)
                time.sleep(max(0.0, wake - time.monotonic()))
                if server.popen.poll() is not None:
                    self.problems.append(
                        f"the primary exited before kill {number + 1}:\n{server.tail()}"
                    )
                    break
                since = len(server.lines)
                kill_wall, kill_mono = time.time(), time.monotonic()
                kill_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
                os.kill(old_pid, signal.SIGKILL)
                last_kill = kill_mono
                answered, new_http_pid = None, None
                deadline = kill_mono + START_TIMEOUT
                while time.monotonic() < deadline:
                    try:
                        status, body = http_get(port, "/pid")
                    except OSError:
                        poll_errors += 1
                        status, body = 0, b""
                    now = time.monotonic()
                    if status == 200 and int(body) not in others | {old_pid}:
                        answered, new_http_pid = now, int(body)
                        break
                    time.sleep(s.poll)
                crash, crash_match = server.wait_line(
                    rf"^child primary/workers/worker-{index} crashed after ([\d.]+) s: "
                    rf"WorkerExited: worker {index} \(pid {old_pid}\) was killed by SIGKILL",
                    since=since,
                )
                try:
                    ready, ready_match = server.wait_line(
                        rf"^worker {index} \(pid (\d+)\) ready$", since=since
                    )
                except BenchError:
                    gave_up = [
                        line.event for line in server.lines[since:] if "giving up" in line.event
                    ]
                    self.problems.append(
                        f"kill {number + 1}: no replacement; the primary exited "
                        f"{server.popen.poll()}: {' / '.join(gave_up) or server.tail()}"
                    )
                    break
                ready_for = kill_mono - ready_line.mono
                try:  # field 22, starttime: clock ticks since boot (10 ms resolution)
                    spawned = int(proc_stat(int(ready_match[1]))[19]) / CLK_TCK - kill_boot
                except (OSError, IndexError, ValueError):
                    spawned = float("nan")
                if float(crash_match[1]) < ready_for - 0.25:
                    self.problems.append(
                        f"kill {number + 1}: the primary logged worker {index} (pid {old_pid}) "
                        f"as crashed after {crash_match[1]} s of uptime, but it had been ready "
                        f"for {ready_for:.2f} s (the rapid-crash rule and the backoff judge a "
                        f"crash by that uptime)"
                    )
                new_pid = int(ready_match[1])
                if answered is None:
                    self.problems.append(f"kill {number + 1}: new worker never answered HTTP")
                elif new_http_pid != new_pid:
                    self.problems.append(
                        f"kill {number + 1}: pid {new_http_pid} answered, ready line says {new_pid}"
                    )
                kill = {
                    "uptime": float(crash_match[1]),
                    "ready_for": ready_for,
                    "reaped": crash.wall - kill_wall,
                    "ready": ready.wall - kill_wall,
                    "ready_read": ready.mono - kill_mono,
                    "spawned": spawned,
                    "boot": (ready.wall - kill_wall) - spawned,
                    "http": (answered - kill_mono) if answered is not None else float("nan"),
                }
                kills.append(kill)
                current[index] = (new_pid, ready)
                progress(
                    f"  kill {number + 1}/{s.kills}: worker {index} pid {old_pid} (up "
                    f"{kill['uptime']:.1f} s) -> reaped {ms(kill['reaped'])}, pid {new_pid} "
                    f"spawned {ms(kill['spawned'])}, ready {ms(kill['ready'])}, answers HTTP "
                    f"{ms(kill['http'])}"
                )
            if server.popen.poll() is None:
                time.sleep(0.2)
                self._check_tree(admin, current, "after the kills")
                code, seconds = server.sigterm_and_time()
                if code != 0:
                    self.problems.append(f"respawn cluster: SIGTERM -> exit status {code}")
                stopped = f"then SIGTERM -> exit {code} in {ms(seconds)}"
            else:
                stopped = f"the primary had exited ({server.popen.poll()})"
            self.raw.append(
                f"respawn cluster: {len(kills)} of {s.kills} kills done, HTTP poll errors "
                f"(connection refused/reset while polling): {poll_errors}; {stopped}"
            )

        progress(f"1. start-up baselines ({s.start_reps} reps each, interleaved)")
        commands = {
            "python -c pass": "pass",
            'python -c "import megatrio"': "import megatrio",
            "import what a worker imports": WORKER_IMPORTS,
        }
        # base: spawn -> end of the script (the interpreter's own finalization excluded, as a
        # worker's start-up has none); totals: spawn -> reaped, finalization included.
        base: dict[str, list[float]] = {name: [] for name in [*commands, "start"]}
        totals: dict[str, list[float]] = {name: [] for name in commands}
        finalize: list[float] = []
        for _ in range(s.start_reps):
            for name, code in commands.items():
                total, exiting = time_python(code)
                base[name].append(total - exiting)
                totals[name].append(total)
                if code == WORKER_IMPORTS:
                    finalize.append(exiting)
            port = free_port()
            with running("megatrio --workers 1", megatrio_argv(port, 1)) as single:
                first = wait_http(single, port)
                base["start"].append(first - single.spawned)
                status, _ = single.sigterm_and_time()
                if status != 0:
                    self.problems.append(f"megatrio --workers 1: SIGTERM -> exit status {status}")
        for name, values in base.items():
            if name == "start":
                label = "megatrio run --workers 1, spawn -> first HTTP answer"
            else:
                label = f"{name}, spawn -> end of script (finalization excluded)"
            self.raw.append(f"{label}: median {ms(median(values))} ({listed(values)})")
        for name, values in totals.items():
            self.raw.append(
                f"{name}, spawn -> reaped (finalization included): median {ms(median(values))} "
                f"({listed(values)})"
            )
        self.raw.append(
            f"interpreter exit after importing what a worker imports (last atexit handler -> "
            f"process gone): median {ms(median(finalize))} ({listed(finalize)})"
        )
        self.finalize = finalize

        def col(key: str) -> list[float]:
            return [k[key] for k in kills]

        for key, label in (
            ("reaped", "kill -> crash line (reaped)"),
            ("spawned", "kill -> replacement spawned (/proc starttime, 10 ms ticks)"),
            ("boot", "replacement spawned -> ready line"),
            ("ready", "kill -> ready line (log timestamp)"),
            ("ready_read", "kill -> ready line read by this script"),
            ("http", "kill -> new pid answers GET /pid"),
        ):
            values = col(key)
            self.raw.append(
                f"respawn {label}: p50 {ms(median(values))}, max {ms(max(values))} "
                f"({listed(values)})"
            )
        self.raw.append(
            "respawn uptime at kill as the primary logged it: "
            + ", ".join(f"{u:.2f}" for u in col("uptime"))
            + " s; ready for (this script): "
            + ", ".join(f"{u:.2f}" for u in col("ready_for"))
            + " s"
        )
        if not kills:
            return
        ready, http, reaped = col("ready"), col("http"), col("reaped")
        spawned, boot = col("spawned"), col("boot")
        start = median(base["start"])
        start_max = max(base["start"])
        imp = median(base['python -c "import megatrio"'])
        worker_imp = median(base["import what a worker imports"])
        n = len(kills)
        cold = "megatrio run --workers 1: spawn -> 1st HTTP answer"
        self.rows += [
            Row("1a", f"respawn: kill -> ready line, p50 of {n}", ms(median(ready)),
                f"{ms(start)} ({cold}, p50)", median(ready) / start),
            Row("1b", f"respawn: kill -> ready line, max of {n}", ms(max(ready)),
                f"{ms(start_max)} ({cold}, max)", max(ready) / start_max),
            Row("1c", "respawn: kill -> new pid answers HTTP, p50", ms(median(http)),
                f"{ms(start)} ({cold}, p50)", median(http) / start),
            Row("1d", "respawn: kill -> new pid answers HTTP, max", ms(max(http)),
                f"{ms(start_max)} ({cold}, max)", max(http) / start_max),
            Row("1e", "respawn: kill -> reaped (crash logged), p50", ms(median(reaped)),
                "-", None),
            Row("1f", "respawn: kill -> replacement spawned, p50", ms(median(spawned)),
                "- (no backoff: reaped + fork/exec)", None),
            Row("1g", "respawn: kill -> replacement spawned, max", ms(max(spawned)),
                "- (no backoff: reaped + fork/exec)", None),
            Row("1h", "respawn: replacement spawned -> ready, p50", ms(median(boot)),
                f"{ms(start)} ({cold}, p50)", median(boot) / start),
            Row("1i", "respawn: replacement spawned -> ready, p50", ms(median(boot)),
                f'{ms(imp)} (python -c "import megatrio", p50)', median(boot) / imp),
            Row("1j", "respawn: replacement spawned -> ready, p50", ms(median(boot)),
                f"{ms(worker_imp)} (python -c: import megatrio.cli._worker+app._serve+app)",
                median(boot) / worker_imp),
        ]  # fmt: skip

    def _check_tree(self, admin: str, current: dict[int, tuple[int, Line]], when: str) -> None:
        try:
            tree = admin_worker_pids(admin)
        except (OSError, ValueError, KeyError, StopIteration) as exc:
            self.problems.append(f"admin tree {when}: {exc!r}")
            return
        expected = {f"worker-{index}": pid for index, (pid, _) in current.items()}
        if tree != expected:
            self.problems.append(f"admin tree {when}: {tree}, ready lines say {expected}")
        else:
            self.raw.append(f"admin tree {when}: worker pids {tree} (match the ready lines)")

    # -- 2. SIGTERM to exit ----------------------------------------------------------------

    def stop_one(self, kind: str, workers: int) -> tuple[float, dict[str, float]]:
        """SIGTERM -> exit of the top process (s), and megatrio's phases from its log lines."""
        port = free_port()
        label = f"{kind} --workers {workers}"
        argv = megatrio_argv(port, workers) if kind == "megatrio" else hypercorn_argv(port, workers)
        with running(label, argv) as server:
            wait_serving(server, kind, workers, port)
            time.sleep(self.settings.idle)
            tree = process_tree(server.pid)
            since = len(server.lines)
            sent_wall = time.time()
            status, seconds = server.sigterm_and_time()
            left = [pid for pid in tree if pid != server.pid and alive(pid)]
            # hypercorn's multiprocessing resource tracker outlives its parent by a moment.
            deadline = time.monotonic() + 2.0
            while left and time.monotonic() < deadline:
                time.sleep(0.05)
                left = [pid for pid in left if alive(pid)]
            left_text = [f"{pid} ({cmdline(pid)})" for pid in left]
        # hypercorn --workers 0 installs no SIGTERM handler: the signal's default action kills it.
        expected = -signal.SIGTERM if (kind, workers) == ("hypercorn", 0) else 0
        if status is None:
            self.problems.append(f"{label}: still running {STOP_TIMEOUT:.0f} s after SIGTERM")
        elif status != expected:
            self.problems.append(f"{label}: SIGTERM -> exit status {status}:\n{server.tail()}")
        if left:
            self.problems.append(
                f"{label}: processes left 2 s after the top one exited: {left_text}"
            )
        phases: dict[str, float] = {}
        if kind == "megatrio":
            for line in server.lines[since:]:
                if line.record is None:
                    continue
                event, at = line.event, line.wall - sent_wall
                if re.match(r"^runtime \S+ stopped$", event):
                    name = (
                        "primary runtime stopped"
                        if event == "runtime primary stopped"
                        else (
                            "app runtime stopped (last worker)"
                            if workers > 1
                            else "runtime stopped"
                        )
                    )
                    phases[name] = max(phases.get(name, 0.0), at)
                elif re.match(r"^worker \d+ \(pid \d+\) exited with code 0$", event):
                    name = "primary saw the last worker exit"
                    phases[name] = max(phases.get(name, 0.0), at)
            phases["process exited"] = seconds
        return seconds, phases

    def stop(self) -> None:
        s = self.settings
        configs = [
            ("megatrio", 1), ("megatrio", 2), ("megatrio", 4),
            ("hypercorn", 0), ("hypercorn", 1), ("hypercorn", 2), ("hypercorn", 4),
        ]  # fmt: skip
        progress(f"2. SIGTERM -> exit, {len(configs)} configurations x {s.stop_reps} reps")
        times: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
        phases: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in configs}
        for rep in range(s.stop_reps):
            for kind, workers in configs:
                seconds, found = self.stop_one(kind, workers)
                times[(kind, workers)].append(seconds)
                phases[(kind, workers)].append(found)
                progress(f"  rep {rep + 1}: {kind} --workers {workers}: {ms(seconds)}")
        for (kind, workers), values in times.items():
            note = " (no SIGTERM handler: killed by the signal)" if (kind, workers) == (
                "hypercorn", 0) else ""  # fmt: skip
            self.raw.append(
                f"SIGTERM -> exit, {kind} --workers {workers}{note}: median "
                f"{ms(median(values))} ({listed(values)})"
            )
            if phases[(kind, workers)] and phases[(kind, workers)][0]:
                names = list(phases[(kind, workers)][0])
                parts = []
                for name in names:
                    got = [p[name] for p in phases[(kind, workers)] if name in p]
                    parts.append(f"{name} +{ms(median(got))}")
                self.raw.append(
                    f"  megatrio --workers {workers} after SIGTERM: " + ", ".join(parts)
                )
        med = {config: median(values) for config, values in times.items()}
        single = med[("megatrio", 1)]
        hc1 = med[("hypercorn", 1)]
        fin = median(self.finalize) if self.finalize else float("nan")
        self.rows += [
            Row("2a", "SIGTERM -> exit, --workers 1 (one process)", ms(single),
                f"{ms(hc1)} (hypercorn --workers 1: parent + 1)", single / hc1),
            Row("2b", "SIGTERM -> exit, --workers 1 (one process)", ms(single),
                f"{ms(fin)} (interpreter exit, worker imports loaded)", single / fin),
        ]  # fmt: skip
        key = iter("cdef")
        for workers in (2, 4):
            mine = med[("megatrio", workers)]
            theirs = med[("hypercorn", workers)]
            what = f"SIGTERM -> exit, --workers {workers} (primary + {workers})"
            self.rows += [
                Row(f"2{next(key)}", what, ms(mine),
                    f"{ms(single)} (megatrio run --workers 1)", mine / single),
                Row(f"2{next(key)}", what, ms(mine),
                    f"{ms(theirs)} (hypercorn --workers {workers}: parent + {workers})",
                    mine / theirs),
            ]  # fmt: skip

    # -- 3. requests/s ---------------------------------------------------------------------

    def rps_one(self, wrk: str, kind: str, workers: int) -> dict[str, Any]:
        s = self.settings
        port = free_port()
        label = f"{kind} --workers {workers}"
        argv = megatrio_argv(port, workers) if kind == "megatrio" else hypercorn_argv(port, workers)
        url = f"http://127.0.0.1:{port}/"
        with running(label, argv) as server:
            wait_serving(server, kind, workers, port)
            status, body = http_get(port, "/")
            if status != 200 or body != BODY:
                raise BenchError(f"{label}: GET / answered {status} {body!r}")
            warm = run_wrk(wrk, url, s.threads, s.connections, s.warmup_seconds)
            tree = process_tree(server.pid)
            cpu_before = {pid: cpu_seconds(pid) for pid in tree}
            began = time.monotonic()
            result = run_wrk(wrk, url, s.threads, s.connections, s.seconds)
            wall = time.monotonic() - began
            cpu = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
            code, _seconds = server.sigterm_and_time()
        for problem in warm.problems + result.problems:
            self.problems.append(f"{label}: {problem}")
        if code != 0:
            self.problems.append(f"{label}: SIGTERM -> exit status {code}")
        return {
            "rps": result.rps,
            "p50": result.p50_ms,
            "p99": result.p99_ms,
            "server_cpu": 100 * sum(cpu.values()) / wall,
            "per_process": [100 * v / wall for v in cpu.values()],
            "wrk_cpu": 100 * result.cpu_seconds / wall,
            "requests": result.requests,
        }

    def rps(self, wrk: str) -> None:
        s = self.settings
        configs = [("megatrio", 2), ("megatrio", 1), ("hypercorn", 2), ("hypercorn", 1)]
        progress(
            f"3. requests/s: wrk -t{s.threads} -c{s.connections} -d{s.seconds}s after "
            f"{s.warmup_seconds} s warm-up, {len(configs)} servers x {s.rotations} rotations"
        )
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in configs}
        for rotation in range(s.rotations):
            for kind, workers in configs:
                run = self.rps_one(wrk, kind, workers)
                runs[(kind, workers)].append(run)
                procs = " + ".join(f"{p:.0f}%" for p in run["per_process"])
                text = (
                    f"rotation {rotation + 1}: {kind} --workers {workers}: {run['rps']:,.0f} "
                    f"req/s, p50 {run['p50']:.2f} ms, p99 {run['p99']:.2f} ms, server CPU "
                    f"{run['server_cpu']:.0f}% ({procs}), wrk CPU {run['wrk_cpu']:.0f}%"
                )
                progress("  " + text)
                self.raw.append(text)
        med = {
            config: {
                key: median([r[key] for r in values]) for key in ("rps", "server_cpu", "wrk_cpu")
            }
            for config, values in runs.items()
        }
        for config, values in med.items():
            self.raw.append(
                f"median {config[0]} --workers {config[1]}: {values['rps']:,.0f} req/s, server "
                f"CPU {values['server_cpu']:.0f}%, wrk CPU {values['wrk_cpu']:.0f}% "
                f"(of {os.cpu_count()} CPUs = {100 * (os.cpu_count() or 1)}%)"
            )
        m2, m1 = med[("megatrio", 2)]["rps"], med[("megatrio", 1)]["rps"]
        h2, h1 = med[("hypercorn", 2)]["rps"], med[("hypercorn", 1)]["rps"]
        self.rows += [
            Row("3a", "req/s, megatrio --workers 2", f"{m2:,.0f}",
                f"{m1:,.0f} (megatrio --workers 1)", m2 / m1),
            Row("3b", "req/s, hypercorn+quart-trio --workers 2", f"{h2:,.0f}",
                f"{h1:,.0f} (hypercorn+quart-trio --workers 1)", h2 / h1),
            Row("3c", "req/s, megatrio --workers 2", f"{m2:,.0f}",
                f"{h2:,.0f} (hypercorn+quart-trio --workers 2)", m2 / h2),
        ]  # fmt: skip


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_seconds: float

    @property
    def problems(self) -> list[str]:
        found = []
        if self.non_2xx:
            found.append(f"wrk: {self.non_2xx} non-2xx/3xx responses")
        if self.socket_errors:
            found.append(f"wrk: {self.socket_errors} socket errors")
        if self.requests == 0:
            found.append("wrk: no requests completed")
        return found


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise BenchError(f"cannot parse wrk duration {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def run_wrk(wrk: str, url: str, threads: int, connections: int, seconds: int) -> WrkResult:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # only wrk is reaped meanwhile
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    out = done.stdout

    def find(pattern: str) -> str:
        match = re.search(pattern, out, re.MULTILINE)
        if match is None:
            raise BenchError(f"wrk output has no {pattern!r}:\n{out}")
        return match[1]

    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s*(\d+)", out, re.MULTILINE)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=float(find(r"^Requests/sec:\s*([\d.]+)")),
        p50_ms=_duration_ms(find(r"^\s*50%\s+(\S+)")),
        p99_ms=_duration_ms(find(r"^\s*99%\s+(\S+)")),
        requests=int(find(r"^\s*(\d+) requests in")),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        cpu_seconds=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    )


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


# -- main --------------------------------------------------------------------------------------


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(settings: Settings) -> int:
    wrk = shutil.which("wrk")
    if wrk is None and 3 in settings.parts:
        print(
            "bench_cluster.py: error: the load generator `wrk` is not on PATH (needed for part 3)."
            "\nInstall it with: apt-get update && apt-get install -y wrk   (Debian/Ubuntu;\n"
            "elsewhere: your package manager's `wrk`, or build https://github.com/wg/wrk)",
            file=sys.stderr,
        )
        return 2
    load_before = load_text()
    bench = Bench(settings)
    failure: str | None = None
    strays: list[str] = []
    try:
        if 1 in settings.parts:
            bench.respawn()
        if 2 in settings.parts:
            bench.stop()
        if 3 in settings.parts:
            assert wrk is not None
            bench.rps(wrk)
    except (BenchError, OSError) as exc:
        failure = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
        print(f"bench_cluster.py: error: {exc}", file=sys.stderr)
    finally:
        strays = sweep()
        foreign = worker_processes()
    progress("done")
    total = time.perf_counter() - BEGAN

    wrk_text = wrk_version(wrk) if wrk else "no wrk"
    print(
        f"megatrio cluster benchmark ({settings.mode}) - Python {platform.python_version()}, "
        f"trio {version('trio')}, hypercorn {version('hypercorn')}, quart-trio "
        f"{version('quart-trio')}, megatrio {version('megatrio')}; {wrk_text}; "
        f"{os.cpu_count()} CPUs ({cpu_model()})"
    )
    print(
        f"1: {settings.kills} SIGKILLs of one worker of --workers 2 (alternating), each >= "
        f"{settings.stable:g} s after its ready line and >= {settings.spacing:g} s after the "
        f"previous kill, HTTP polled every {settings.poll * 1e3:g} ms; start-up baselines x"
        f"{settings.start_reps}. 2: idle {settings.idle:g} s after ready, median of "
        f"{settings.stop_reps}. 3: wrk -t{settings.threads} -c{settings.connections} "
        f"-d{settings.seconds}s --latency after {settings.warmup_seconds} s warm-up, GET / "
        f"keep-alive, median of {settings.rotations} rotations"
    )
    print(f"load average before: {load_before}, after: {load_text()}")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(
            "PYTHONDONTWRITEBYTECODE is set: modules without a cached .pyc (megatrio's own, "
            "bench's) are compiled at every interpreter start, workers included"
        )
    print()
    print(render(bench.rows))
    print()
    print("raw measurements:")
    for text in bench.raw:
        print(f"  {text}")
    problems = list(bench.problems)
    if failure is not None:
        problems.append(f"benchmark aborted: {failure}")
    if strays:
        problems.append("stray processes of this run (killed): " + "; ".join(strays))
    print(f"\nstray processes of this run after the sweep: {len(strays)} (killed if any)")
    if foreign:
        print(f"megatrio worker-process processes of other runs (left alone): {len(foreign)}")
    print(f"problems: {len(problems)}")
    for problem in problems:
        print(f"  - {problem}")
    print(f"total benchmark time {total:.1f} s")
    return 1 if problems else 0


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument(
        "--parts", default="1,2,3", help="which parts to run, e.g. 1 or 2,3 (default: 1,2,3)"
    )
    args = parser.parse_args(argv)
    try:
        parts = frozenset(int(p) for p in args.parts.split(","))
    except ValueError:
        parser.error(f"--parts: expected numbers like 1,2,3, got {args.parts!r}")
    if not parts or not parts <= {1, 2, 3}:
        parser.error(f"--parts: choose among 1, 2 and 3, got {args.parts!r}")
    if args.quick:
        return Settings(
            parts=parts,
            mode="quick", kills=4, spacing=1.5, stable=5.5, poll=0.01, start_reps=2,
            stop_reps=1, idle=0.3, rotations=1, warmup_seconds=1, seconds=2,
        )  # fmt: skip
    return Settings(
        parts=parts,
        mode="full", kills=10, spacing=1.5, stable=5.5, poll=0.01, start_reps=5,
        stop_reps=3, idle=0.5, rotations=3, warmup_seconds=2, seconds=8,
    )  # fmt: skip


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so that the finally blocks stop every server


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sys.exit(main(parse_args()))
    except KeyboardInterrupt:
        print("bench_cluster.py: interrupted; servers stopped", file=sys.stderr)
        sweep()
        sys.exit(130)
