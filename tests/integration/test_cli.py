"""``megatrio run`` / ``tree`` / ``console`` end to end: real processes, real sockets."""

from __future__ import annotations

import importlib.metadata
import json
import re
import signal
import socket
import threading
import urllib.request
from pathlib import Path

import pytest

from megatrio._config import config_keys

from .cli_support import APPS, Process, Server, raw_request

# The one-process and the --workers paths: every CLI promise holds in both.
MODES = pytest.mark.parametrize("mode", [[], ["--workers", "2"]], ids=["one-process", "workers"])


@pytest.fixture
def basic() -> Server:
    server = Server("basic:Basic")
    yield server
    server.kill()


def test_serves_routes_health_readiness_and_the_admin_tree(basic: Server) -> None:
    assert basic.get("/") == (200, '{"app":"basic"}\n')
    assert basic.get("/healthz") == (200, "ok\n")
    status, body = basic.get("/readyz")
    assert (status, json.loads(body)) == (200, {"ready": True, "not_ready": []})
    # Introspection lives on the admin listener only.
    assert basic.get("/_megatrio/tree")[0] == 404
    status, body = basic.get("/_megatrio/tree", base=basic.admin)
    tree = json.loads(body)
    assert status == 200
    assert [c["name"] for c in tree["children"]] == ["cache-default", "http", "admin", "worker"]
    assert all(c["state"] == "running" for c in tree["children"])
    # Every log record carries the supervision path of the task that logged it.
    serving = [r for r in basic.records() if "serving http on" in r["event"]]
    assert serving[0]["task"] == "basic/http"
    basic.signal(signal.SIGTERM)
    assert basic.finish() == 0


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ],
    ids=["connection-close", "health-close", "http10"],
)
def test_connection_close_and_http10_requests_complete_and_close(
    basic: Server, request_bytes: bytes
) -> None:
    data, eof = raw_request(basic.port, request_bytes)
    assert data.startswith(b"HTTP/1.1 200")
    assert eof, "the server must close the connection after a Connection: close response"


def test_sigterm_lets_a_slow_request_finish_then_exits_zero(basic: Server) -> None:
    result: dict[str, tuple[int, str]] = {}
    request = threading.Thread(target=lambda: result.update(slow=basic.get("/slow?seconds=1.5")))
    request.start()
    basic.wait_line("slow request started")
    basic.signal(signal.SIGTERM)
    request.join(timeout=20)
    assert result["slow"] == (200, "slow done")
    assert basic.finish() == 0
    events = [r["event"] for r in basic.records()]
    assert "received SIGTERM: stopping gracefully" in events
    assert events[-1] == "runtime basic stopped"
    # Children stop before the HTTP server drains; on_stop runs after both.
    assert basic.out.index("worker stopped") < basic.out.index("on_stop")


def test_readyz_fails_during_a_graceful_stop() -> None:
    server = Server("basic:SlowStop")
    try:
        server.signal(signal.SIGTERM)
        server.wait_line("received SIGTERM")
        status, body = server.get("/readyz")
        assert status == 503
        assert json.loads(body)["ready"] is False
        assert server.finish() == 0
    finally:
        server.kill()


def test_a_shutdown_delay_keeps_serving_while_readyz_fails() -> None:
    server = Server("basic:Basic", "--shutdown-delay-seconds", "30")
    try:
        assert server.get("/readyz")[0] == 200
        server.signal(signal.SIGTERM)
        server.wait_line("stopping in 30 s (shutdown_delay_seconds)")
        # Load balancers see the process leaving; requests are still served meanwhile.
        status, body = server.get("/readyz")
        assert status == 503
        assert json.loads(body)["not_ready"] == ["basic (stopping)"]
        assert server.get("/")[0] == 200
        server.signal(signal.SIGTERM)  # a second signal cuts the delay short
        assert server.finish(timeout=10) == 3
    finally:
        server.kill()


def test_second_signal_stops_at_once() -> None:
    server = Server("basic:SlowStop", "--grace-seconds", "60")
    try:
        server.signal(signal.SIGTERM)
        server.wait_line("received SIGTERM")
        server.signal(signal.SIGINT)
        assert server.finish(timeout=10) == 3  # a forced stop: work was cut off
        assert "worker stopped" not in server.out  # cancelled before its 1.5 s cleanup
        assert any("received SIGINT again" in r["event"] for r in server.records())
    finally:
        server.kill()


