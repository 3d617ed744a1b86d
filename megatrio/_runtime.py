"""``mega_runtime()``: a root supervisor, graceful stop, LIFO resources and global errors."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar, final

import anyio
import anyio.abc

from ._policy._checks import check_seconds
from ._policy._nonces import NonceStore
from ._registry import Registry
from ._samples import SampleSource
from ._util import NoPublicConstructor
from .nursery._errors import describe, unwrapped_groups
from .nursery._signals import check_main_thread, serve_stop_signals
from .nursery._watchdog import LoopWatchdog
from .supervisor import ChildSpec, Supervisor

if TYPE_CHECKING:
    # For annotations only: the services are a layer above and are never imported at run time.
    from .services.jobs._jobs import Jobs
    from .services.nats._bus import Bus
    from .services.stores._cache import Cache

log = logging.getLogger("megatrio.runtime")

T = TypeVar("T")


@final
class Runtime(metaclass=NoPublicConstructor):
    """The handle ``mega_runtime()`` yields. Created only by :func:`mega_runtime`."""

    def __init__(
        self,
        name: str,
        grace_seconds: float,
        supervisor: Supervisor,
        shutdown_delay_seconds: float = 0.0,
    ) -> None:
        self.name = name
        self.grace_seconds = grace_seconds
        self.shutdown_delay_seconds = shutdown_delay_seconds
        self.supervisor = supervisor
        """The root supervisor (one-for-one)."""
        self._body_scope = anyio.CancelScope()
        self._root_scope = anyio.CancelScope()
        self._root_done = anyio.Event()
        # LIFO closers of resources and callbacks; see enter_async_context for why a resource
        # is held open by a task of its own rather than an AsyncExitStack.
        self._closers: list[Callable[[], Awaitable[object]]] = []
        # Scopes a second stop (cancel()) must lift: the cleanup in progress and the shields
        # that hold each resource open.
        self._cleanup_scope: anyio.CancelScope | None = None
        self._guards: list[anyio.CancelScope] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._stop_requested = False
        self._stop_deadline: float | None = None
        self._delay_scope: anyio.CancelScope | None = None
        self._forced = False
        self._fatal: BaseException | None = None
        self.caches: Registry[Cache] = Registry("cache", name)
        """The caches by alias, registered by :func:`megatrio.open_cache` for as long as it is
        open. The registry is generic: the runtime keeps the map and knows nothing of caches."""
        self.metric_sources: Registry[SampleSource] = Registry("metric source", name)
        """What services count, by source name (``cache:default``, ``nonces``, ``alerts``):
        each a callable giving :class:`~megatrio._samples.Sample` values, read by the admin
        listener's ``/metrics`` at each scrape. A service registers its source while it is
        open and discards it when it closes."""
        self._nonces: NonceStore | None = None
        self._jobs: Jobs | None = None
        self._bus: Bus | None = None

    @property
    def stopping(self) -> bool:
        """True once a stop was requested (by :meth:`stop`, a signal, or a fatal error)."""
        return self._stop_requested

    async def start_child(self, spec: ChildSpec) -> object:
        """Start *spec* under the root supervisor; see :meth:`Supervisor.start_child`."""
        return await self.supervisor.start_child(spec)

    async def stop_child(self, name: str) -> None:
        """Stop and remove a root child; see :meth:`Supervisor.stop_child`."""
        await self.supervisor.stop_child(name)

    def cache(self, alias: str = "default") -> Cache:
        """The ``megatrio.Cache`` registered as *alias* (see :func:`megatrio.open_cache`).

        Raises:
            LookupError: no cache has that alias (the message lists the known ones).
        """
        return self.caches.get(alias)

    @property
    def nonces(self) -> NonceStore:
        """The replay-protection store: the configured one under ``megatrio run``, the one
        :func:`megatrio.open_nonces` installed when embedding.

        Raises:
            LookupError: none is installed (the message says how to open one).
        """
        if self._nonces is None:
            raise LookupError(
                f"runtime {self.name!r} has no nonce store: open one with "
                "`async with megatrio.open_nonces(rt, megatrio.MemoryNonceStore()):`"
            )
        return self._nonces

    def install_nonces(self, store: NonceStore) -> None:
        """Make *store* :attr:`nonces`; used by :func:`megatrio.open_nonces`. Not a checkpoint.

        Raises:
            ValueError: a nonce store is installed already.
        """
        if self._nonces is not None:
            raise ValueError(f"runtime {self.name!r} already has a nonce store")
        self._nonces = store

    def uninstall_nonces(self, store: NonceStore) -> None:
        """Remove *store* if it is :attr:`nonces`. Idempotent; not a checkpoint."""
        if self._nonces is store:
            self._nonces = None

    @property
    def jobs(self) -> Jobs:
        """The declared jobs (``megatrio.Jobs``): ``await rt.jobs.enqueue(name, payload)``.
        Installed by ``megatrio run`` for an App that declares jobs, or by
        :meth:`install_jobs` when embedding.

        Raises:
            LookupError: no jobs are installed.
        """
        if self._jobs is None:
            raise LookupError(
                f"runtime {self.name!r} has no jobs: declare them with @app.job(...), or "
                "install a megatrio.Jobs with rt.install_jobs(jobs)"
            )
        return self._jobs

    def install_jobs(self, jobs: Jobs) -> None:
        """Make *jobs* :attr:`jobs`. Not a checkpoint. The runtime only keeps it: it never
        looks inside (the jobs service is a layer above).

        Raises:
            ValueError: jobs are installed already.
        """
        if self._jobs is not None:
            raise ValueError(f"runtime {self.name!r} already has jobs")
        self._jobs = jobs

    def uninstall_jobs(self, jobs: Jobs) -> None:
        """Remove *jobs* if it is :attr:`jobs`. Idempotent; not a checkpoint."""
        if self._jobs is jobs:
            self._jobs = None

    @property
    def bus(self) -> Bus:
        """The core-NATS bus (``megatrio.Bus``): publish, subscribe, request and reply,
        at-most-once. Installed by ``megatrio run`` when ``nats_url`` is set, or by
        :meth:`install_bus` when embedding.

        Raises:
            LookupError: no bus is installed (the message names the setting that opens one).
        """
        if self._bus is None:
            raise LookupError(
                f"runtime {self.name!r} has no bus: the bus needs NATS — set nats_url "
                "(megatrio.toml) or MEGATRIO_NATS_URL to nats://HOST:PORT, or install a "
                "megatrio.Bus with rt.install_bus(bus)"
            )
        return self._bus

    def install_bus(self, bus: Bus) -> None:
        """Make *bus* :attr:`bus`. Not a checkpoint. The runtime only keeps it: it never
        looks inside (the NATS service is a layer above).

        Raises:
            ValueError: a bus is installed already.
        """
        if self._bus is not None:
            raise ValueError(f"runtime {self.name!r} already has a bus")
        self._bus = bus

    def uninstall_bus(self, bus: Bus) -> None:
        """Remove *bus* if it is :attr:`bus`. Idempotent; not a checkpoint."""
        if self._bus is bus:
            self._bus = None

    def snapshot(self) -> dict[str, Any]:
        """The whole supervision tree as plain data. Not a checkpoint."""
        return self.supervisor.snapshot()

    @property
    def forced(self) -> bool:
        """True once the stop was forced and work in progress may have been cut off:
        :meth:`cancel` (a second signal) was called, or ``grace_seconds`` ran out while
        children or resources were still stopping. Children cancelled at their own
        ``shutdown_seconds`` within the grace do not make a stop forced."""
        return self._forced

    def stop(self) -> None:
        """Request a graceful stop from any task. Idempotent; not a checkpoint.

        :attr:`stopping` is true at once (readiness fails). After ``shutdown_delay_seconds``
        (0 by default: at once) the body of the ``async with`` is cancelled (and exits
        normally), then every child stops in reverse order within its own grace; the delay
        and the whole stop are bounded by ``grace_seconds``, counted from this call.
        """
        if self._stop_requested:
            return
        self._stop_requested = True
        self._deadline()
        self._body_scope.cancel()

    def cancel(self) -> None:
        """Stop immediately: like :meth:`stop`, with no grace for children or resources.

        Also interrupts a graceful stop already under way — children still stopping, an
        ``on_stop`` hook or a resource being closed are cancelled at once. Not a checkpoint.
        """
        self.stop()
        self._forced = True
        self._stop_deadline = -math.inf
        if self._delay_scope is not None:
            self._delay_scope.cancel()
        self._root_scope.cancel()
        if self._cleanup_scope is not None:
            self._cleanup_scope.cancel()
        for guard in self._guards:
            guard.cancel()

    async def enter_async_context(self, cm: AbstractAsyncContextManager[T]) -> T:
        """Enter *cm* now; it is exited after every child has stopped, in LIFO order.

        The context is entered and exited by a holder task of its own in the runtime's task
        group, not by the calling task: a resource that owns a task group (a connection pool)
        must be exited in the task and cancel-scope nesting it was entered in, and the body
        that registers it ends long before the children that use it have stopped.

        Once entered, the resource is shielded: cancelling the runtime from outside does not
        cancel it, its ``__aexit__`` runs without an exception and without being cancelled,
        bounded by what is left of ``grace_seconds``. :meth:`cancel` lifts the shield (the
        ``__aexit__`` in progress is cancelled). Cancelling the caller while ``__aenter__``
        runs cancels ``__aenter__``.

        Raises whatever ``cm.__aenter__`` raises. An error from ``__aexit__`` is logged.
        """
        assert self._tg is not None
        release = anyio.Event()
        finished = anyio.Event()
        guard = anyio.CancelScope()
        value: T = await self._tg.start(_hold, cm, guard, release, finished)
        self._guards.append(guard)

        async def close() -> None:
            guard.deadline = min(guard.deadline, self._deadline())
            release.set()
            await finished.wait()

        self._closers.append(close)
        return value

    def push_async_callback(self, callback: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Call ``await callback(*args)`` at shutdown, after the children, in LIFO order."""
        self._closers.append(functools.partial(callback, *args))

    async def _run_root(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with self._root_scope:
                await self.supervisor.run(task_status=task_status)
        except Exception as exc:
            # The root giving up is fatal: the body is cancelled and the runtime stops the
            # rest gracefully before re-raising it.
            self._fatal = exc
            self._stop_requested = True
            self._body_scope.cancel()
        finally:
            self._root_done.set()

    def _deadline(self) -> float:
        if self._stop_deadline is None:
            self._stop_deadline = anyio.current_time() + self.grace_seconds
        return self._stop_deadline

    async def _shutdown(self) -> None:
        self._stop_requested = True
        deadline = self._deadline()
        await self._delay(deadline)
        if deadline < self._root_scope.deadline:
            self._root_scope.deadline = deadline
        self.supervisor.stop()
        await self._root_done.wait()
        if self._root_scope.cancelled_caught:
            self._forced = True  # the grace ran out while children were still stopping
        await self._close_resources()

    async def _delay(self, deadline: float) -> None:
        """``shutdown_delay_seconds`` during which everything keeps serving while
        :attr:`stopping` (readiness) says it is going away: load balancers take this
        process out of rotation before its listeners close. cancel() ends it."""
        delay = self.shutdown_delay_seconds
        if delay <= 0 or self._fatal is not None or self._stop_deadline == -math.inf:
            return
        log.info(
            "runtime %s: stopping in %g s (shutdown_delay_seconds); not ready meanwhile",
            self.name,
            delay,
        )
        with anyio.move_on_at(min(deadline, anyio.current_time() + delay)) as scope:
            self._delay_scope = scope
            await anyio.sleep_forever()
        self._delay_scope = None

    async def _close_resources(self) -> None:
        # Shielded so an outer cancellation cannot skip cleanup; bounded by the stop deadline
        # so a stuck resource cannot hang the process; cancel() lifts it.
        with anyio.move_on_at(self._deadline(), shield=True) as scope:
            self._cleanup_scope = scope
            if self._stop_deadline == -math.inf:
                scope.cancel()
            try:
                while self._closers:
                    closer = self._closers.pop()
                    try:
                        await closer()
                    except Exception:
                        log.exception("runtime %s: closing a resource failed", self.name)
            finally:
                self._cleanup_scope = None
        if scope.cancelled_caught:
            self._forced = True  # the grace ran out while resources were still closing
        # Whatever the grace left open is cancelled now, so no holder outlives the runtime.
        for guard in self._guards:
            guard.cancel()

    async def _wait_children_gone(self) -> None:
        """After an outer cancellation: let the root supervisor unwind before resources close,
        bounded by the grace."""
        with anyio.move_on_at(self._deadline(), shield=True) as scope:
            self._cleanup_scope = scope
            if self._stop_deadline == -math.inf:
                scope.cancel()
            try:
                await self._root_done.wait()
            finally:
                self._cleanup_scope = None

    def __repr__(self) -> str:
        return f"<Runtime {self.name!r}{' stopping' if self._stop_requested else ''}>"


async def _hold(
    cm: AbstractAsyncContextManager[T],
    guard: anyio.CancelScope,
    release: anyio.Event,
    finished: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[T],
) -> None:
    # Invariant: *guard* is entered before the resource and exited after it, so the resource's
    # own scopes (a pool's task group) nest inside it; shielding it after __aenter__ keeps an
    # outer cancellation away from the resource until close() releases it.
    started = False
    try:
        with guard:
            async with cm as value:
                guard.shield = True
                task_status.started(value)
                started = True
                await release.wait()
    except Exception:
        if not started:
            raise  # __aenter__ failed: enter_async_context raises it
        log.exception("closing a runtime resource failed")
    finally:
        finished.set()


def _never() -> bool:
    return False


@contextlib.asynccontextmanager
async def mega_runtime(
    *,
    name: str = "megatrio",
    grace_seconds: float = 30.0,
    handle_signals: bool = False,
    max_restarts: int = 3,
    period_seconds: float = 5.0,
    shutdown_delay_seconds: float = 0.0,
    blocked_loop_warn_seconds: float | None = None,
) -> AsyncIterator[Runtime]:
    """Run a supervised tree for the duration of an ``async with`` block.

    ``async with mega_runtime() as rt:`` opens a one-for-one root supervisor with the given
    intensity; add children with ``await rt.start_child(spec)``. Works under ``trio.run`` and
    ``asyncio.run``.

    Leaving the block stops everything gracefully: children stop one at a time in reverse
    start order, each within its own ``shutdown_seconds``, then resources registered with
    :meth:`Runtime.enter_async_context` / :meth:`Runtime.push_async_callback` close in LIFO
    order; the whole stop is bounded by *grace_seconds*. :meth:`Runtime.stop` (or, with
    *handle_signals*, a first SIGTERM/SIGINT) cancels the body, which then exits normally, and
    stops the same way; :meth:`Runtime.cancel` (or a second signal) stops at once.

    A fatal error — the root supervisor giving up, or an exception from the body — is logged
    once at CRITICAL with its traceback, everything else is stopped gracefully, and the error
    itself is re-raised (``RestartIntensityExceeded`` carries the last child error as
    ``__cause__``). A temporary child's crash is logged, not fatal.

    Cancelling the block from outside cancels every child at once; resources are still closed,
    shielded and bounded by *grace_seconds*. :attr:`Runtime.forced` says afterwards whether
    the stop had to cut work off.

    With *shutdown_delay_seconds*, a stop first waits that long (within the grace) while
    everything keeps serving and :attr:`Runtime.stopping` is true — the time a load balancer
    needs to stop sending traffic after readiness fails. With *blocked_loop_warn_seconds*, a
    watchdog thread logs, once per blocked stretch, which child holds the event loop without
    awaiting for that long, with its stack; and with *handle_signals*, a further signal while
    the loop is blocked ends the process from the signal handler (exit code 128 + signal).

    Raises:
        ValueError: an argument is invalid.
        RuntimeError: *handle_signals* is true off the main thread.
    """
    grace = check_seconds("grace_seconds", grace_seconds)
    delay = check_seconds("shutdown_delay_seconds", shutdown_delay_seconds, allow_inf=False)
    watchdog = None
    if blocked_loop_warn_seconds is not None:
        warn = check_seconds(
            "blocked_loop_warn_seconds", blocked_loop_warn_seconds, allow_zero=False
        )
        watchdog = LoopWatchdog(warn)
    if handle_signals:
        check_main_thread()
    root = Supervisor(name=name, max_restarts=max_restarts, period_seconds=period_seconds)
    rt = Runtime._create(name, grace, root, delay)
    body_error: Exception | None = None
    try:
        with unwrapped_groups():
            async with anyio.create_task_group() as tg:
                rt._tg = tg
                try:
                    if watchdog is not None:
                        await tg.start(watchdog.serve)
                    if handle_signals:
                        blocked = watchdog.blocked if watchdog is not None else _never
                        await tg.start(
                            functools.partial(serve_stop_signals, loop_blocked=blocked),
                            rt.stop,
                            rt.cancel,
                        )
                    await tg.start(rt._run_root)
                    try:
                        with rt._body_scope:
                            yield rt
                    except Exception as exc:
                        body_error = exc
                        rt._stop_requested = True
                    await rt._shutdown()
                except BaseException:
                    # Cancelled from outside (or worse): the children are being cancelled with
                    # the task group; once they are gone, resources still close, shielded and
                    # bounded by the grace.
                    rt._stop_requested = True
                    await rt._wait_children_gone()
                    await rt._close_resources()
                    raise
                tg.cancel_scope.cancel()
    finally:
        await rt._close_resources()
    fatal = rt._fatal if rt._fatal is not None else body_error
    if fatal is not None:
        log.critical("runtime %s: fatal error: %s", name, describe(fatal), exc_info=fatal)
        raise fatal
    log.info("runtime %s stopped", name)
