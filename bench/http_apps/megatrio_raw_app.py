"""``GET /`` on a megatrio App's lean route (``raw=True``): ``python -m megatrio run
bench.http_apps.megatrio_raw_app:app`` — the same handler as :mod:`.megatrio_app`, bypassing
Quart's request machinery."""

from __future__ import annotations

from typing import Any

import megatrio

from . import hello

app = megatrio.App("bench")


@app.get("/", raw=True)
async def lean(request: megatrio.RawRequest) -> Any:
    return await hello()
