"""Fixture app for the bus end-to-end test: a queue-group subscriber child, a responder
child, routes that publish and request, and a job (so jobs and the bus share NATS)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc
from quart import request

import megatrio

log = logging.getLogger("bus_app")

app = megatrio.App("busapp")


@app.child()
async def listener(*, task_status: anyio.abc.TaskStatus[None]) -> None:
    # One queue group across processes: each event reaches one listener of the group.
    async with app.bus.subscribe("events.>", queue="listeners") as sub:
        log.info("listener subscribed")
        task_status.started()
        async for msg in sub:
            log.info("got %s %s", msg.subject, msg.data.decode())


@app.child()
async def responder(*, task_status: anyio.abc.TaskStatus[None]) -> None:
    async with app.bus.subscribe("rpc.upper", queue="responders") as sub:
        task_status.started()
        async for msg in sub:
            await app.bus.reply(msg, msg.data.upper())


@app.job("noop")
async def noop(payload: Any) -> None:
    log.info("noop job %s", payload)


@app.get("/publish")
async def publish() -> dict[str, int]:
    count = int(request.args.get("count", 1))
    for n in range(count):
        await app.bus.publish(f"events.{n}", request.args["data"].encode())
    return {"published": count}


@app.get("/request")
async def ask() -> dict[str, str]:
    reply = await app.bus.request("rpc.upper", request.args["data"].encode(), timeout_seconds=5)
    return {"reply": reply.data.decode()}


@app.get("/enqueue")
async def enqueue() -> dict[str, int]:
    return {"sequence": await app.jobs.enqueue("noop", {"n": 1})}