def test_a_failing_route_is_a_500_logged_redacted_and_serving_continues(basic: Server) -> None:
    assert basic.get("/fail")[0] == 500
    assert basic.get("/")[0] == 200
    basic.signal(signal.SIGTERM)
    assert basic.finish() == 0
    [record] = [r for r in basic.records() if r["event"] == "Exception on request GET /fail"]
    assert record["level"] == "error"
    assert "password=[REDACTED]" in record["exception"]
    text = "\n".join(basic.out + basic.err)
    assert "hunter2" not in text
    assert "abc.def.ghi" not in text


def test_a_child_crashing_for_good_exits_one_after_a_graceful_stop() -> None:
    proc = Process(["run", "crashing:app", "--bind", "127.0.0.1:0", "--admin-bind", ""])
    assert proc.finish() == 1
    records = [json.loads(line) for line in proc.out if line.startswith("{")]
    fatal = [r for r in records if r["level"] == "critical"]
    assert len(fatal) == 1
    assert "RestartIntensityExceeded" in fatal[0]["exception"]
    assert "token=[REDACTED]" in fatal[0]["exception"]
    assert "abc123" not in "\n".join(proc.out + proc.err)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nosuchmodule:app", "module 'nosuchmodule' not found"),
        ("basic:nothing", "module 'basic' has no attribute 'nothing'"),
        ("basic:not_an_app", "'basic:not_an_app' is not a megatrio.App (it is builtins.int)"),
        ("basic", "expected MODULE:ATTRIBUTE (like app:App), got 'basic'"),
    ],
)
def test_a_bad_app_path_is_a_one_line_error_and_exit_two(target: str, message: str) -> None:
    proc = Process(["run", target])
    assert proc.finish() == 2
    [line] = proc.err
    assert line.startswith(f"megatrio: error: {message}")


# (files, target, the app's frames as (file, line, function, source), the error line)
LOAD_ERRORS = {
    "import-error": (
        {"mod.py": "import definitely_not_a_real_module\n"},
        "mod:app",
        [("mod.py", 1, "<module>", "import definitely_not_a_real_module")],
        "ModuleNotFoundError: No module named 'definitely_not_a_real_module'",
    ),
    "error-in-a-module-it-imports": (
        {
            "mod.py": "import helper\n",
            "helper.py": 'raise LookupError("no table (token=abc123)")\n',
        },
        "mod:app",
        [
            ("mod.py", 1, "<module>", "import helper"),
            ("helper.py", 1, "<module>", 'raise LookupError("no table (token=[REDACTED])")'),
        ],
        "LookupError: no table (token=[REDACTED])",
    ),
    "setup-raises": (
        {
            "mod.py": "import megatrio\n\n\nclass Shop(megatrio.App):\n    def setup(self):\n"
            '        raise ValueError("no routes today")\n'
        },
        "mod:Shop",
        [("mod.py", 6, "setup", 'raise ValueError("no routes today")')],
        "ValueError: no routes today",
    ),
    "constructor-raises": (
        {
            "mod.py": "import megatrio\n\n\nclass Shop(megatrio.App):\n    def __init__(self):\n"
            '        raise TypeError("needs a database")\n'
        },
        "mod:Shop",
        [("mod.py", 6, "__init__", 'raise TypeError("needs a database")')],
        "TypeError: needs a database",
    ),
}


