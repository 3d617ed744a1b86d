"""HTTP serving benchmark: megatrio's two HTTP/1.1 fronts against hypercorn and uvicorn.

Run ``python bench/bench_http.py`` from anywhere (``--quick`` for a short run); it needs ``wrk``
on PATH. Ten servers, each its own process bound to 127.0.0.1 on a free port, all serving the
same trivial ``GET /`` (a 13-byte text body) from ``bench/http_apps/``:

- megatrio, fast front: ``python -m megatrio run bench.http_apps.megatrio_app:app --http fast``
  (admin listener off, log level warning, JSON logs) — the App's Quart routes on megatrio's
  own HTTP/1.1 front, under megatrio's runtime;
- megatrio, fast front, access log on: the same at log level info, so each request writes its
  access record (JSON, to the server's log file) — the access log's cost is this row against
  the first (whose level, warning, writes no access record);
- megatrio, lean route: ``bench.http_apps.megatrio_raw_app:app``, the same handler on a
  ``raw=True`` route (dispatched before Quart, without its request machinery), fast front;
- megatrio, hypercorn front: the same with ``--http hypercorn`` (hypercorn's trio worker);
- quart-trio on hypercorn: ``python -m hypercorn --worker-class trio
  bench.http_apps.quart_app:app`` with the same handler (hypercorn's defaults: one worker
  process, access log off; error log at warning);
- raw ASGI on the fast front: ``python -m bench.http_apps.fast_asgi HOST:PORT``, a raw ASGI
  callable sending the same response, on megatrio's front without the runtime;
- raw ASGI on hypercorn trio / asyncio: the same callable, ``python -m hypercorn
  --worker-class trio|asyncio bench.http_apps.asgi_app:app``;
- Quart on uvicorn, Starlette on uvicorn: ``python -m uvicorn`` (its defaults: httptools,
  the asyncio loop unless uvloop is installed, access log off here) with the same handler on
  Quart (asyncio), and on Starlette.

The servers are started with the repository root as their working directory, which is how
``bench.http_apps`` is found (``bench`` is a package; ``python -m`` puts the cwd on sys.path).
Each app is its own module, so each server imports only its own stack.

Each run: start the server pinned to CPU 0 (``taskset``, when there is more than one CPU),
poll its port until it accepts, check one response, warm up with wrk (pinned to CPU 1),
measure with ``wrk -t1 -c32 --latency``, read the serving process's RSS and CPU time, then
SIGTERM it and require it to exit within a few seconds (megatrio with status 0). The servers
run one after another, each target's two servers back to back, and the rotation repeats with its
order reversed every other time (A B C D ... D C B A ...); each column is the median over the
rotations, and a target's ratio (``paired``, and the verdict) is the median of the rotations'
own ratios, which a machine whose speed drifts over minutes moves less. Any non-2xx response or
socket error invalidates the run. Besides req/s and latency the table shows each server's CPU
time per request, the share of a core it got and the CPU all other processes used meanwhile,
and the script warns when the machine was busy: on a shared machine, CPU per request is the
steadier comparison.

Targets (as paired ratios from the same run): megatrio on the fast front >= 0.9x Quart on
uvicorn; megatrio's lean route >= 0.5x Starlette on uvicorn; raw ASGI on the fast front >= 1.0x
raw ASGI on hypercorn's asyncio worker; megatrio on hypercorn >= 0.95x bare quart-trio on
hypercorn.

Progress goes to stderr, the table to stdout. Exit status 0 when every run was valid (whatever
the targets say), 1 when a run was invalid, 2 when wrk is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from _common import markdown_table

REPO = Path(__file__).resolve().parent.parent
EXPECTED_BODY = b"hello, world\n"  # bench/http_apps/__init__.py: BODY
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
BUSY_SERVER_CPU = 90.0  # below this the server was starved (or not saturated): warn
BUSY_OTHER = 0.25  # cores used by other processes meanwhile above which to warn
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A run could not be carried out (server did not start, wrk failed, ...)."""


# -- the servers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    key: str
    label: str
    command: tuple[str, ...]
    """argv after the interpreter; ``{bind}`` stands for HOST:PORT, ``{host}``/``{port}``."""
    kind: str
    """``megatrio`` (must exit 0 on SIGTERM), ``hypercorn`` (its spawned worker serves), or
    ``plain`` (the process itself serves)."""

    def argv(self, port: int) -> list[str]:
        values = {"bind": f"127.0.0.1:{port}", "host": "127.0.0.1", "port": str(port)}
        argv = [sys.executable, *(part.format(**values) for part in self.command)]
        if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
            argv = ["taskset", "-c", "0", *argv]
        return argv


