"""A real HTTP/1.1 peer on 127.0.0.1 (trio + h11) standing in for Telegram or a webhook."""

from __future__ import annotations

import collections
import contextlib
import functools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import h11
import trio


@dataclass
class Recorded:
    at: float
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], bytes]
HANG: Reply = (0, {}, b"hang")
OK: Reply = (200, {"content-type": "application/json"}, b'{"ok":true,"result":{}}')


class FakeApi:
    """A real HTTP/1.1 server (trio + h11) on 127.0.0.1 standing in for Telegram or a webhook.

    Answers with the replies queued in :attr:`script` (then 200 ``{"ok":true}``), hangs on
    :data:`HANG`, and records every request with the trio time it arrived.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: collections.deque[Reply] = collections.deque()
        self.port = 0
        self._arrived = trio.Event()

    async def wait_for_requests(self, count: int) -> None:
        while len(self.requests) < count:
            await self._arrived.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while True:
                    request = await self._read(conn, stream)
                    if request is None:
                        return
                    self.requests.append(request)
                    self._arrived.set()
                    self._arrived = trio.Event()
                    reply = self.script.popleft() if self.script else OK
                    if reply == HANG:
                        await trio.sleep_forever()
                    status, headers, body = reply
                    headers = {**headers, "content-length": str(len(body))}
                    for event in (
                        h11.Response(status_code=status, headers=list(headers.items())),
                        h11.Data(data=body),
                        h11.EndOfMessage(),
                    ):
                        await stream.send_all(conn.send(event) or b"")
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
            except (trio.BrokenResourceError, h11.RemoteProtocolError):
                return

    async def _read(self, conn: h11.Connection, stream: trio.SocketStream) -> Recorded | None:
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return Recorded(
                    at=trio.current_time(),
                    method=request.method.decode(),
                    target=request.target.decode(),
                    headers={k.decode(): v.decode() for k, v in request.headers},
                    body=body,
                )
            else:
                return None


@contextlib.asynccontextmanager
async def open_fake_api() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, api._handle, 0, host="127.0.0.1")
        )
        api.port = listeners[0].socket.getsockname()[1]
        yield api
        nursery.cancel_scope.cancel()