def _run_failing_app(
    tmp_path: Path, files: dict[str, str], target: str, mode: list[str]
) -> Process:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    args = ["run", target, "--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]
    proc = Process([*args, "--log-format", "json", *mode], cwd=tmp_path)
    assert proc.finish() == 1
    if mode:
        # Printed once by the primary, no worker restarted, nothing announced.
        events = [r["event"] for r in proc.records()]
        assert not [e for e in events if "crashed" in e or "giving up" in e or "serving" in e]
    else:
        assert proc.out == []
    return proc


@MODES
@pytest.mark.parametrize("case", LOAD_ERRORS)
def test_an_error_in_the_apps_own_code_shows_its_frames_and_one_line_then_exit_one(
    tmp_path: Path, case: str, mode: list[str]
) -> None:
    files, target, frames, error = LOAD_ERRORS[case]
    proc = _run_failing_app(tmp_path, files, target, mode)
    expected = ["Traceback (most recent call last):"]
    for name, line, function, source in frames:
        expected += [f'  File "{tmp_path / name}", line {line}, in {function}', f"    {source}"]
    expected += [error, f"megatrio: error: cannot load {target!r}: {error}"]
    assert proc.err == expected
    assert "abc123" not in "\n".join(proc.out + proc.err)


@MODES
def test_a_syntax_error_in_the_app_shows_where_then_one_line_and_exit_one(
    tmp_path: Path, mode: list[str]
) -> None:
    proc = _run_failing_app(tmp_path, {"mod.py": "def broken(:\n    pass\n"}, "mod:app", mode)
    assert proc.err == [
        f'  File "{tmp_path / "mod.py"}", line 1',
        "    def broken(:",
        "               ^",
        "SyntaxError: invalid syntax",
        "megatrio: error: cannot load 'mod:app': SyntaxError: invalid syntax (mod.py, line 1)",
    ]


def test_declaring_another_cache_keeps_the_default_one(tmp_path: Path) -> None:
    config = tmp_path / "megatrio.toml"
    config.write_text('[cache.pages]\ndriver = "memory"\nmax_entries = 10\n')
    server = Server("basic:Basic", "--config", str(config))
    try:
        assert server.get("/cached") == (200, "hello from the default cache")
        status, body = server.get("/_megatrio/tree", base=server.admin)
        assert status == 200
        names = [c["name"] for c in json.loads(body)["children"]]
        assert names[:2] == ["cache-default", "cache-pages"]
        server.signal(signal.SIGTERM)
        assert server.finish() == 0
    finally:
        server.kill()


def test_bad_config_names_the_file_key_and_expected_type(tmp_path: Path) -> None:
    config = tmp_path / "megatrio.toml"
    config.write_text('grace_seconds = "soon"\n')
    proc = Process(["run", "basic:Basic", "--config", str(config)])
    assert proc.finish() == 2
    assert proc.err == [
        f"megatrio: error: {config}: key 'grace_seconds': expected a number of seconds, got 'soon'"
    ]
    config.write_text("grace_second = 3\n")
    proc = Process(["run", "basic:Basic", "--config", str(config)])
    assert proc.finish() == 2
    assert f"{config}: unknown key 'grace_second'" in proc.err[0]


def test_bad_environment_and_flags_are_named() -> None:
    proc = Process(["run", "basic:Basic", "--bind", "nowhere"])
    assert proc.finish() == 2
    assert proc.err == [
        "megatrio: error: command-line option --bind: key 'bind': expected HOST:PORT, got 'nowhere'"
    ]


@MODES
@pytest.mark.parametrize("listener", ["bind", "admin-bind"])
def test_a_busy_port_is_one_line_naming_it_exit_one_and_nothing_served(
    busy_port: int, listener: str, mode: list[str]
) -> None:
    binds = {"bind": "127.0.0.1:0", "admin-bind": "127.0.0.1:0"}
    binds[listener] = f"127.0.0.1:{busy_port}"
    args = ["--bind", binds["bind"], "--admin-bind", binds["admin-bind"]]
    proc = Process(["run", "basic:Basic", *args, "--log-format", "json", *mode])
    assert proc.finish() == 1
    in_use = "[Errno 98] Address already in use"
    assert proc.err == [f"megatrio: error: cannot listen on 127.0.0.1:{busy_port}: {in_use}"]
    # Every listener is bound before any is announced or served, and before on_start.
    assert proc.out == []


def test_the_console_names_a_busy_port_too(busy_port: int) -> None:
    proc = Process(["console", "basic:Basic", "--bind", f"127.0.0.1:{busy_port}"], stdin=True)
    assert proc.proc.stdin is not None
    proc.proc.stdin.close()
    assert proc.finish() == 1
    in_use = "[Errno 98] Address already in use"
    assert proc.err == [f"megatrio: error: cannot listen on 127.0.0.1:{busy_port}: {in_use}"]


def _bind_error(host: str) -> str:
    with socket.socket() as sock:
        try:
            sock.bind((host, 8000))
        except OSError as exc:
            return str(exc)
    raise AssertionError(f"{host} was expected not to be bindable")


@MODES
@pytest.mark.parametrize(
    "host", ["no-such-host.invalid", "192.0.2.1"], ids=["unresolvable", "not-on-this-machine"]
)
def test_an_address_that_cannot_be_bound_is_one_line_and_exit_one(
    host: str, mode: list[str]
) -> None:
    proc = Process(["run", "basic:Basic", "--bind", f"{host}:8000", "--admin-bind", "", *mode])
    assert proc.finish() == 1
    assert proc.err == [f"megatrio: error: cannot listen on {host}:8000: {_bind_error(host)}"]
    assert proc.out == []


@MODES
@pytest.mark.parametrize(
    ("cwd", "target"),
    [(APPS, "./basic:Basic"), (APPS, "basic.py:Basic"), (APPS.parent, "apps/basic.py:Basic")],
)
def test_a_file_path_as_the_module_imports_that_file(
    cwd: Path, target: str, mode: list[str]
) -> None:
    args = ["run", target, "--bind", "127.0.0.1:0", "--admin-bind", "", "--log-format", "json"]
    proc = Process([*args, *mode], cwd=cwd)
    try:
        match = re.search(r"serving http on (http://[\d.:]+)", proc.wait_line("serving http on"))
        assert match is not None
        with urllib.request.urlopen(match[1] + "/", timeout=10) as response:
            assert response.read() == b'{"app":"basic"}\n'
        proc.signal(signal.SIGTERM)
        assert proc.finish() == 0
    finally:
        proc.kill()


@MODES
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("./nope:app", f"'./nope' not found: no file {APPS}/nope.py and no package {APPS}/nope/"),
        (
            "apps/nope.py:app",
            f"'apps/nope.py' not found: no file {APPS}/apps/nope.py and no "
            f"package {APPS}/apps/nope/",
        ),
        (
            "my-app:app",
            "'my-app' in 'my-app:app' is neither a module name nor a path to a .py file",
        ),
    ],
)
def test_a_bad_module_path_is_one_line_and_exit_two(
    target: str, message: str, mode: list[str]
) -> None:
    proc = Process(["run", target, "--bind", "127.0.0.1:0", "--admin-bind", "", *mode])
    assert proc.finish() == 2
    assert proc.err == [f"megatrio: error: {message}"]