def _megatrio(
    front: str, log_level: str = "warning", target: str = "bench.http_apps.megatrio_app:app"
) -> tuple[str, ...]:
    # At "warning" the access log (info records on megatrio.access) writes nothing.
    return (
        "-m", "megatrio", "run", target, "--bind", "{bind}",
        "--admin-bind", "", "--log-level", log_level, "--log-format", "json", "--http", front,
    )  # fmt: skip


def _hypercorn(worker: str, target: str) -> tuple[str, ...]:
    # hypercorn's access log is off unless --access-logfile is given.
    return (
        "-m", "hypercorn", "--worker-class", worker, "--bind", "{bind}", "--log-level",
        "warning", target,
    )  # fmt: skip


def _uvicorn(target: str) -> tuple[str, ...]:
    return (
        "-m", "uvicorn", "--host", "{host}", "--port", "{port}", "--log-level", "warning",
        "--no-access-log", target,
    )  # fmt: skip


MEGATRIO_FAST = Server(
    "megatrio-fast", "megatrio run (App), fast front", _megatrio("fast"), "megatrio"
)
MEGATRIO_LOGGED = Server(
    "megatrio-log",
    "megatrio run (App), fast front, access log on",
    _megatrio("fast", "info"),
    "megatrio",
)
MEGATRIO_RAW = Server(
    "megatrio-raw",
    "megatrio run (App), lean route (raw=True)",
    _megatrio("fast", target="bench.http_apps.megatrio_raw_app:app"),
    "megatrio",
)
MEGATRIO = Server(
    "megatrio", "megatrio run (App), hypercorn front", _megatrio("hypercorn"), "megatrio"
)
QUART = Server(
    "quart", "quart-trio on hypercorn trio", _hypercorn("trio", "bench.http_apps.quart_app:app"),
    "hypercorn",
)  # fmt: skip
ASGI_FAST = Server(
    "asgi-fast", "raw ASGI on the fast front", ("-m", "bench.http_apps.fast_asgi", "{bind}"),
    "plain",
)  # fmt: skip
ASGI = Server(
    "asgi", "raw ASGI on hypercorn trio", _hypercorn("trio", "bench.http_apps.asgi_app:app"),
    "hypercorn",
)  # fmt: skip
ASGI_ASYNCIO = Server(
    "asgi-aio", "raw ASGI on hypercorn asyncio",
    _hypercorn("asyncio", "bench.http_apps.asgi_app:app"), "hypercorn",
)  # fmt: skip
QUART_UVICORN = Server(
    "quart-uv", "Quart on uvicorn", _uvicorn("bench.http_apps.quart_asyncio_app:app"), "plain"
)
STARLETTE = Server(
    "starlette-uv", "Starlette on uvicorn", _uvicorn("bench.http_apps.starlette_app:app"), "plain"
)
SERVERS = (
    MEGATRIO_FAST,
    MEGATRIO_LOGGED,
    MEGATRIO_RAW,
    MEGATRIO,
    QUART,
    ASGI_FAST,
    ASGI,
    ASGI_ASYNCIO,
    QUART_UVICORN,
    STARLETTE,
)

RUN_ORDER = (
    MEGATRIO_FAST,
    QUART_UVICORN,
    MEGATRIO_RAW,
    STARLETTE,
    ASGI_FAST,
    ASGI_ASYNCIO,
    MEGATRIO,
    QUART,
    MEGATRIO_LOGGED,
    ASGI,
)
"""The order of one rotation (reversed every other rotation): each target's two servers run
back to back, in both orders, so that a machine whose speed drifts over minutes (a shared VM)
moves both sides of a ratio alike."""

