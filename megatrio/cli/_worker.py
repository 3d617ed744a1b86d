"""``megatrio worker-process``: one worker of a ``--workers`` primary, serving the app on the
sockets it inherited, reporting on its status pipe (:mod:`._protocol`), and stopping when the
primary is gone (its parent pipe reaches EOF)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import attrs
import trio

from .._config import config_from_json
from .._exceptions import AppLoadError, AppNotFound
from ..app._app import App
from ..app._serve import serve_app
from ..nursery._child import current_child
from ..nursery._errors import unwrap_group
from ..services.logs._logging import configure_logging
from ..services.logs._redact import Redactor
from ..supervisor import ChildSpec
from ._exit import EXIT_FATAL, EXIT_FORCED, EXIT_OK, EXIT_USAGE
from ._protocol import CONFIG_ENV, report_load_failure, tell
from ._startup import freeze_startup_objects
from ._target import format_load_error, load_app, no_jobs_reason, parse_target
from ._tree_report import TreeReporter, report_tree

log = logging.getLogger("megatrio.cluster")


async def _watch_primary(parent_fd: int, app: App, *, task_status: trio.TaskStatus[None]) -> None:
    """EOF on the pipe the primary holds means the primary is gone: stop this worker."""
    ctx = current_child()
    assert ctx is not None
    task_status.started()
    async with trio.lowlevel.FdStream(parent_fd) as pipe, trio.open_nursery() as nursery:

        async def stop_on_eof() -> None:
            while await pipe.receive_some():
                pass
            log.warning("the primary is gone: stopping this worker")
            app.rt.stop()

        nursery.start_soon(stop_on_eof)
        await ctx.wait_stopping()
        nursery.cancel_scope.cancel()


def worker_process_main(
    target: str,
    app_dir: Path,
    factory: bool,
    index: int,
    status_fd: int,
    parent_fd: int,
    listen_fds: list[int],
    *,
    jobs_only: bool = False,
) -> int:
    """Entry of ``megatrio worker-process``: serve the app on inherited sockets, or with
    *jobs_only* run its job consumers only."""

    source = f"environment variable {CONFIG_ENV}"
    config = config_from_json(os.environ.get(CONFIG_ENV, "{}"), source)
    config = attrs.evolve(config, admin_bind="", workers=1)
    if not jobs_only:
        config = attrs.evolve(config, bind=tuple(f"fd://{fd}" for fd in listen_fds))
    configure_logging(
        level=config.log_level.number,
        fmt=config.log_format,
        redact_keys=config.redact_keys,
        static_fields={"worker": index, "pid": os.getpid()},
    )
    status = os.fdopen(status_fd, "wb", buffering=0)
    try:
        # The primary never imports the app; only workers do.
        app = load_app(parse_target(target, app_dir=app_dir, factory=factory))
    except AppNotFound as exc:
        return report_load_failure(status, EXIT_USAGE, f"megatrio: error: {exc}\n")
    except AppLoadError as exc:
        report = format_load_error(exc, Redactor(config.redact_keys))
        return report_load_failure(status, EXIT_FATAL, report)
    reason = no_jobs_reason(app) if jobs_only else None
    if reason is not None:
        return report_load_failure(status, EXIT_USAGE, f"megatrio: error: {reason}\n")
    tell(status, b"loaded\n")

    freeze_startup_objects()

    forced: list[bool] = []

    async def serve(*, task_status: trio.TaskStatus[object]) -> None:
        forced.append(
            await serve_app(
                app,
                config,
                handle_signals=True,
                extra_children=[
                    ChildSpec("primary-watch", _watch_primary, (parent_fd, app)),
                    ChildSpec("tree-report", report_tree, (reporter, ready_told)),
                ],
                jobs_only=jobs_only,
                task_status=task_status,
            )
        )

    ready_told = trio.Event()
    reporter = TreeReporter(status, app)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            tell(status, b"ready\n")
            ready_told.set()

    try:
        trio.run(main)
    except BaseException as exc:
        error = unwrap_group(exc)
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        return EXIT_FATAL  # logged once by mega_runtime
    return EXIT_FORCED if forced and forced[0] else EXIT_OK