@MODES
def test_a_file_shadowed_by_an_imported_module_is_named(tmp_path: Path, mode: list[str]) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "json.py").write_text("import megatrio\napp = megatrio.App('j')\n")
    proc = Process(["run", "sub/json.py:app", "--admin-bind", "", *mode], cwd=tmp_path)
    assert proc.finish() == 2
    assert proc.err == [
        f"megatrio: error: 'sub/json.py' would be imported as module 'json', which is already "
        f"{json.__file__}; rename the file"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "basic:Basic", "--bind", "[zz]:8100"],
            "command-line option --bind: key 'bind': expected [IPV6]:PORT, but 'zz' is not an "
            "IPv6 address in '[zz]:8100'",
        ),
        (
            ["tree", "--admin", "garbage"],
            "command-line option --admin: expected HOST:PORT, got 'garbage'",
        ),
        (
            ["console", "basic:Basic", "--workers", "2"],
            "the console serves one process: --workers 2 is for megatrio run",
        ),
    ],
    ids=["bracketed-non-ipv6", "tree-admin", "console-workers"],
)
def test_bad_command_lines_are_one_line_and_exit_two(args: list[str], message: str) -> None:
    proc = Process(args)
    assert proc.finish() == 2
    assert proc.err == [f"megatrio: error: {message}"]
    assert proc.out == []


KUBERNETES_SERVICE_ENV = {
    "MEGATRIO_PORT": "tcp://10.0.0.1:8000",
    "MEGATRIO_SERVICE_HOST": "10.0.0.1",
    "MEGATRIO_PORT_8000_TCP": "tcp://10.0.0.1:8000",
}


