"""Config: TOML, pyproject, environment and flags; every bad input named precisely."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from megatrio import Config, ConfigError, LogFormat, LogLevel, load_config
from megatrio._config import CacheConfig, CacheDriverKind, unknown_environment_variables
from megatrio.services.http._front import HttpFront


def test_defaults_without_any_source(tmp_path: Path) -> None:
    config = load_config(directory=tmp_path, environ={})
    assert config == Config()
    assert config.bind == ("127.0.0.1:8000",)
    assert config.admin_bind == "127.0.0.1:8001"


def test_precedence_file_then_environment_then_flags(tmp_path: Path) -> None:
    (tmp_path / "megatrio.toml").write_text(
        'bind = ["0.0.0.0:9000"]\ngrace_seconds = 7\nlog_level = "debug"\n'
        'redact_keys = ["session_id"]\n'
    )
    config = load_config(
        directory=tmp_path,
        environ={"MEGATRIO_GRACE_SECONDS": "9.5", "MEGATRIO_LOG_FORMAT": "JSON", "OTHER": "x"},
        overrides={"log_level": "warning", "bind": None},
    )
    assert config.bind == ("0.0.0.0:9000",)
    assert config.grace_seconds == 9.5
    assert config.log_format is LogFormat.JSON
    assert config.log_level is LogLevel.WARNING
    assert config.redact_keys == ("session_id",)


def test_pyproject_tool_table_is_found(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.megatrio]\nadmin_bind = ""\n')
    assert load_config(directory=tmp_path, environ={}).admin_bind == ""
    (tmp_path / "megatrio.toml").write_text('admin_bind = "127.0.0.1:7000"\n')
    assert load_config(directory=tmp_path, environ={}).admin_bind == "127.0.0.1:7000"


def test_list_values_from_the_environment_are_comma_separated(tmp_path: Path) -> None:
    config = load_config(directory=tmp_path, environ={"MEGATRIO_BIND": "[::1]:80, 127.0.0.1:0"})
    assert config.bind == ("[::1]:80", "127.0.0.1:0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("grace_seconds = -1\n", "key 'grace_seconds': expected a number of seconds >= 0, got -1"),
        ('grace_seconds = "x"\n', "key 'grace_seconds': expected a number of seconds, got 'x'"),
        ("max_restarts = 1.5\n", "key 'max_restarts': expected an integer >= 0, got 1.5"),
        ("max_restarts = true\n", "key 'max_restarts': expected an integer >= 0, got True"),
        ("period_seconds = 0\n", "key 'period_seconds': expected a finite number of seconds > 0"),
        ('log_level = "loud"\n', "key 'log_level': expected one of 'debug', 'info'"),
        ('bind = ["nohost"]\n', "key 'bind': expected HOST:PORT, got 'nohost'"),
        ('bind = ["h:70000"]\n', "key 'bind': port must be 0..65535, got 70000"),
        ('bind = ["[zz]:80"]\n', "key 'bind': expected [IPV6]:PORT, but 'zz' is not an IPv6"),
        ("bind = []\n", "key 'bind': expected at least one HOST:PORT address"),
        ("bind = [1]\n", "key 'bind': expected a list of strings, got [1]"),
        (
            "redis_max_connections = 0\n",
            "key 'redis_max_connections': expected an integer >= 1, got 0",
        ),
        (
            'redis_max_connections = "8"\n',
            "key 'redis_max_connections': expected an integer >= 1, got '8'",
        ),
        ("colour = 1\n", "unknown key 'colour' (known keys: bind, admin_bind"),
        ("grace_seconds = \n", "not valid TOML"),
    ],
)
def test_bad_file_values_name_file_key_and_expectation(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "megatrio.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path=path, environ={})
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_bad_environment_values_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="environment variable MEGATRIO_MAX_RESTARTS: key 'max_restarts'"
    ):
        load_config(directory=tmp_path, environ={"MEGATRIO_MAX_RESTARTS": "many"})
    # Variables megatrio sets for its own child processes are not configuration.
    load_config(directory=tmp_path, environ={"MEGATRIO__INTERNAL": "1"})


def test_missing_config_file_and_bad_pyproject(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(path=tmp_path / "nope.toml", environ={})
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool]\nmegatrio = 3\n")
    with pytest.raises(ConfigError, match=r"\[tool.megatrio\] must be a table"):
        load_config(path=pyproject, environ={})


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="Config: key 'grace_seconds'"):
        Config(grace_seconds=-2)


def test_serving_options_from_file_environment_and_flags(tmp_path: Path) -> None:
    (tmp_path / "megatrio.toml").write_text(
        'keep_alive_timeout_seconds = 2.5\nroot_path = "/api/"\ncertfile = "c.pem"\n'
        'keyfile = "k.pem"\nforwarded_allow_ips = ["10.0.0.0/8", "unix"]\n'
    )
    config = load_config(
        directory=tmp_path,
        environ={"MEGATRIO_MAX_CONCURRENT_CONNECTIONS": "100", "MEGATRIO_UDS": "/run/a.sock"},
        overrides={"forwarded_allow_ips": "127.0.0.1, ::1"},
    )
    assert config.keep_alive_timeout_seconds == 2.5
    assert config.root_path == "/api"  # a trailing slash is dropped, as hypercorn does
    assert (config.certfile, config.keyfile) == ("c.pem", "k.pem")
    assert config.max_concurrent_connections == 100
    assert config.uds == "/run/a.sock"
    assert config.forwarded_allow_ips == ("127.0.0.1", "::1")
    assert Config().max_concurrent_connections == 0
    assert Config().keep_alive_timeout_seconds == 5.0


def test_the_fast_fronts_limits_are_config_keys(tmp_path: Path) -> None:
    (tmp_path / "megatrio.toml").write_text("max_body_bytes = 1024\nmax_header_count = 20\n")
    config = load_config(
        directory=tmp_path,
        environ={"MEGATRIO_MAX_HEAD_BYTES": "8192", "MEGATRIO_REQUEST_TIMEOUT_SECONDS": "2.5"},
    )
    limits = (
        config.max_body_bytes,
        config.max_header_count,
        config.max_head_bytes,
        config.request_timeout_seconds,
    )
    assert limits == (1024, 20, 8192, 2.5)
    defaults = Config()
    assert (defaults.max_body_bytes, defaults.max_header_count) == (0, 100)
    assert (defaults.max_head_bytes, defaults.request_timeout_seconds) == (65536, 10.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "keep_alive_timeout_seconds = 0\n",
            "key 'keep_alive_timeout_seconds': expected a finite number of seconds > 0, got 0",
        ),
        (
            "max_concurrent_connections = -1\n",
            "key 'max_concurrent_connections': expected an integer >= 0, got -1",
        ),
        (
            'root_path = "api"\n',
            "key 'root_path': expected a path starting with '/' (or an empty string), got 'api'",
        ),
        ('root_path = "/a b"\n', "key 'root_path': expected a URL path without spaces"),
        (
            'forwarded_allow_ips = ["10.0.0.300"]\n',
            "key 'forwarded_allow_ips': expected IP addresses or networks (10.0.0.0/8), '*' "
            "or 'unix', got '10.0.0.300'",
        ),
        ("forwarded_allow_ips = 3\n", "key 'forwarded_allow_ips': expected a list of strings"),
        ("certfile = 3\n", "key 'certfile': expected a path string, got 3"),
        (f'uds = "/{"x" * 200}"\n', "key 'uds': expected a socket path of at most 107 bytes"),
        ('certfile = "c.pem"\n', "certfile and keyfile go together"),
        ('uds = "/tmp/a.sock"\nworkers = 2\n', "uds serves one process"),
        (
            'http_front = "quick"\n',
            "key 'http_front': expected one of 'fast', 'hypercorn', got 'quick'",
        ),
        ("http_front = 1\n", "key 'http_front': expected one of 'fast', 'hypercorn', got 1"),
        (
            "request_timeout_seconds = 0\n",
            "key 'request_timeout_seconds': expected a finite number of seconds > 0, got 0",
        ),
        ("max_body_bytes = -5\n", "key 'max_body_bytes': expected an integer >= 0, got -5"),
        (
            'max_header_count = "many"\n',
            "key 'max_header_count': expected an integer >= 0, got 'many'",
        ),
        ("max_head_bytes = 1.5\n", "key 'max_head_bytes': expected an integer >= 0, got 1.5"),
    ],
)
def test_bad_serving_options_name_file_key_and_expectation(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "megatrio.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path=path, environ={})
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_bad_serving_option_flags_and_variables_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match="command-line option --max-concurrent-connections: key 'max_concurrent_connections'",
    ):
        load_config(directory=tmp_path, environ={}, overrides={"max_concurrent_connections": "x"})
    with pytest.raises(ConfigError, match="environment variable MEGATRIO_FORWARDED_ALLOW_IPS: key"):
        load_config(directory=tmp_path, environ={"MEGATRIO_FORWARDED_ALLOW_IPS": "proxy.local"})
    with pytest.raises(ConfigError, match="command-line option --http-front: key 'http_front'"):
        load_config(directory=tmp_path, environ={}, overrides={"http_front": "h2"})
    fast = load_config(directory=tmp_path, environ={"MEGATRIO_HTTP_FRONT": "FAST"})
    assert fast.http_front is HttpFront.FAST


def test_run_flags_reach_the_serving_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from megatrio.cli import _parser as cli

    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("MEGATRIO_")]:
        monkeypatch.delenv(name)
    args = cli.build_parser().parse_args(
        [
            "run",
            "app:app",
            "--uds",
            str(tmp_path / "s.sock"),
            "--keep-alive-timeout-seconds",
            "1.5",
            "--max-concurrent-connections",
            "8",
            "--root-path",
            "/v1",
            "--forwarded-allow-ips",
            "10.1.0.0/16,unix",
            "--certfile",
            "cert.pem",
            "--keyfile",
            "key.pem",
        ]
    )
    config = cli.config_from(args)
    assert config.uds == str(tmp_path / "s.sock")
    assert config.keep_alive_timeout_seconds == 1.5
    assert config.max_concurrent_connections == 8
    assert config.root_path == "/v1"
    assert config.forwarded_allow_ips == ("10.1.0.0/16", "unix")
    assert (config.certfile, config.keyfile) == ("cert.pem", "key.pem")


def test_environment_variables_that_name_no_setting_are_ignored_and_listed(
    tmp_path: Path,
) -> None:
    # What Kubernetes injects for a Service named megatrio, next to a real setting.
    environ = {
        "MEGATRIO_PORT": "tcp://10.0.0.1:8000",
        "MEGATRIO_SERVICE_HOST": "10.0.0.1",
        "MEGATRIO_PORT_8000_TCP": "tcp://10.0.0.1:8000",
        "MEGATRIO_GRACE_SECONDS": "4",
        "MEGATRIO__CONFIG": "{}",
        "PATH": "/bin",
    }
    assert load_config(directory=tmp_path, environ=environ).grace_seconds == 4
    assert unknown_environment_variables(environ) == (
        "MEGATRIO_PORT",
        "MEGATRIO_PORT_8000_TCP",
        "MEGATRIO_SERVICE_HOST",
    )
    assert unknown_environment_variables({"MEGATRIO_BIND": "127.0.0.1:1"}) == ()


def test_the_default_cache_stays_unless_the_file_defines_it(tmp_path: Path) -> None:
    path = tmp_path / "megatrio.toml"
    path.write_text('[cache.pages]\ndriver = "file"\n')
    config = load_config(path=path, environ={})
    assert list(config.cache) == ["default", "pages"]
    assert config.cache["default"] == CacheConfig()
    assert config.cache["pages"].driver is CacheDriverKind.FILE
    path.write_text("[cache.default]\nmax_entries = 5\n")
    assert load_config(path=path, environ={}).cache == {"default": CacheConfig(max_entries=5)}
    assert list(Config(cache={"x": CacheConfig()}).cache) == ["default", "x"]


def test_redis_max_connections_from_file_and_environment(tmp_path: Path) -> None:
    from megatrio.services.stores._redis import DEFAULT_MAX_CONNECTIONS

    assert Config().redis_max_connections == DEFAULT_MAX_CONNECTIONS  # one default, two places
    path = tmp_path / "megatrio.toml"
    path.write_text("redis_max_connections = 16\n")
    assert load_config(path=path, environ={}).redis_max_connections == 16
    environ = {"MEGATRIO_REDIS_MAX_CONNECTIONS": "2"}
    assert load_config(path=path, environ=environ).redis_max_connections == 2
