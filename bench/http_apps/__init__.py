"""The applications served by ``bench/bench_http.py``: one trivial route, three ways.

- ``bench.http_apps.megatrio_app:app``: a :class:`megatrio.App`
  (``python -m megatrio run bench.http_apps.megatrio_app:app``);
- ``bench.http_apps.quart_app:app``: a bare :class:`quart_trio.QuartTrio` with the very same
  handler (``python -m hypercorn --worker-class trio bench.http_apps.quart_app:app``);
- ``bench.http_apps.asgi_app:app``: a raw ASGI callable (lifespan handled) sending the same
  response Quart sends for that handler — the ceiling of hypercorn's trio worker.

One module each, so that each server process imports only its own stack (its RSS is then
comparable). Import them with the repository root on ``sys.path`` (``bench`` is a package).
This module itself imports nothing heavy.
"""

from __future__ import annotations

BODY = "hello, world\n"
BODY_BYTES = BODY.encode()


async def hello() -> str:
    """The handler both the megatrio App and the bare Quart app route ``GET /`` to."""
    return BODY