@MODES
def test_unknown_megatrio_variables_warn_once_and_serving_starts(mode: list[str]) -> None:
    args = ["run", "basic:Basic", "--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]
    proc = Process([*args, "--log-format", "json", *mode], env=KUBERNETES_SERVICE_ENV)
    try:
        proc.wait_line("serving http on")
        proc.signal(signal.SIGTERM)
        assert proc.finish() == 0
    finally:
        proc.kill()
    warnings = [r for r in proc.records() if "MEGATRIO_" in r["event"]]
    assert [(r["level"], r["event"]) for r in warnings] == [
        (
            "warning",
            "ignoring environment variables that name no megatrio setting: "
            "MEGATRIO_PORT, MEGATRIO_PORT_8000_TCP, MEGATRIO_SERVICE_HOST",
        )
    ]


@MODES
def test_a_known_variable_with_a_bad_value_still_refuses_to_start(mode: list[str]) -> None:
    env = {**KUBERNETES_SERVICE_ENV, "MEGATRIO_GRACE_SECONDS": "soon"}
    proc = Process(["run", "basic:Basic", *mode], env=env)
    assert proc.finish() == 2
    assert proc.err == [
        "megatrio: error: environment variable MEGATRIO_GRACE_SECONDS: key 'grace_seconds': "
        "expected a number of seconds, got 'soon'"
    ]


def test_tree_command_prints_the_live_tree(basic: Server) -> None:
    tree = Process(["tree", "--admin", basic.admin.removeprefix("http://")])
    assert tree.finish() == 0
    assert tree.out[0].startswith("basic [one_for_one, running")
    assert any("worker  running" in line for line in tree.out)
    as_json = Process(["tree", "--json", "--admin", basic.admin.removeprefix("http://")])
    assert as_json.finish() == 0
    assert json.loads("\n".join(as_json.out))["name"] == "basic"
    basic.signal(signal.SIGTERM)
    assert basic.finish() == 0


def test_tree_command_without_a_server_says_so() -> None:
    proc = Process(["tree", "--admin", "127.0.0.1:9"])
    assert proc.finish() == 1
    assert proc.err[0].startswith("megatrio: error: no admin listener at 127.0.0.1:9")


def test_console_keeps_the_runtime_running_after_an_exception() -> None:
    proc = Process(
        [
            "console",
            "basic:Basic",
            "--bind",
            "127.0.0.1:0",
            "--admin-bind",
            "",
        ],
        stdin=True,
    )
    assert proc.proc.stdin is not None
    proc.proc.stdin.write(
        "1 / 0\n"
        "print('state', rt.snapshot()['state'])\n"
        "await trio.sleep(0.01)\n"
        "print('children', [c['name'] for c in rt.snapshot()['children']])\n"
    )
    proc.proc.stdin.close()
    assert proc.finish() == 0
    err = "\n".join(proc.err)
    assert "ZeroDivisionError: division by zero" in err
    out = "\n".join(proc.out)
    assert "state running" in out
    assert "children ['cache-default', 'http', 'worker']" in out
    assert "worker stopped" in out


def _serving_url(proc: Process) -> str:
    """The public URL once it serves (in both modes a "serving http on" line says so)."""
    match = re.search(r"serving http on (http://[\d.:\[\]]+)", proc.wait_line("serving http on"))
    assert match is not None
    return match[1]


def _serves_basic_then_stops(proc: Process) -> str:
    try:
        url = _serving_url(proc)
        with urllib.request.urlopen(url + "/", timeout=10) as response:
            assert response.read() == b'{"app":"basic"}\n'
        proc.signal(signal.SIGTERM)
        assert proc.finish() == 0
    finally:
        proc.kill()
    return url


def test_version_prints_the_package_version() -> None:
    proc = Process(["--version"])
    assert proc.finish() == 0
    assert proc.out == [f"megatrio {importlib.metadata.version('megatrio')}"]


def _flat(lines: list[str]) -> str:
    return " ".join(" ".join(lines).split())


def test_run_help_shows_defaults_variables_precedence_and_exit_codes() -> None:
    proc = Process(["run", "--help"])
    assert proc.finish() == 0
    options: dict[str, list[str]] = {}
    for line in proc.out[proc.out.index("options:") + 1 :]:
        if not line.strip():
            break
        match = re.match(r"  (-[-\w]+)", line)
        if match:
            options[match[1]] = []
        options[list(options)[-1]].append(line)
    options.pop("-h")
    assert set(options) == {
        "--config", "--bind", "--host", "--port", "--admin-bind", "--grace-seconds",
        "--workers", "--log-level", "--log-format", "--app-dir", "--factory", "--uds",
        "--shutdown-delay-seconds", "--no-access-log", "--http",
        "--keep-alive-timeout-seconds", "--max-concurrent-connections", "--root-path",
        "--forwarded-allow-ips", "--certfile", "--keyfile", "--reload", "--reload-dir",
    }  # fmt: skip
    for option, lines in options.items():
        assert "(default: " in _flat(lines), f"{option} does not show its default"
    assert "(default: 127.0.0.1:8000)" in _flat(options["--bind"])
    assert "(default: 30)" in _flat(options["--grace-seconds"])
    assert "one of debug, info, warning, error, critical" in _flat(options["--log-level"])
    text = _flat(proc.out)
    assert "later sources winning (file < environment < options)" in text
    for key in config_keys():
        if key not in ("cache", "jobs"):  # tables: file only
            assert f"MEGATRIO_{key.upper()}" in text
    codes = proc.out[proc.out.index("exit codes:") + 1 :]
    assert [line[:4] for line in codes if not line.startswith("     ")] == [
        "  0 ", "  1 ", "  2 ", "  3 ", "  13",
    ]  # fmt: skip
    assert "a listener could not be bound, the app's own code failed to import" in _flat(codes)


@pytest.mark.parametrize("command", [[], ["run"], ["console"], ["tree"]])
def test_help_texts_have_no_rest_markup(command: list[str]) -> None:
    proc = Process([*command, "--help"])
    assert proc.finish() == 0
    text = "\n".join(proc.out)
    assert not re.search(r"``|:(class|func|meth|attr|mod):", text)


@pytest.mark.parametrize("command", [["run", "basic:Basic"], ["console", "basic:Basic"], ["tree"]])
def test_an_unknown_flag_prints_the_usage_of_its_subcommand(command: list[str]) -> None:
    proc = Process([*command, "--nope"])
    assert proc.finish() == 2
    assert proc.err[0].startswith(f"usage: megatrio {command[0]} ")
    assert proc.err[-1] == f"megatrio {command[0]}: error: unrecognized arguments: --nope"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@MODES
def test_host_and_port_are_one_bind(mode: list[str]) -> None:
    port = _free_port()
    args = ["run", "basic:Basic", "--host", "127.0.0.1", "--port", str(port), "--admin-bind", ""]
    url = _serves_basic_then_stops(Process([*args, *mode]))
    assert url == f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--host", "0.0.0.0", "--bind", "127.0.0.1:0"],
            "--host/--port and --bind cannot be combined: use --bind HOST:PORT",
        ),
        (["--port", "99999"], "command-line option --port: expected a port 0..65535, got '99999'"),
        (["--port", "http"], "command-line option --port: expected a port 0..65535, got 'http'"),
        (
            ["--host", ""],
            "command-line option --host: expected a host name or an IP address, got ''",
        ),
        (
            ["--app-dir", "no/such/dir"],
            "command-line option --app-dir: not a directory: 'no/such/dir'",
        ),
        (
            ["--factory"],
            "'basic:not_an_app' is not callable (it is builtins.int); --factory needs "
            "a function that returns a megatrio.App",
        ),
    ],
)
@MODES
def test_bad_serving_options_are_one_line_and_exit_two(
    options: list[str], message: str, mode: list[str]
) -> None:
    target = "basic:not_an_app" if "--factory" in options else "basic:Basic"
    proc = Process(["run", target, "--admin-bind", "", *options, *mode])
    assert proc.finish() == 2
    assert proc.err == [f"megatrio: error: {message}"]


