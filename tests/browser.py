"""A real headless Chromium (Debian's, installed by .ci/run), driven over the DevTools
protocol with trio-websocket: navigate, then evaluate JavaScript in the page."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import trio
import trio_websocket

from .servers import free_port, stop_process


class Page:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self._ids = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._ids += 1
        ident = self._ids
        await self._ws.send_message(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            reply = json.loads(await self._ws.get_message())
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


def _launch(binary: str, port: int, profile: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.asynccontextmanager
async def chromium_page() -> AsyncIterator[Page]:
    """One page of a private headless Chromium, stopped by pid on exit."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise RuntimeError("chromium is not installed (run .ci/run, or apt-get install chromium)")
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        proc = _launch(binary, port, profile)
        try:
            base = f"http://127.0.0.1:{port}"
            with trio.fail_after(30):
                while True:
                    try:
                        pages = await trio.to_thread.run_sync(_json, f"{base}/json/list")
                        targets = [t for t in pages if t.get("type") == "page"]
                        if targets:
                            break
                    except OSError:
                        pass
                    await trio.sleep(0.1)
            async with trio_websocket.open_websocket_url(
                targets[0]["webSocketDebuggerUrl"], max_message_size=64 * 1024 * 1024
            ) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                yield page
        finally:
            stop_process(proc, signal.SIGTERM)
