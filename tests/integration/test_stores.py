"""Configured stores through serve_app: file, memory and Redis caches, nonces, alerts."""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import pytest
import trio

import megatrio
from megatrio import App, Config, NonceVerdict, Serving, serve_app
from megatrio._config import CacheConfig, CacheDriverKind, NonceDriverKind

from ..http_peer import open_fake_api
from ..servers import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # real sockets and a real redis-server need the real clock


async def serve(nursery: trio.Nursery, app: App, config: Config) -> Serving:
    serving: Serving = await nursery.start(
        functools.partial(serve_app, app, config, handle_signals=False)
    )
    return serving


async def test_configured_caches_and_nonce_store_with_redis(
    tmp_path: Path, redis: RedisServer
) -> None:
    config = Config(
        bind=("127.0.0.1:0",),
        admin_bind="",
        redis_url=redis.url,
        cache={
            "default": CacheConfig(),
            "pages": CacheConfig(driver=CacheDriverKind.FILE, path=str(tmp_path / "pages")),
            "sessions": CacheConfig(driver=CacheDriverKind.REDIS),
        },
        nonce_driver=NonceDriverKind.REDIS,
        nonce_skew_seconds=60,
    )
    app = App("shop")
    async with trio.open_nursery() as nursery:
        await serve(nursery, app, config)
        for alias in ("default", "pages", "sessions"):
            await app.cache(alias).set("user:1", {"alias": alias}, ttl_seconds=60)
            assert await app.cache(alias).get("user:1") == {"alias": alias}
        assert len(list((tmp_path / "pages").rglob("*"))) >= 2  # a shard dir and an entry
        raw = await _redis_get(redis, "mega:cache:shop:user:1")
        assert json.loads(raw) == {"alias": "sessions"}
        nonces = app.rt.nonces
        assert nonces is not None
        assert await nonces.check("bank", "n-1", time.time()) is NonceVerdict.ACCEPTED
        assert await nonces.check("bank", "n-1", time.time()) is NonceVerdict.REPLAY
        children = [c["name"] for c in app.rt.snapshot()["children"]]
        assert children[:3] == ["cache-default", "cache-pages", "cache-sessions"]
        with pytest.raises(LookupError, match="no cache 'nope' in runtime 'shop'"):
            app.cache("nope")
        app.rt.stop()


async def _redis_get(redis: RedisServer, key: str) -> bytes:
    stream = await trio.open_tcp_stream(redis.host, redis.port)
    async with stream:
        await stream.send_all(f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode())
        data = b""
        while data.count(b"\r\n") < 2:
            data += await stream.receive_some()
    return data.split(b"\r\n")[1]


async def test_error_logs_reach_the_webhook_redacted_and_throttled(tmp_path: Path) -> None:
    async with open_fake_api() as api:
        config = Config(
            bind=("127.0.0.1:0",),
            admin_bind="",
            alerts_webhook_url=f"{api.url}/hooks/alerts",
            alerts_per_minute=2,
            alerts_queue_dir=str(tmp_path / "alerts"),
        )
        app = App("alerting")
        async with trio.open_nursery() as nursery:
            await serve(nursery, app, config)
            log = logging.getLogger("alerting.test")
            for i in range(5):
                log.error("payment %d failed: api_key=sk-live-123 for user 7", i)
            with trio.fail_after(10):
                await api.wait_for_requests(3)  # 2 within the throttle + 1 drop summary
            # The dispatcher's counters are a metric source of the runtime, for /metrics.
            source = app.rt.metric_sources.get("alerts")
            app.rt.stop()
    counted = {s.key(): s.value for s in source()}
    assert counted[("megatrio_alerts_sent", ())] == 3
    assert counted[("megatrio_alerts_dropped", (("reason", "throttled"),))] == 3
    bodies = [json.dumps(r.json()) for r in api.requests]
    assert all(r.target == "/hooks/alerts" for r in api.requests)
    assert "payment 0 failed" in bodies[0]
    assert "payment 1 failed" in bodies[1]
    assert "dropped" in " ".join(bodies[2:])
    assert "sk-live-123" not in " ".join(bodies)
    assert not logging.getLogger().handlers or all(
        type(h).__name__ != "AlertHandler" for h in logging.getLogger().handlers
    )


def test_alert_and_redis_settings_are_checked_together() -> None:
    with pytest.raises(megatrio.ConfigError, match="go together"):
        Config(alerts_telegram_bot_token="123:abc")
    with pytest.raises(megatrio.ConfigError, match=r"cache\.s: driver 'redis' needs redis_url"):
        Config(cache={"s": CacheConfig(driver=CacheDriverKind.REDIS)})
    with pytest.raises(megatrio.ConfigError, match="must be an http"):
        Config(alerts_webhook_url="ftp://x")
