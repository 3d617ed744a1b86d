"""Fixture app for the jobs end-to-end test: one job, enqueued from a route."""

from __future__ import annotations

import logging
from typing import Any

import trio
from quart import request

import megatrio

log = logging.getLogger("jobs_app")

app = megatrio.App("jobsapp")
attempts: dict[str, int] = {}


@app.job("greet", max_deliver=3, retry_delays=(0.2,))
async def greet(payload: dict[str, Any]) -> None:
    name = payload["name"]
    attempts[name] = attempts.get(name, 0) + 1
    if payload.get("fail_first") and attempts[name] == 1:
        raise RuntimeError(f"first attempt for {name} fails")
    log.info("handled job for %s after %d attempts", name, attempts[name])


@app.job("slow", max_deliver=5, retry_delays=(0.1,), ack_wait_seconds=2)
async def slow(payload: dict[str, Any]) -> None:
    log.info("slow job %s started", payload["id"])
    await trio.sleep(payload["seconds"])
    log.info("slow job %s done", payload["id"])


@app.job("poison", max_deliver=2, retry_delays=(0.1,))
async def poison(payload: dict[str, Any]) -> None:
    raise ValueError(f"poison {payload['id']} always fails")


@app.get("/enqueue/<job>")
async def enqueue_job(job: str) -> dict[str, int]:
    payload = {"id": request.args["id"], "seconds": float(request.args.get("seconds", 0))}
    return {"sequence": await app.jobs.enqueue(job, payload)}


@app.get("/enqueue")
async def enqueue() -> dict[str, int]:
    payload = {"name": request.args["name"], "fail_first": "fail" in request.args}
    return {"sequence": await app.jobs.enqueue("greet", payload)}
