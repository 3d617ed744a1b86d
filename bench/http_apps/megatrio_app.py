"""``GET /`` on a megatrio App: ``python -m megatrio run bench.http_apps.megatrio_app:app``."""

from __future__ import annotations

import megatrio

from . import hello

app = megatrio.App("bench")
app.get("/")(hello)
