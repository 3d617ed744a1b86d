"""``megatrio console``: a REPL next to a served App, with top-level ``await``.

The app is served by trio in a background thread; the REPL runs on the main thread and runs
each statement inside trio (so ``await rt.start_child(...)`` and ``rt.snapshot()`` work). An
exception at the prompt is printed and the runtime keeps running: the REPL is not a
supervised child, so nothing it does is fatal.
"""

from __future__ import annotations

import ast
import code
import inspect
import logging
import sys
import threading
import types
from typing import Any

import trio

from ._config._config import Config
from ._exceptions import ListenError
from .app._app import App
from .app._serve import Serving, serve_app
from .nursery._errors import unwrap_group

log = logging.getLogger("megatrio.console")

BANNER = """megatrio console for app {name!r} — serving on {http}
`rt` (the runtime) and `app` are in scope; top-level `await` works. Ctrl-D stops the app."""


class _TrioConsole(code.InteractiveConsole):
    def __init__(self, namespace: dict[str, Any], token: trio.lowlevel.TrioToken) -> None:
        super().__init__(namespace)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._token = token

    def runcode(self, code_object: types.CodeType) -> None:
        function = types.FunctionType(code_object, self.locals)

        async def in_trio() -> None:
            result = function()
            if inspect.iscoroutine(result):
                await result

        try:
            trio.from_thread.run(in_trio, trio_token=self._token)
        except SystemExit:
            raise
        except BaseException:
            self.showtraceback()


def run_console(app: App, config: Config) -> int:
    """Serve *app* in a trio thread and run a REPL on this thread; returns the exit code.

    Raises:
        ListenError: an address could not be bound (nothing was started).
    """
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        state["token"] = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            serving: Serving = await nursery.start(
                lambda task_status: serve_app(
                    app, config, handle_signals=False, task_status=task_status
                )
            )
            state["serving"] = serving
            ready.set()

    def thread_main() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:
            state["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="megatrio-runtime", daemon=True)
    thread.start()
    ready.wait()
    if "serving" not in state:
        thread.join()
        error = unwrap_group(state.get("error") or Exception())
        if isinstance(error, ListenError):
            raise error
        return 1
    namespace = {"rt": app.rt, "app": app, "trio": trio, "__name__": "__console__"}
    console = _TrioConsole(namespace, state["token"])
    banner = BANNER.format(name=app.name, http=", ".join(state["serving"].http))
    try:
        console.interact(banner=banner, exitmsg="stopping")
    except SystemExit:
        pass
    finally:
        if thread.is_alive():
            trio.from_thread.run_sync(app.rt.stop, trio_token=state["token"])
        thread.join()
    print("stopped", file=sys.stderr)
    return 1 if "error" in state else 0
