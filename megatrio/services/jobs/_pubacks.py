"""JetStream publishes that wait for their acknowledgement without a task or a timer each.

nats-py's ``JetStreamContext.publish`` is a request per message: a future, a timeout and a
response-map entry each, awaited by the caller's own task. :class:`PubAcks` does the same job
for a stream of publishes on one asyncio loop with:

- one wildcard inbox subscription (``<inbox>.*``) for every acknowledgement, each publish
  with its own reply subject ``<inbox>.<n>``;
- one drainer task at a time that hands queued publishes to nats-py in order (it only exists
  while publishes are queued);
- one timer for all timeouts: every publish gets the same patience, so deadlines grow in
  publish order and the oldest waiting publish is the next to expire.

Each publish reports at most once, through the callback given to :meth:`PubAcks.submit`: the
stream sequence, or the error (``nats.errors.TimeoutError`` when no acknowledgement came in
time, ``nats.js.errors.NoStreamResponseError`` when no stream listens on the subject, the
``APIError`` a stream answered, or what nats-py's ``publish`` raised). A publish stopped
through the callable :meth:`~PubAcks.submit` returns never reports; if it was already sent,
the message may be stored anyway (as with any publish whose answer is lost).

Everything here runs on the loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable

import nats.errors
import nats.js.errors
import outcome
from nats.aio.client import Client
from nats.aio.msg import Msg

Done = Callable[[outcome.Outcome[int]], None]

_STATUS = "Status"
_NO_RESPONDERS = "503"
# Acknowledgements held by nats-py for the subscription before it drops them (then the
# publishes time out): far above what a loop publishes within one acknowledgement's round trip.
_PENDING_ACKS = 1_000_000


class _Publish:
    __slots__ = ("deadline", "done", "headers", "payload", "reply", "subject")

    def __init__(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, done: Done
    ) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.done: Done | None = done  # None once it has reported or was stopped
        self.reply = ""
        self.deadline = 0.0


class PubAcks:
    """Publishes to JetStream on *nc*, each answered by its acknowledgement or an error after
    *timeout_seconds* (module docstring). Use on *nc*'s loop; :meth:`aclose` when done."""

    def __init__(self, nc: Client, *, timeout_seconds: float) -> None:
        self._nc = nc
        self._timeout = timeout_seconds
        self._prefix = ""
        self._subscribed = False
        self._queued: collections.deque[_Publish] = collections.deque()
        # reply subject -> publish, in publish order, which is deadline order.
        self._waiting: dict[str, _Publish] = {}
        self._drainer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sent = 0
        self._closed = False

    @property
    def waiting(self) -> int:
        """Publishes queued or sent and not yet answered."""
        return len(self._queued) + len(self._waiting)

    def submit(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, done: Done
    ) -> Callable[[], None]:
        """Queue a publish; *done* gets its outcome, once. Returns what stops it (then *done*
        is never called). Not a coroutine: nothing here waits."""
        entry = _Publish(subject, payload, headers, done)
        if self._closed:
            self._report(entry, outcome.Error(nats.errors.ConnectionClosedError()))
            return _nothing
        self._queued.append(entry)
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return lambda: self._stop(entry)

    async def aclose(self) -> None:
        """Answer everything still queued or waiting with ``ConnectionClosedError`` and drop
        the subscription. Later publishes fail the same way."""
        self._closed = True
        if self._drainer is not None:
            self._drainer.cancel()
        self._fail_all(nats.errors.ConnectionClosedError())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the drainer ----------------------------------------------------------------------

    async def _drain(self) -> None:
        try:
            if not self._subscribed:
                prefix = self._nc.new_inbox()
                await self._nc.subscribe(
                    prefix + ".*", cb=self._on_ack, pending_msgs_limit=_PENDING_ACKS
                )
                self._prefix = prefix + "."
                self._subscribed = True
            loop = asyncio.get_running_loop()
            queued = self._queued
            while queued:
                entry = queued.popleft()
                if entry.done is None:
                    continue  # stopped before it was sent
                self._sent += 1
                entry.reply = reply = f"{self._prefix}{self._sent}"
                entry.deadline = loop.time() + self._timeout
                self._waiting[reply] = entry
                if self._timer is None:
                    self._timer = loop.call_at(entry.deadline, self._expire)
                try:
                    await self._nc.publish(
                        entry.subject, entry.payload, reply=reply, headers=entry.headers
                    )
                except Exception as exc:
                    if self._waiting.pop(reply, None) is not None:
                        self._report(entry, outcome.Error(exc))
        except Exception as exc:
            # Subscribing failed: nothing queued can be answered.
            while self._queued:
                self._report(self._queued.popleft(), outcome.Error(exc))
        finally:
            self._drainer = None

    # -- answers ------------------------------------------------------------------------------

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject, None)
        if entry is None:
            return  # answered already: timed out or stopped
        headers = msg.headers
        if headers and headers.get(_STATUS) == _NO_RESPONDERS:
            self._report(entry, outcome.Error(nats.js.errors.NoStreamResponseError()))
            return
        try:
            answer = json.loads(msg.data)
            if "error" in answer:
                nats.js.errors.APIError.from_error(answer["error"])  # raises it
            result: outcome.Outcome[int] = outcome.Value(int(answer["seq"]))
        except Exception as exc:
            result = outcome.Error(exc)
        self._report(entry, result)

    def _expire(self) -> None:
        self._timer = None
        waiting = self._waiting
        now = asyncio.get_running_loop().time()
        while waiting:
            reply = next(iter(waiting))
            entry = waiting[reply]
            if entry.deadline > now:
                self._timer = asyncio.get_running_loop().call_at(entry.deadline, self._expire)
                return
            del waiting[reply]
            self._report(entry, outcome.Error(nats.errors.TimeoutError()))

    def _stop(self, entry: _Publish) -> None:
        entry.done = None  # a queued one is skipped by the drainer
        if entry.reply:
            self._waiting.pop(entry.reply, None)

    def _fail_all(self, exc: BaseException) -> None:
        entries = [*self._queued, *self._waiting.values()]
        self._queued.clear()
        self._waiting.clear()
        for entry in entries:
            self._report(entry, outcome.Error(exc))

    @staticmethod
    def _report(entry: _Publish, result: outcome.Outcome[int]) -> None:
        done, entry.done = entry.done, None
        if done is not None:
            done(result)


def _nothing() -> None:
    pass
