"""``megatrio run app:App --workers N``: a supervising primary and its worker processes.

The primary binds the listening sockets once and never imports the app. Each worker is a
``python -m megatrio worker-process`` child process that inherits the sockets and serves the
app on them; in the primary it is a supervised child (``workers/worker-N``) under a supervisor
with the rapid-crash rule (``worker_max_restarts`` crashes with less than
``worker_min_uptime_seconds`` of uptime within ``worker_period_seconds``). What a Node cluster
primary keeps by hand — a list of crash timestamps, a grace timer to remember and cancel — is
that supervisor's :class:`RestartWindow` and a cancel-scope deadline here.

Loading: a worker tells the primary on its status pipe when it has loaded the app, and when it
is ready. A worker that cannot load it — the target is wrong, or the app's own code raises —
sends the report instead and exits; the primary prints it once and stops, restarting nothing,
since every worker would fail the same way. Nothing is announced, and the admin listener is not
served, before some worker has loaded the app.

Stopping: the first SIGTERM/SIGINT closes the primary's listening sockets, sends SIGTERM to every
worker at once, and waits for them until ``now + grace_seconds``; whoever is left is killed. The
primary exits 0 when every worker exited within the grace, 1 otherwise. A second signal kills
at once. A worker watches a pipe whose only writer is the primary: when the primary dies, even
by SIGKILL, the pipe reaches EOF and the worker stops.

Reloading (``--reload``): a reloader child (see ``_reload.py``) restarts every worker, one after
the other, when the app's sources change: ``stop_child`` then ``start_child`` of the same spec,
which is never a crash, so no reload counts against the rapid-crash window. Only workers are
restarted; the primary keeps the sockets, and connections wait in the backlog. A worker that
fails before it is ready — the app does not load, ``setup()`` or ``on_start`` raises — is
reported once per reload and left stopped until the next change, instead of being restarted
or stopping the primary.

The worker processes' side of the status pipe is in :mod:`._worker` and :mod:`._protocol`.
This module, a little over the house's ~400 lines, keeps a worker child's spawn, wait and stop
beside the cluster-wide state they consult (the app loaded, a reload under way, the stop).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from .._config import Config, config_to_json
from .._exceptions import (
    MegatrioError,
    RestartIntensityExceeded,
    StartupFailed,
    SupervisorNotRunning,
)
from .._runtime import Runtime, mega_runtime
from ..app._serve import admin_spec
from ..nursery._child import ChildContext, current_child
from ..services.http._access import HttpMetrics
from ..services.http._metrics import ClusterSamples
from ..services.http._sockets import bind_listeners, closing_all
from ..services.logs._redact import Redactor
from ..supervisor import ChildSpec, Strategy, Supervisor
from ._carry import CarriedRestarts
from ._exit import EXIT_FATAL, EXIT_FORCED, EXIT_OK, EXIT_USAGE
from ._protocol import CONFIG_ENV, WorkerStatus

log = logging.getLogger("megatrio.cluster")

KILL_SECONDS = 5.0
"""How long to wait for a killed worker to be reaped."""


class WorkerExited(MegatrioError):
    """A worker process exited without being asked to: the primary's crash for that worker.

    :attr:`returncode` is negative for a signal (``-9`` for SIGKILL); :attr:`booted` is False
    when it died before it reported ready (a boot failure).
    """

    def __init__(self, index: int, pid: int, returncode: int, *, booted: bool) -> None:
        when = "" if booted else " during boot, before it was ready"
        super().__init__(f"worker {index} (pid {pid}) {describe_exit(returncode)}{when}")
        self.index = index
        self.pid = pid
        self.returncode = returncode
        self.booted = booted


def describe_exit(returncode: int) -> str:
    """``"exited with code 1"`` or ``"was killed by SIGKILL"``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def worker_supervisor(
    children: Sequence[ChildSpec], config: Config, *, random_source: random.Random | None = None
) -> Supervisor:
    """The supervisor of the workers: one-for-one with the rapid-crash rule from *config*.

    At most ``worker_max_restarts`` crashes of workers that were up for less than
    ``worker_min_uptime_seconds`` within ``worker_period_seconds``; crashes after a longer
    uptime never count, and nothing (no other worker's exit) resets the window. Restarts back
    off with jitter (first immediate).
    """
    return Supervisor(
        children,
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=config.worker_max_restarts,
        period_seconds=config.worker_period_seconds,
        min_uptime_seconds=config.worker_min_uptime_seconds,
        name="workers",
        random_source=random_source,
    )


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Cluster:
    """The primary's state: its sockets, the worker processes, and how the stop went."""

    def __init__(
        self,
        target: str,
        app_dir: Path,
        config: Config,
        sockets: list[socket.socket],
        *,
        factory: bool = False,
        reloading: bool = False,
        jobs_only: bool = False,
    ) -> None:
        self.target = target
        self.jobs_only = jobs_only
        self.app_dir = app_dir
        self.factory = factory
        self.config = config
        self.sockets = sockets
        self.killed = 0
        """Workers that had to be killed (grace ran out, or a second signal)."""
        self.usage_error: str | None = None
        self.load_failure: tuple[int, str] | None = None
        """``(exit code, report)`` from the first worker that could not load the app."""
        self.app_loaded = trio.Event()
        """Set once any worker has imported and built the app."""
        self.deadline: float | None = None
        """Set when the stop begins: every worker must have exited by then."""
        self.rt: Runtime | None = None
        self._procs: dict[int, trio.Process] = {}
        self._terminated: set[int] = set()
        self.reloading = reloading
        """Whether the workers are restarted on source changes (``--reload``)."""
        self._generation = 0
        """Reloads so far: a failure is reported once per generation of workers."""
        self._reported_generation = -1
        self._specs = {
            spec.name: spec
            for spec in (
                ChildSpec(
                    f"worker-{index}",
                    self.run_worker,
                    (index,),
                    # The worker's own logic enforces the grace; this only bounds the kill.
                    shutdown_seconds=config.grace_seconds + 2 * KILL_SECONDS,
                )
                for index in range(1, config.workers + 1)
            )
        }
        self.workers = worker_supervisor(list(self._specs.values()), config)
        self._http_live: dict[int, dict[str, Any]] = {}
        """Each running worker's latest request counts."""
        self._http_retired = HttpMetrics()
        """The last counts of every worker that has exited: totals never go back."""
        self.samples = ClusterSamples()
        """The workers' metric samples (counters of exited workers kept)."""
        self._trees_live: dict[int, dict[str, Any]] = {}
        """Each running worker's latest tree."""
        self._carried = {index: CarriedRestarts() for index in range(1, config.workers + 1)}
        """Per worker slot, the restarts its exited processes counted."""

    def http_metrics(self) -> HttpMetrics:
        """The request counts of the whole cluster: exited workers' plus running ones'."""
        total = HttpMetrics()
        total.add(self._http_retired.to_dict())
        for counts in self._http_live.values():
            total.add(counts)
        total.in_flight = sum(int(c.get("in_flight", 0)) for c in self._http_live.values())
        return total

    @property
    def stopping(self) -> bool:
        return self.deadline is not None

    # -- children of the primary's root supervisor ------------------------------------------

    async def run_workers(self, *, task_status: trio.TaskStatus[None]) -> None:
        """The workers' supervisor, logging one line with the numbers when it gives up."""
        ctx = current_child()
        assert ctx is not None
        try:
            await self.workers.run(task_status=task_status)
            # The workers stop first when the primary stops; this child ends with its own stop
            # request, never on its own (which its supervisor would take for a crash).
            await ctx.wait_stopping()
        except RestartIntensityExceeded as exc:
            log.critical(
                "giving up: more than %d rapid worker crashes (uptime under %g s) within %g s; "
                "last: %s",
                self.config.worker_max_restarts,
                self.config.worker_min_uptime_seconds,
                self.config.worker_period_seconds,
                exc.__cause__,
            )
            raise

    async def stop_workers_on_stop(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Started last, so stopped first: begins the stop of every worker at once."""
        ctx = current_child()
        assert ctx is not None
        task_status.started()
        await ctx.wait_stopping()
        self.begin_stop()

    def begin_stop(self) -> None:
        """Stop listening, no more restarts, SIGTERM to every worker. Idempotent."""
        if self.deadline is not None:
            return
        self.deadline = trio.current_time() + self.config.grace_seconds
        for sock in self.sockets:
            sock.close()
        self.workers.stop()
        for index, proc in self._procs.items():
            self._terminate(index, proc)
        log.info("stopping %d worker(s) within %g s", len(self._procs), self.config.grace_seconds)

    async def reload_workers(self, paths: Sequence[str]) -> None:
        """Restart every worker, one after the other, so each loads the sources anew; *paths*
        (what changed) are named in the one line logged.

        Each restart is ``stop_child`` (a graceful stop within ``grace_seconds``, never a
        crash) then ``start_child`` of the same spec, which returns once the new process is
        spawned; it is up once it reports ready. Returns early when the primary is stopping.
        """
        from ._reload import describe_changes

        if self.stopping:
            return
        log.info(
            "%s changed: reloading %d worker(s)",
            describe_changes(paths, cwd=Path.cwd()),
            len(self._specs),
        )
        self._generation += 1
        for name, spec in self._specs.items():
            try:
                with contextlib.suppress(LookupError):  # not there: only start it
                    await self.workers.stop_child(name)
                await self.workers.start_child(spec)
            except SupervisorNotRunning:
                return  # the primary is stopping: no worker is to start again
            except StartupFailed as exc:
                log.error("cannot restart %s: %s", name, exc.__cause__ or exc)

    def _report_boot_failure(
        self, index: int, proc: trio.Process, failure: tuple[int, str] | None
    ) -> None:
        """With ``--reload``: say, once per generation of workers, why they cannot serve."""
        if self._reported_generation == self._generation:
            return  # the other workers fail the same way
        self._reported_generation = self._generation
        if failure is not None:
            sys.stderr.write(failure[1])
            sys.stderr.flush()
            log.error("worker %d cannot load the app: waiting for a change to reload", index)
        else:
            assert proc.returncode is not None
            error = WorkerExited(index, proc.pid, proc.returncode, booted=False)
            log.error("%s: waiting for a change to reload", error)

    def _terminate(self, index: int, proc: trio.Process) -> None:
        # Exactly one SIGTERM per worker: a second one means "stop at once" to the worker.
        if proc.returncode is None and proc.pid not in self._terminated:
            self._terminated.add(proc.pid)
            proc.send_signal(signal.SIGTERM)

    async def run_worker(self, index: int, *, task_status: trio.TaskStatus[int]) -> None:
        """One worker process, as a supervised child: started once spawned, up (its uptime
        counting) once it reports ready, crashed when the process exits unasked."""
        ctx = current_child()
        assert ctx is not None
        status_r, status_w = os.pipe()
        parent_r, parent_w = os.pipe()
        proc: trio.Process | None = None
        try:
            listen_fds = [sock.fileno() for sock in self.sockets]
            command = [
                sys.executable,
                "-m",
                "megatrio",
                "worker-process",
                self.target,
                f"--app-dir={self.app_dir}",
                *(["--factory"] if self.factory else []),
                f"--index={index}",
                f"--status-fd={status_w}",
                f"--parent-fd={parent_r}",
                *(f"--listen-fd={fd}" for fd in listen_fds),
                *(["--jobs-only"] if self.jobs_only else []),
            ]
            proc = await trio.lowlevel.open_process(
                command,
                pass_fds=(status_w, parent_r, *listen_fds),
                env={**os.environ, CONFIG_ENV: config_to_json(self.config)},
                # Its own session: a terminal's Ctrl-C reaches only the primary, which then
                # sends exactly one SIGTERM (a second signal would mean "stop at once").
                start_new_session=True,
            )
            os.close(status_w)
            os.close(parent_r)
            status_w = parent_r = -1
            self._procs[index] = proc
            ctx.annotate(pid=proc.pid, ready=False)
            # Started once spawned, so the supervisor is not blocked by a slow boot; up (for
            # the rapid-crash rule) only once ready, so a boot failure never counts as uptime.
            ctx.started(proc.pid, up=False)
            if self.stopping:
                self._terminate(index, proc)
            # _wait owns the read end from here: its stream closes it, even when cancelled.
            status_fd, status_r = status_r, -1
            status = await self._wait(index, proc, status_fd, ctx)
            if proc.returncode is not None and not ctx.stopping:
                await self._exited_unasked(index, proc, status, ctx)
                return
            await self._stop(index, proc)
        finally:
            # What this worker counted outlives it in the cluster's totals.
            retired = self._http_live.pop(index, None)
            if retired is not None:
                self._http_retired.add(retired)
            self.samples.retire(index)
            self._carried[index].retire(self._trees_live.pop(index, None))
            # The process first: nothing below may keep a worker alive after its child ends.
            if proc is not None:
                if self._procs.get(index) is proc:
                    del self._procs[index]
                if proc.returncode is None:
                    proc.kill()
                    self.killed += 1
                    with trio.move_on_after(KILL_SECONDS, shield=True):
                        await proc.wait()
            for fd in (status_r, status_w, parent_r, parent_w):
                if fd >= 0:
                    os.close(fd)

    async def _wait(
        self, index: int, proc: trio.Process, status_fd: int, ctx: ChildContext
    ) -> WorkerStatus:
        """Wait for the process to exit or for a stop request; returns what it reported."""
        status = WorkerStatus()
        read_done = trio.Event()
        pipe = trio.lowlevel.FdStream(status_fd)
        async with pipe, trio.open_nursery() as nursery:

            async def watch_status() -> None:
                try:
                    while not status.ready:
                        chunk = await pipe.receive_some()
                        if not chunk:
                            return
                        status.feed(chunk)
                        if status.loaded:
                            self.app_loaded.set()
                    ctx.mark_up()
                    ctx.annotate(ready=True)
                    log.info("worker %d (pid %d) ready", index, proc.pid)
                    # Its tree from now on: shown under this child, as a nested
                    # supervisor's is (the cluster in one tree).
                    carried = self._carried[index]
                    ctx.show_subtree(
                        lambda: carried.apply(status.tree or {"name": "worker", "children": []})
                    )
                    while chunk := await pipe.receive_some():
                        status.feed(chunk)
                        if status.tree is not None:
                            self._trees_live[index] = status.tree
                        if status.http is not None:
                            self._http_live[index] = status.http
                        if status.samples is not None:
                            self.samples.update(index, status.samples)
                finally:
                    read_done.set()

            async def watch_stop(scope: trio.CancelScope) -> None:
                await ctx.wait_stopping()
                scope.cancel()

            with trio.CancelScope() as waiting:
                nursery.start_soon(watch_status)
                nursery.start_soon(watch_stop, waiting)
                await proc.wait()
            if proc.returncode is not None:
                # The pipe's only writer is gone: what it wrote is read now, then EOF.
                with trio.move_on_after(1):
                    await read_done.wait()
            nursery.cancel_scope.cancel()
        return status

    async def _exited_unasked(
        self, index: int, proc: trio.Process, status: WorkerStatus, ctx: ChildContext
    ) -> None:
        assert proc.returncode is not None
        if self.stopping:
            # It answered the SIGTERM of a stop already under way (or another worker's load
            # failure stopped everything): not a crash. Stay until this child's own stop
            # request so the supervisor does not restart it.
            await ctx.wait_stopping()
            return
        failure = status.failure()
        if self.reloading and (failure is not None or not status.ready):
            # The sources as they are now cannot serve: starting them again would fail the
            # same way. The next change stops this child and starts a fresh one.
            self._report_boot_failure(index, proc, failure)
            await ctx.wait_stopping()
            return
        if failure is not None:
            # Every worker would fail the same way: no restart. The first report is printed,
            # once; the others arrive while stopping and are dropped above.
            self.load_failure = failure
            sys.stderr.write(failure[1])
            sys.stderr.flush()
            self.begin_stop()
            if self.rt is not None:
                self.rt.stop()
            await ctx.wait_stopping()
            return
        if proc.returncode == EXIT_USAGE:
            self.usage_error = f"worker {index} cannot load {self.target!r} (exit code 2)"
            log.critical("%s: stopping", self.usage_error)
            self.begin_stop()
            if self.rt is not None:
                self.rt.stop()
            await ctx.wait_stopping()
            return
        raise WorkerExited(index, proc.pid, proc.returncode, booted=status.ready)

    async def _stop(self, index: int, proc: trio.Process) -> None:
        self._terminate(index, proc)
        deadline = self.deadline
        if deadline is None:  # stop_child of this worker alone
            deadline = trio.current_time() + self.config.grace_seconds
        with trio.move_on_at(deadline):
            await proc.wait()
        if proc.returncode is None:
            log.warning(
                "worker %d (pid %d) still running after the grace: killing", index, proc.pid
            )
            proc.kill()
            self.killed += 1
            with trio.move_on_after(KILL_SECONDS):
                await proc.wait()
        else:
            log.info("worker %d (pid %d) %s", index, proc.pid, describe_exit(proc.returncode))


async def serve_cluster(
    target: str,
    app_dir: Path,
    config: Config,
    *,
    factory: bool = False,
    reload_dirs: Sequence[Path] | None = None,
    jobs_only: bool = False,
) -> int:
    """Run the primary for the app *target* (resolved in *app_dir* by each worker, called
    when *factory*) until stopped; returns the process exit code.

    With *jobs_only* (``megatrio worker --workers N``) no public listener is bound and each
    worker runs only the app's job consumers.

    With *reload_dirs*, a reloader child watches them and restarts the workers when a ``.py``
    file there changes; a worker that cannot load the app then waits for the next change
    instead of stopping the primary.

    Every listener — the public ones the workers inherit and the primary's admin listener —
    is bound before anything starts, and closed on every path.

    Returns 0: every worker exited within the grace; 1: a worker had to be killed, a fatal
    error (the workers' supervisor gave up), or the app's own code raised while a worker
    loaded it; 2: a worker could not find the app (a wrong target). A load failure is
    printed once, from the first worker that reports it, and nothing is restarted.

    Raises:
        ListenError: an address could not be bound; nothing was started.
    """
    redactor = Redactor(config.redact_keys)
    admin_binds = [config.admin_bind] if config.admin_bind else []
    public_binds = [] if jobs_only else list(config.bind)
    with closing_all(bind_listeners([*public_binds, *admin_binds])) as bound:
        sockets, admin = list(bound[: len(public_binds)]), bound[len(public_binds) :]
        cluster = Cluster(
            target,
            app_dir,
            config,
            sockets,
            factory=factory,
            reloading=reload_dirs is not None,
            jobs_only=jobs_only,
        )
        try:
            async with mega_runtime(
                name="primary",
                grace_seconds=config.grace_seconds + 3 * KILL_SECONDS,
                handle_signals=True,
                max_restarts=0,
            ) as rt:
                cluster.rt = rt
                if admin:
                    await rt.start_child(
                        admin_spec(
                            rt,
                            redactor,
                            admin,
                            opens_after=cluster.app_loaded,
                            http_metrics=cluster.http_metrics,
                            samples=cluster.samples.samples,
                        )
                    )
                await rt.start_child(
                    ChildSpec("workers", cluster.run_workers, shutdown_seconds=math.inf)
                )
                if reload_dirs is not None:
                    from ._reload import serve_reloader

                    await rt.start_child(
                        ChildSpec(
                            "reloader",
                            serve_reloader,
                            (reload_dirs, cluster.reload_workers),
                            shutdown_seconds=2.0,
                        )
                    )
                await rt.start_child(ChildSpec("stopper", cluster.stop_workers_on_stop))
                # Nothing is announced before the app is known to load; a load failure stops
                # the runtime, which cancels this wait.
                await cluster.app_loaded.wait()
                log.info(
                    "primary (pid %d) serving %s with %d worker(s)",
                    os.getpid(),
                    ", ".join(url_of(s) for s in sockets) if sockets else "job consumers",
                    config.workers,
                )
                await trio.sleep_forever()
        except Exception:
            return EXIT_FATAL  # logged once by mega_runtime
    if cluster.load_failure is not None:
        return cluster.load_failure[0]
    if cluster.usage_error is not None:
        return EXIT_USAGE
    if cluster.killed:
        log.warning("%d worker(s) had to be killed", cluster.killed)
        return EXIT_FORCED
    return EXIT_OK
