"""An asyncio event loop in a thread of its own, for asyncio-only clients (nats-py) under trio.

:func:`open_asyncio_bridge` starts one loop in a dedicated thread for exactly the ``async
with`` block; :meth:`AsyncioBridge.run` runs a coroutine function there as an asyncio task and
hands its result or exception back to the trio caller. Each call crosses the thread boundary
twice (there and back), so callers batch: one call per batch of work, never one per byte.

Cancellation is structured in both directions. A trio caller that is cancelled cancels its
asyncio task and waits until that task has really finished — its ``finally`` blocks and
``except CancelledError`` handlers included — before it re-raises ``Cancelled``: nothing the
call started is left running behind the trio side's back, exactly as
``trio.to_thread.run_sync`` never abandons its thread. Closing the bridge cancels whatever still
runs on the loop, waits for all of it, stops the loop and joins the thread; the trio side waits
without blocking the trio scheduler.

Crossings coalesce in both directions. Calls made while the loop has not yet picked up the
previous ones join one wake-up of the loop (a single ``call_soon_threadsafe`` starts them all),
and results that finish while the trio side has not yet taken the previous ones join one
wake-up of trio. Concurrent callers therefore never wait for each other — each call is its own
task on the loop — while a busy bridge pays for one thread wake-up per burst, not per call.

:meth:`AsyncioBridge.run_callback` is the same crossing for an operation that needs no task of
its own on the loop: a plain function starts it there and it reports its outcome through a
callback (a publish waiting for its acknowledgement, say). A task per call cost more than such
an operation itself.

Under asyncio (anyio on its asyncio backend) there is nothing to bridge: the bridge wraps the
running loop and :meth:`~AsyncioBridge.run` simply awaits the call, with asyncio's own
cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar, TypeVarTuple, final

import anyio
import outcome
import sniffio
import trio

from ..._util import NoPublicConstructor

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

Done = Callable[[outcome.Outcome[T]], None]
"""How a callback operation reports its outcome (on the loop's thread; later calls are ignored)."""
Cancel = Callable[[], None]
"""Stops a callback operation at once (on the loop's thread): once it returns, nothing of the
operation runs any more, and its outcome, if it still reports one, is ignored."""


@final
class AsyncioBridge(metaclass=NoPublicConstructor):
    """The asyncio loop that :func:`open_asyncio_bridge` runs, and calls into it.

    Threaded under trio; inline under asyncio (:attr:`threaded` is False: the host's own loop).
    """

    __slots__ = (
        "_closing",
        "_done",
        "_done_scheduled",
        "_live",
        "_loop",
        "_starts",
        "_starts_scheduled",
        "_stop",
        "_stopped",
        "_thread",
        "_token",
        "loop_wakeups",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken | None):
        self._loop = loop
        # None when the host itself is asyncio: then everything runs inline on its loop.
        self._token = token
        self._closing = False
        self._stop = asyncio.Event()
        self._stopped = trio.Event() if token is not None else None
        self._thread: threading.Thread | None = None
        # Two hand-off queues, one per direction, each with a flag that says a drain is
        # scheduled. Invariant: an item appended before its queue's drain resets the flag is
        # taken by that drain (the drain resets the flag first, then empties the queue), and
        # an appender that sees the flag reset schedules the next drain; so no item waits
        # without a drain on its way. deque append/popleft are atomic across threads.
        self._starts: deque[tuple[_Call[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        # Callback operations started and not finished (the loop's side only): a task the
        # close cancels by itself, these it must stop and answer.
        self._live: set[_Call[Any]] = set()
        self._starts_scheduled = False
        self._done: deque[_Call[Any]] = deque()
        self._done_scheduled = False
        self.loop_wakeups = 0
        """How many times calls woke the loop (a burst of calls wakes it once)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop calls run on (the host's own loop under asyncio)."""
        return self._loop

    @property
    def threaded(self) -> bool:
        """True when the loop runs in a thread of its own (the host is trio)."""
        return self._token is not None

    async def run(self, async_fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """Run ``async_fn(*args)`` as an asyncio task on the bridge's loop; return its result.

        Its exception, if any, is raised here unchanged. Always a checkpoint. If the caller is
        cancelled, the asyncio task is cancelled and this waits until it has finished (however
        long its own cleanup takes), then raises ``Cancelled``; a result that arrived anyway is
        discarded.

        Raises:
            anyio.ClosedResourceError: the bridge is closed, or closed while the call ran (the
                call was cancelled on the asyncio side by the close).
        """
        if self._token is None:
            return await async_fn(*args)
        return await self._cross(_Call(self, callback=False), async_fn, args)

    async def run_callback(self, start: Callable[[Done[T], *Ts], Cancel], *args: *Ts) -> T:
        """Start ``start(done, *args)`` on the bridge's loop and return the value (or raise the
        exception) of the outcome it reports through ``done(outcome)``.

        *start* runs on the loop's thread and must not block; it returns a :data:`Cancel`
        that stops the operation. What *start* raises is raised here. Cancellation is as in
        :meth:`run`: the operation is stopped and this waits for that, then raises
        ``Cancelled``. Closing the bridge stops every operation still running; its caller
        gets ``anyio.ClosedResourceError``.
        """
        if self._token is None:
            return await await_callback(start, *args)
        return await self._cross(_Call(self, callback=True), start, args)

    async def _cross(self, call: _Call[T], fn: Callable[..., Any], args: tuple[Any, ...]) -> T:
        if self._closing:
            raise anyio.ClosedResourceError("the asyncio bridge is closed")
        self._starts.append((call, fn, args))
        if not self._starts_scheduled:
            self._starts_scheduled = True
            self.loop_wakeups += 1
            try:
                self.call_soon_in_loop(self._start_all)
            except RuntimeError as exc:  # the loop is closed: its thread is gone
                self._starts.clear()
                raise anyio.ClosedResourceError("the asyncio bridge is closed") from exc
        try:
            await call.done.wait()
        except trio.Cancelled:
            # Set here too, so that a call the loop has not picked up yet never starts (the
            # loop reads it in start(); a plain attribute write is atomic across threads).
            call.cancel_requested = True
            self.call_soon_in_loop(call.cancel)
            # Unbounded on purpose, like to_thread.run_sync: walking away would leave the task
            # running unsupervised. Its wait is bounded by the task's own cancellation handling,
            # and the task is on a loop that the bridge's close stops.
            with trio.CancelScope(shield=True):
                await call.done.wait()
            raise
        assert call.result is not None
        return call.result.unwrap()

    def call_soon_in_loop(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """Schedule ``fn(*args)`` on the bridge's loop; callable from the host's thread.

        Not a checkpoint. *fn* runs in an empty context: the host's context variables (trio's
        and sniffio's among them) never leak into asyncio tasks.

        Raises:
            RuntimeError: the loop is closed.
        """
        self._loop.call_soon_threadsafe(fn, *args, context=contextvars.Context())

    def call_soon_in_host(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """Schedule ``fn(*args)`` in the host (the trio run, or the asyncio host's loop);
        callable from the bridge's loop. Dropped silently once the host has finished.

        *fn* must not raise: under trio an exception there is an internal error of the run.
        """
        if self._token is None:
            self._loop.call_soon(fn, *args)
            return
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    # -- the two hand-offs (trio host only) ----------------------------------------------

    def _start_all(self) -> None:
        """On the loop: start every call waiting (one wake-up of the loop for all of them)."""
        self._starts_scheduled = False
        starts = self._starts
        while starts:
            call, fn, args = starts.popleft()
            call.start(fn, args)

    def _finished(self, call: _Call[Any]) -> None:
        """On the loop: hand *call*'s outcome to trio, joining a wake-up already on its way."""
        self._done.append(call)
        if not self._done_scheduled:
            self._done_scheduled = True
            assert self._token is not None
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._wake_all)

    def _wake_all(self) -> None:
        """In trio: wake every caller whose call finished (one wake-up for all of them)."""
        self._done_scheduled = False
        done = self._done
        while done:
            done.popleft().done.set()

    # -- the loop's life (trio host only) -------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._thread_main, name="megatrio-asyncio-bridge", daemon=True
        )
        self._thread.start()

    def _thread_main(self) -> None:
        try:
            # Runner.close (on leaving the with) cancels every task still on the loop and runs
            # the loop until they have finished, then shuts down async generators and the
            # default executor, and closes the loop.
            with asyncio.Runner(loop_factory=lambda: self._loop) as runner:
                runner.run(self._stop.wait(), context=contextvars.Context())
                for call in list(self._live):
                    call.stop_for_close()
        finally:
            assert self._token is not None
            assert self._stopped is not None
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stopped.set)

    async def _aclose(self) -> None:
        if self._token is None:
            self._closing = True
            return
        assert self._stopped is not None
        if not self._closing:
            self._closing = True
            with contextlib.suppress(RuntimeError):  # already closed: its thread has ended
                self.call_soon_in_loop(self._stop.set)
        # Shielded without a bound for the same reason as a cancelled run: the loop's tasks
        # are cancelled by now, and returning before they finished would leak them.
        with trio.CancelScope(shield=True):
            await self._stopped.wait()
        assert self._thread is not None
        self._thread.join()  # returns at once: the thread's last act was to set _stopped


@final
class _Call(Generic[T]):
    """One run: its asyncio task, and its outcome handed to the trio side."""

    __slots__ = ("_bridge", "_callback", "_stop_fn", "cancel_requested", "done", "result", "task")

    def __init__(self, bridge: AsyncioBridge, *, callback: bool) -> None:
        self._bridge = bridge
        self._callback = callback
        self._stop_fn: Cancel | None = None
        self.done = trio.Event()
        # Written on the loop's thread before the call is handed back, read by the trio side
        # only after done is set by the trio-side drain: the hand-off queue orders the two.
        self.result: outcome.Outcome[T] | None = None
        self.task: asyncio.Future[T] | None = None
        self.cancel_requested = False

    # The methods below run on the loop's thread.

    def start(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if self._bridge._closing:
            self._finish(outcome.Error(anyio.ClosedResourceError("the asyncio bridge is closed")))
            return
        if self.cancel_requested:  # cancelled before the loop picked it up: never started
            self._finish(outcome.Error(anyio.ClosedResourceError("cancelled")))
            return
        if self._callback:
            self._bridge._live.add(self)
            try:
                stop = fn(self._finish, *args)
            except BaseException as exc:
                self._finish(outcome.Error(exc))
                return
            if self.result is None:
                self._stop_fn = stop
            return
        try:
            self.task = asyncio.ensure_future(fn(*args))
        except BaseException as exc:
            self._finish(outcome.Error(exc))
            return
        self.task.add_done_callback(self._task_done)

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.task is not None:
            self.task.cancel()
        elif self._stop_fn is not None:
            self._stop_fn()
            # The trio side raises its own Cancelled; this outcome is never unwrapped.
            self._finish(outcome.Error(anyio.ClosedResourceError("cancelled")))

    def stop_for_close(self) -> None:
        if self._stop_fn is not None:
            self._stop_fn()
        self._finish(
            outcome.Error(anyio.ClosedResourceError("the asyncio bridge closed while the call ran"))
        )

    def _task_done(self, task: asyncio.Future[T]) -> None:
        if task.cancelled():
            if self.cancel_requested:
                # The trio side raises its own Cancelled; this outcome is never unwrapped.
                error: BaseException = anyio.ClosedResourceError("cancelled")
            elif self._bridge._closing:
                error = anyio.ClosedResourceError("the asyncio bridge closed while the call ran")
            else:
                error = RuntimeError("the call was cancelled on the asyncio side")
            self._finish(outcome.Error(error))
            return
        exc = task.exception()
        self._finish(outcome.Error(exc) if exc is not None else outcome.Value(task.result()))

    def _finish(self, result: outcome.Outcome[T]) -> None:
        if self.result is not None:  # a callback operation answering after its stop
            return
        self.result = result
        self._stop_fn = None
        if self._callback:
            self._bridge._live.discard(self)
        self._bridge._finished(self)


async def await_callback(start: Callable[[Done[T], *Ts], Cancel], *args: *Ts) -> T:
    """Run a callback operation (see :meth:`AsyncioBridge.run_callback`) from an asyncio task
    on its own loop: the value of its outcome, or its exception raised. Cancelling the task
    stops the operation."""
    finished: asyncio.Future[outcome.Outcome[T]] = asyncio.get_running_loop().create_future()

    def done(result: outcome.Outcome[T]) -> None:
        if not finished.done():
            finished.set_result(result)

    cancel = start(done, *args)
    try:
        result = await finished
    except asyncio.CancelledError:
        cancel()
        raise
    return result.unwrap()


@contextlib.asynccontextmanager
async def open_asyncio_bridge() -> AsyncIterator[AsyncioBridge]:
    """An :class:`AsyncioBridge` for the block: under trio a new loop in a new thread, both
    gone when the block is left; under asyncio the running loop itself.

    Leaving the block (normally, by an error or by cancellation) closes the bridge: every
    task still on the loop is cancelled and waited for, then the loop is closed and its thread
    joined. Calls still waiting in other trio tasks raise ``anyio.ClosedResourceError``.

    Raises:
        RuntimeError: the running async library is neither trio nor asyncio.
    """
    library = sniffio.current_async_library()
    if library == "asyncio":
        bridge = AsyncioBridge._create(asyncio.get_running_loop(), None)
    elif library == "trio":
        bridge = AsyncioBridge._create(asyncio.new_event_loop(), trio.lowlevel.current_trio_token())
        bridge._start()
    else:
        raise RuntimeError(f"the asyncio bridge runs under trio or asyncio, not {library}")
    try:
        yield bridge
    finally:
        await bridge._aclose()