TARGETS = {
    MEGATRIO_FAST.key: (QUART_UVICORN, 0.9),
    MEGATRIO_RAW.key: (STARLETTE, 0.5),
    ASGI_FAST.key: (ASGI_ASYNCIO, 1.0),
    MEGATRIO.key: (QUART, 0.95),
}
"""A server's target: at least this ratio of that server's req/s, in the same run."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_accepting(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with status {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"server did not accept on port {port} within {START_TIMEOUT:.0f} s")


def check_response(url: str) -> None:
    with urllib.request.urlopen(url, timeout=START_TIMEOUT) as response:
        status, body = response.status, response.read()
    if status != 200 or body != EXPECTED_BODY:
        raise BenchError(f"GET {url}: expected 200 {EXPECTED_BODY!r}, got {status} {body!r}")


def serving_pid(server: Server, proc: subprocess.Popen[bytes]) -> int:
    """The process that serves: megatrio's own; hypercorn's spawned worker (not the parent)."""
    if server.kind != "hypercorn":
        return proc.pid
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == proc.pid and b"spawn_main" in cmdline:
            return int(entry.name)
    return proc.pid  # hypercorn --workers 0 would serve in the parent


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (not idle, not iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of *pid* in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]

    @property
    def problems(self) -> list[str]:
        found = []
        if self.non_2xx:
            found.append(f"{self.non_2xx} non-2xx responses")
        if any(self.socket_errors.values()):
            errors = ", ".join(f"{k} {v}" for k, v in self.socket_errors.items() if v)
            found.append(f"socket errors: {errors}")
        if self.requests == 0:
            found.append("no requests completed")
        return found


# Counts every response whose status is not 2xx, exactly (wrk's own "Non-2xx or 3xx responses"
# counter only counts statuses >= 400). ``bad`` is global so that ``done`` can read it from each
# thread's Lua state.
STATUS_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("bad") end
  io.write(string.format("non-2xx responses (script): %d\\n", total))
end
"""

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise BenchError(f"cannot parse wrk duration {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"wrk output has no {pattern!r}:\n{output}")
        return match

    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s*(\d+)", output, re.MULTILINE)
    not_2xx = find(r"^non-2xx responses \(script\): (\d+)")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        rps=float(find(r"^Requests/sec:\s*([\d.]+)")[1]),
        p50_ms=_duration_ms(find(r"^\s*50%\s+(\S+)")[1]),
        p99_ms=_duration_ms(find(r"^\s*99%\s+(\S+)")[1]),
        requests=int(find(r"^\s*(\d+) requests in")[1]),
        non_2xx=max(int(non_2xx[1]) if non_2xx else 0, int(not_2xx[1])),
        socket_errors=dict(
            zip(
                ("connect", "read", "write", "timeout"),
                (int(n) for n in errors.groups()) if errors else (0, 0, 0, 0),
                strict=True,
            )
        ),
    )


