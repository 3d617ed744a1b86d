"""The raw ASGI app of :mod:`.asgi_app` on megatrio's fast HTTP/1.1 front, with no runtime.

``python -m bench.http_apps.fast_asgi HOST:PORT`` serves until SIGTERM or SIGINT, then exits 0:
the front's own ceiling, to set beside the same app on hypercorn's workers.
"""

from __future__ import annotations

import functools
import signal
import sys

import trio

from megatrio.services.http._front import HttpFront
from megatrio.services.http._server import HttpOptions, serve_http

from .asgi_app import app


async def main(bind: str) -> None:
    async with trio.open_nursery() as nursery:
        options = HttpOptions(front=HttpFront.FAST)
        serve = functools.partial(serve_http, options=options)
        await nursery.start(serve, app, [bind], "bench", 1.0)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
