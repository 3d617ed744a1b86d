"""``GET /`` on Starlette: ``python -m uvicorn bench.http_apps.starlette_app:app``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from . import BODY


async def hello(request: Request) -> HTMLResponse:
    return HTMLResponse(BODY)


app = Starlette(routes=[Route("/", hello)])
