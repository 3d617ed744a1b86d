"""``GET /`` on Quart (asyncio): ``python -m uvicorn bench.http_apps.quart_asyncio_app:app``."""

from __future__ import annotations

from quart import Quart

from . import hello

app = Quart("bench")
app.get("/")(hello)
