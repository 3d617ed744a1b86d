"""A small megatrio application: a few routes, a heartbeat timer, a background child and a job.

Serve it from the repository root with ``megatrio run examples.hello:app`` (no Redis or NATS
needed: the job runs on the embedded engine), then try ``curl localhost:8000/``, ``/readyz``,
``curl -X POST localhost:8000/greet/ada``, ``megatrio tree``, and the WebSocket chat room at
http://localhost:8000/chat (two browser tabs talk to each other).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from quart import request

import megatrio

log = logging.getLogger("hello")

app = megatrio.App("hello")
visits = 0


@app.get("/")
async def index() -> dict[str, object]:
    global visits
    visits += 1
    return {"hello": "world", "visits": visits}


@app.post("/echo")
async def echo() -> dict[str, object]:
    return {"you_sent": await request.get_json()}


@app.get("/slow")
async def slow() -> str:
    # In-flight requests finish during a graceful stop (up to grace_seconds).
    await trio.sleep(float(request.args.get("seconds", "2")))
    return "done\n"


@app.get("/fail")
async def fail() -> str:
    raise RuntimeError("this route always fails (Authorization: Bearer s3cr3t is redacted)")


@app.job("hello.greet", max_deliver=3, retry_delays=(1, 5))
async def greet(payload: dict[str, Any]) -> None:
    # At least once: a crash or a stop before this returns means it runs again.
    log.info("hello, %s", payload["name"])


@app.post("/greet/<name>")
async def enqueue_greeting(name: str) -> dict[str, object]:
    sequence = await app.jobs.enqueue("hello.greet", {"name": name})
    return {"queued": sequence}


# A WebSocket endpoint on the HTTP port: each connection is a small task tree under the "ws"
# child (reader, writer with a bounded send queue, heartbeat pings).
chat = app.ws("/chat/<room>", max_message_bytes=4096)


@chat.on_connect
async def chat_connect(conn: megatrio.Connection) -> None:
    conn.join(conn.params["room"])
    app.hub.broadcast(conn.params["room"], {"joined": conn.id}, exclude=[conn.id])


@chat.on_message
async def chat_message(conn: megatrio.Connection, message: Any) -> None:
    # Encoded once, only queued for each member: a stalled reader never slows the others.
    app.hub.broadcast(conn.params["room"], {"from": conn.id, "text": str(message)[:500]})


CHAT_PAGE = """<!doctype html><meta charset=utf-8><title>megatrio chat</title>
<pre id=log></pre><input id=text placeholder="say something" autofocus>
<script>
const ws = new WebSocket(`ws://${location.host}/chat/lobby`);
const log = (line) => document.getElementById("log").textContent += line + "\\n";
ws.onmessage = (event) => log(event.data);
ws.onclose = (event) => log(`closed ${event.code} ${event.reason}`);
document.getElementById("text").onkeydown = (event) => {
  if (event.key !== "Enter") return;
  ws.send(JSON.stringify(event.target.value));
  event.target.value = "";
};
</script>"""


@app.get("/chat")
async def chat_page() -> tuple[str, int, dict[str, str]]:
    return CHAT_PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}


@app.every(10.0)
async def heartbeat() -> None:
    log.info("heartbeat", extra={"visits": visits})


@app.child()
async def janitor(*, task_status: trio.TaskStatus[None]) -> None:
    """A background child: does periodic cleanup until asked to stop."""
    ctx = megatrio.current_child()
    assert ctx is not None
    task_status.started()
    while not ctx.stopping:
        with trio.move_on_after(30):
            await ctx.wait_stopping()
    log.info("janitor: finished cleanly")
