"""``GET /`` on bare quart-trio: ``hypercorn --worker-class trio bench.http_apps.quart_app:app``."""

from __future__ import annotations

from quart_trio import QuartTrio

from . import hello

app = QuartTrio("bench")
app.get("/")(hello)