@MODES
@pytest.mark.parametrize("target", ["basic:Basic", "./basic.py:Basic"])
def test_app_dir_is_where_the_target_is_imported_from(
    tmp_path: Path, target: str, mode: list[str]
) -> None:
    args = ["run", target, "--app-dir", str(APPS), "--bind", "127.0.0.1:0", "--admin-bind", ""]
    _serves_basic_then_stops(Process([*args, *mode], cwd=tmp_path))


@MODES
def test_a_factory_is_called_for_the_app(mode: list[str]) -> None:
    args = ["run", "basic:create_app", "--factory", "--bind", "127.0.0.1:0", "--admin-bind", ""]
    _serves_basic_then_stops(Process([*args, *mode]))


@MODES
@pytest.mark.parametrize(
    ("target", "factory", "message"),
    [
        (
            "basic:create_nothing",
            True,
            "'basic:create_nothing' returned builtins.int, not a megatrio.App",
        ),
        (
            "basic:create_app",
            False,
            "'basic:create_app' is not a megatrio.App (it is builtins.function); pass --factory "
            "if it returns one",
        ),
    ],
)
def test_a_factory_target_that_gives_no_app_is_one_line_and_exit_two(
    target: str, factory: bool, message: str, mode: list[str]
) -> None:
    proc = Process(["run", target, *(["--factory"] if factory else []), "--admin-bind", "", *mode])
    assert proc.finish() == 2
    assert proc.err == [f"megatrio: error: {message}"]


def test_python_dash_m_and_the_console_script_agree() -> None:
    proc = Process(["--help"])
    assert proc.finish() == 0
    assert "run" in "\n".join(proc.out)
    assert (APPS / "basic.py").is_file()
