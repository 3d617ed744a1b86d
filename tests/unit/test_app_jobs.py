"""``@app.job``, the ``[jobs.NAME]`` / ``nats_url`` config keys and the engine choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import megatrio
from megatrio import ConfigError, JobSettings
from megatrio._config import Config, JobConfig, load_config
from megatrio.app._jobs import configured_specs, open_job_engine, open_jobs


class ValidationError(Exception):
    pass


def make_app() -> megatrio.App:
    app = megatrio.App("shop")

    @app.job(
        "email.send",
        max_deliver=5,
        retry_delays=(1, 5, 30),
        ack_wait_seconds=30,
        concurrency=8,
        no_retry=(ValidationError,),
    )
    async def send(payload: Any) -> None:
        pass

    @app.job("report")
    async def report(payload: Any) -> None:
        pass

    return app


def test_the_decorator_declares_a_job_with_its_settings() -> None:
    app = make_app()
    email, report = app.job_specs()
    assert email.settings == JobSettings(
        "email.send", max_deliver=5, retry_delays=(1, 5, 30), ack_wait_seconds=30, concurrency=8
    )
    assert email.no_retry == (ValidationError,)
    assert report.settings == JobSettings("report")
    with pytest.raises(ValueError, match="already has a job named 'report'"):
        app.job("report")
    with pytest.raises(ValueError, match="max_deliver must be >= 1"):
        app.job("other", max_deliver=0)
    with pytest.raises(RuntimeError, match="not being served"):
        _ = app.jobs


def test_jobs_tables_override_the_declared_settings() -> None:
    app = make_app()
    config = Config(jobs={"report": {"concurrency": 2, "retry_delays": [0, 10]}})
    email, report = configured_specs(app, config)
    assert email.settings.concurrency == 8
    assert (report.settings.concurrency, report.settings.retry_delays) == (2, (0.0, 10.0))
    assert report.settings.max_deliver == 5  # not overridden
    with pytest.raises(ConfigError, match=r"\[jobs.nope\] configures no job of app 'shop'"):
        configured_specs(app, Config(jobs={"nope": JobConfig(concurrency=1)}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[jobs.x]\nmax_deliver = 0\n", "jobs.x.max_deliver: expected an integer >= 1, got 0"),
        ("[jobs.x]\nretry_delays = 5\n", "jobs.x.retry_delays: expected a list of numbers"),
        ("[jobs.x]\nretry_delays = [1, -1]\n", "jobs.x.retry_delays: expected a list of finite"),
        ("[jobs.x]\nack_wait_seconds = 0\n", "jobs.x.ack_wait_seconds: expected a finite number"),
        ("[jobs.x]\nconcurrency = 1.5\n", "jobs.x.concurrency: expected an integer >= 1"),
        ("[jobs.x]\nwhen = 1\n", "jobs.x: unknown key 'when' \\(known keys: max_deliver"),
        ("jobs = 3\n", "expected tables \\[jobs.NAME\\]"),
        ('nats_url = "http://x:4222"\n', "key 'nats_url': expected nats://HOST:PORT"),
    ],
)
def test_bad_jobs_config_names_the_file_key_and_expected_type(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "megatrio.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path=path, environ={})
    assert str(path) in str(info.value)


def test_jobs_are_file_only_and_nats_url_comes_from_anywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jobs are configured in the config file"):
        load_config(path=None, directory=tmp_path, environ={"MEGATRIO_JOBS": "x"})
    config = load_config(directory=tmp_path, environ={"MEGATRIO_NATS_URL": "nats://n:4222"})
    assert config.nats_url == "nats://n:4222"


@pytest.mark.anyio
async def test_the_engine_is_embedded_without_nats_url() -> None:
    async with open_job_engine(Config(), "shop") as engine:
        assert isinstance(engine.driver, megatrio.EmbeddedDriver)
        assert engine.connection is None


@pytest.mark.anyio
async def test_open_jobs_installs_rt_jobs_until_the_runtime_stops() -> None:
    app = make_app()
    async with megatrio.mega_runtime(name="shop") as rt:
        with pytest.raises(LookupError, match="has no jobs"):
            _ = rt.jobs
        jobs = await open_jobs(rt, app, Config())
        assert jobs is not None
        assert rt.jobs is jobs
        app._attach(rt)
        assert await app.jobs.enqueue("report", {"n": 1}) == 1
        with pytest.raises(LookupError, match=r"declared: email.send, report"):
            await app.jobs.enqueue("nope", {})
    with pytest.raises(LookupError):
        _ = rt.jobs
    assert await open_jobs(rt, megatrio.App("empty"), Config()) is None