def run_wrk(
    wrk: str, script: Path, url: str, threads: int, connections: int, seconds: int
) -> WrkResult:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
        argv = ["taskset", "-c", "1", *argv]
    argv += ["-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return parse_wrk(done.stdout)


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


# -- one run -----------------------------------------------------------------------------------


@dataclass
class Run:
    server: Server
    rotation: int
    wrk: WrkResult
    cpu_percent: float
    cpu_us_per_request: float
    wrk_percent: float
    other_cores: float
    """CPU used meanwhile by everything but the server and wrk, in cores (the machine's noise)."""
    rss_kib: int
    hwm_kib: int
    exit_code: int | None
    stop_seconds: float
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    mode: str
    rotations: int
    warmup_seconds: int
    seconds: int
    threads: int = 1
    connections: int = 32


def run_server(server: Server, rotation: int, wrk: str, settings: Settings, tmp: Path) -> Run:
    port = free_port()
    log = tmp / f"{server.key}-{rotation}.log"
    script = tmp / "status.lua"
    url = f"http://127.0.0.1:{port}/"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            server.argv(port),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a failure can kill it all
        )
    try:
        wait_accepting(proc, port, log)
        check_response(url)
        pid = serving_pid(server, proc)
        warm = run_wrk(
            wrk, script, url, settings.threads, settings.connections, settings.warmup_seconds
        )
        problems = [f"warm-up: {p}" for p in warm.problems]
        busy_before, wrk_before = machine_busy_seconds(), children_cpu_seconds()
        cpu_before, began = cpu_seconds(pid), time.monotonic()
        result = run_wrk(wrk, script, url, settings.threads, settings.connections, settings.seconds)
        cpu, wall = cpu_seconds(pid) - cpu_before, time.monotonic() - began
        wrk_cpu = children_cpu_seconds() - wrk_before
        other = machine_busy_seconds() - busy_before - cpu - wrk_cpu
        problems += result.problems
        rss, hwm = memory_kib(pid)
        stop_began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            exit_code: int | None = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            exit_code = None
            problems.append(f"still running {STOP_TIMEOUT:.0f} s after SIGTERM")
        stop_seconds = time.monotonic() - stop_began
        if server.kind == "megatrio" and exit_code not in (0, None):
            problems.append(f"exited with status {exit_code} after SIGTERM (expected 0)")
        if problems:
            problems.append(f"server output:\n{tail(log)}")
        return Run(
            server=server,
            rotation=rotation,
            wrk=result,
            cpu_percent=100 * cpu / wall,
            cpu_us_per_request=1e6 * cpu / max(result.requests, 1),
            wrk_percent=100 * wrk_cpu / wall,
            other_cores=max(0.0, other / wall),
            rss_kib=rss,
            hwm_kib=hwm,
            exit_code=exit_code,
            stop_seconds=stop_seconds,
            problems=problems,
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- report ------------------------------------------------------------------------------------


@dataclass
class Summary:
    server: Server
    runs: list[Run]

    def median(self, value: str) -> float:
        getters = {
            "rps": lambda r: r.wrk.rps,
            "p50": lambda r: r.wrk.p50_ms,
            "p99": lambda r: r.wrk.p99_ms,
            "rss": lambda r: r.rss_kib,
            "cpu": lambda r: r.cpu_percent,
            "cpu_per_req": lambda r: r.cpu_us_per_request,
            "other": lambda r: r.other_cores,
        }
        return float(statistics.median(getters[value](r) for r in self.runs))

    @property
    def valid(self) -> bool:
        return not any(run.problems for run in self.runs)


def render(summaries: dict[str, Summary]) -> str:
    header = (
        "server", "req/s", "p50", "p99", "server CPU", "CPU/req", "other load", "RSS",
        "vs Quart/uvicorn", "vs quart-trio", "paired", "target", "result",
    )  # fmt: skip
    uvicorn_rps = summaries[QUART_UVICORN.key].median("rps")
    quart_rps = summaries[QUART.key].median("rps")
    cells = []
    for key, summary in summaries.items():
        rps = summary.median("rps")
        if key in TARGETS:
            other, ratio = TARGETS[key]
            passed = verdict(summaries, key)
            paired = f"{ratio_of(summaries, key):.2f}x"
            target = f">= {ratio:.2f}x {other.label}"
            result = "PASS" if passed else "FAIL"
        else:
            paired, target, result = "-", "-", "info"
        if not summary.valid:
            result += " (invalid run)"
        cells.append(
            (
                summary.server.label,
                f"{rps:,.0f}",
                f"{summary.median('p50'):.2f} ms",
                f"{summary.median('p99'):.2f} ms",
                f"{summary.median('cpu'):.0f}%",
                f"{summary.median('cpu_per_req'):.0f} us",
                f"{summary.median('other'):.2f} cores",
                f"{summary.median('rss') / 1024:.1f} MiB",
                f"{rps / uvicorn_rps:.2f}x",
                f"{rps / quart_rps:.2f}x",
                paired,
                target,
                result,
            )
        )
    return markdown_table(header, cells, right={1, 2, 3, 4, 5, 6, 7, 8, 9, 10})


def ratio_of(summaries: dict[str, Summary], key: str) -> float:
    """The median over rotations of the ratio of *key*'s req/s to its target's in the same
    rotation (they ran back to back): steadier than the ratio of the medians on a machine
    whose speed drifts."""
    other, _ = TARGETS[key]
    theirs = {run.rotation: run.wrk.rps for run in summaries[other.key].runs}
    ratios = [run.wrk.rps / theirs[run.rotation] for run in summaries[key].runs]
    return float(statistics.median(ratios))


def ratios_text(summaries: dict[str, Summary], key: str) -> str:
    other, _ = TARGETS[key]
    theirs = {run.rotation: run.wrk.rps for run in summaries[other.key].runs}
    return ", ".join(f"{run.wrk.rps / theirs[run.rotation]:.2f}" for run in summaries[key].runs)


def verdict(summaries: dict[str, Summary], key: str) -> bool:
    other, wanted = TARGETS[key]
    valid = summaries[key].valid and summaries[other.key].valid
    return valid and ratio_of(summaries, key) >= wanted


def describe_run(run: Run) -> str:
    w = run.wrk
    exit_text = "did not exit" if run.exit_code is None else f"exit {run.exit_code}"
    return (
        f"{run.server.key:<12} rotation {run.rotation}: {w.rps:,.0f} req/s ({w.requests:,} "
        f"requests), p50 {w.p50_ms:.2f} ms, p99 {w.p99_ms:.2f} ms, server CPU "
        f"{run.cpu_percent:.0f}% ({run.cpu_us_per_request:.0f} us/request), wrk "
        f"{run.wrk_percent:.0f}%, other load {run.other_cores:.2f} cores, RSS "
        f"{run.rss_kib / 1024:.1f} MiB (peak {run.hwm_kib / 1024:.1f} MiB), SIGTERM -> "
        f"{exit_text} in {run.stop_seconds:.2f} s"
    )


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main(settings: Settings) -> int:
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "bench_http.py: error: the load generator `wrk` is not on PATH.\n"
            "Install it with: apt-get update && apt-get install -y wrk   (Debian/Ubuntu;\n"
            "elsewhere: your package manager's `wrk`, or build https://github.com/wg/wrk)",
            file=sys.stderr,
        )
        return 2
    began = time.perf_counter()
    load_before = load_text()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f} s] {text}", file=sys.stderr, flush=True)

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench_http-") as tmp:
        (Path(tmp) / "status.lua").write_text(STATUS_SCRIPT)
        for rotation in range(1, settings.rotations + 1):
            order = RUN_ORDER if rotation % 2 else RUN_ORDER[::-1]
            for server in order:
                progress(f"rotation {rotation}/{settings.rotations}: {server.label}")
                try:
                    run = run_server(server, rotation, wrk, settings, Path(tmp))
                except BenchError as exc:
                    print(f"bench_http.py: error: {server.label}: {exc}", file=sys.stderr)
                    return 1
                progress("  " + describe_run(run))
                runs.append(run)
    progress("done")
    total = time.perf_counter() - began
    summaries = {s.key: Summary(s, [r for r in runs if r.server is s]) for s in SERVERS}

    print(
        f"megatrio HTTP benchmark ({settings.mode}) - Python {platform.python_version()}, "
        f"trio {version('trio')}, hypercorn {version('hypercorn')}, quart {version('quart')}, "
        f"quart-trio {version('quart-trio')}, uvicorn {version('uvicorn')}, starlette "
        f"{version('starlette')}, httptools {version('httptools')}, megatrio "
        f"{version('megatrio')}; "
        f"{wrk_version(wrk)}; {os.cpu_count()} CPUs"
    )
    print(
        f"load: wrk -t{settings.threads} -c{settings.connections} -d{settings.seconds}s "
        f"--latency after a {settings.warmup_seconds} s warm-up, GET / (13-byte body), "
        f"keep-alive; server pinned to CPU 0, wrk to CPU 1; servers rotated "
        f"{settings.rotations}x (each target's pair back to back, the order reversed every "
        f"other rotation), medians over the rotations; paired = the median of the rotations' "
        f"ratios to the target's server; server CPU = the "
        f"serving process's user+system time during the measurement; other load = CPU used "
        f"meanwhile by all other processes (not the server, not wrk)"
    )
    print(f"load average before: {load_before}, after: {load_text()}")
    print()
    print(render(summaries))
    print()
    print("raw measurements:")
    for run in runs:
        print(f"  {describe_run(run)}")
    busy = [r for r in runs if r.cpu_percent < BUSY_SERVER_CPU or r.other_cores > BUSY_OTHER]
    if busy:
        print(
            f"\nWARNING: the machine was busy in {len(busy)} of {len(runs)} runs (server CPU <"
            f" {BUSY_SERVER_CPU:.0f}% or other load > {BUSY_OTHER} cores): the servers were"
            f" starved and req/s ratios are unreliable; CPU/req is the steadier comparison."
        )
    invalid = [run for run in runs if run.problems]
    for run in invalid:
        print(f"\nINVALID run {run.server.key} rotation {run.rotation}:")
        for problem in run.problems:
            print(f"  {problem}")
    print()
    for key, (other, wanted) in TARGETS.items():
        passed = verdict(summaries, key) and not invalid
        print(
            f"{summaries[key].server.label} / {other.label} = {ratio_of(summaries, key):.3f}"
            f" (median of the rotations' {ratios_text(summaries, key)}; target >= {wanted}):"
            f" {'PASS' if passed else 'FAIL'}"
        )
    print(f"total benchmark time {total:.1f} s")
    return 1 if invalid else 0


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one rotation of 3 s runs")
    parser.add_argument("--rotations", type=int, help="rotations (default: 5, quick: 1)")
    parser.add_argument("--seconds", type=int, help="seconds per measurement (6, quick: 3)")
    args = parser.parse_args(argv)
    if args.quick:
        settings = Settings(mode="quick", rotations=1, warmup_seconds=1, seconds=3)
    else:
        settings = Settings(mode="full", rotations=5, warmup_seconds=2, seconds=6)
    if args.rotations is not None or args.seconds is not None:
        settings = dataclasses.replace(
            settings,
            mode=f"{settings.mode}, custom",
            rotations=max(1, args.rotations or settings.rotations),
            seconds=max(1, args.seconds or settings.seconds),
        )
    return settings


if __name__ == "__main__":
    sys.exit(main(parse_args()))
