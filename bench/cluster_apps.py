"""Apps served by ``bench/bench_cluster.py``: ``GET /`` and ``GET /pid``, megatrio and bare.

- ``bench.cluster_apps:app``: a :class:`megatrio.App`
  (``python -m megatrio run bench.cluster_apps:app --workers N``);
- ``bench.cluster_apps:quart_app``: a bare :class:`quart_trio.QuartTrio` with the same two
  handlers (``python -m hypercorn --worker-class trio --workers N bench.cluster_apps:quart_app``).

``GET /pid`` answers with the serving process's pid, which tells which worker answered (the
respawn benchmark polls it until the replacement worker answers). Import with the repository
root on ``sys.path`` (``bench`` is a package; ``python -m`` from the root puts it there).
"""

from __future__ import annotations

import os

from quart_trio import QuartTrio

import megatrio

BODY = "hello, world\n"


async def hello() -> str:
    return BODY


async def pid() -> str:
    return f"{os.getpid()}\n"


app = megatrio.App("bench-cluster")
app.get("/")(hello)
app.get("/pid")(pid)

quart_app = QuartTrio("bench-cluster")
quart_app.get("/")(hello)
quart_app.get("/pid")(pid)
