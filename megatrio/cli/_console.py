"""``megatrio console``: a REPL next to a served App, with top-level ``await``.

The app is served by trio in a background thread; the REPL runs on the main thread and runs
each statement inside trio (so ``await rt.start_child(...)`` and ``rt.snapshot()`` work). An
exception at the prompt is printed and the runtime keeps running: the REPL is not a
supervised child, so nothing it does is fatal.

Three things keep the REPL readable:

- a traceback starts at the user's statement: the frames that carried it into trio and back
  (trio's thread bridge, ``outcome``, ``concurrent.futures``) and megatrio's are left out;
- log records go to stderr through a :class:`PromptAwareStream`: while the REPL waits for
  input on a terminal, a record clears the prompt line, is written on its own line, and the
  prompt is drawn again with what was typed so far (from readline's line buffer);
- ``tree()`` prints the supervision tree redacted as the admin listener redacts it.
"""

from __future__ import annotations

import ast
import code
import concurrent.futures
import contextlib
import inspect
import io
import logging
import os
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import outcome
import trio

import megatrio

from .._config import Config
from .._exceptions import ListenError
from ..app._app import App
from ..app._serve import Serving, serve_app
from ..nursery._errors import unwrap_group
from ..services.logs._redact import Redactor
from ..services.logs._tree import format_tree

log = logging.getLogger("megatrio.console")

BANNER = """megatrio console for app {name!r} — serving on {http}
In scope: `rt` (the runtime), `app`, `megatrio`, `trio`, and `tree()`, which prints the
supervision tree (redacted). Top-level `await` works. Ctrl-D stops the app."""

_CLEAR_LINE = "\r\x1b[K"
"""Carriage return, then erase to the end of the line (ANSI): the prompt line is blanked."""


def _package_dir(module: types.ModuleType) -> str:
    assert module.__file__ is not None
    return str(Path(module.__file__).resolve().parent) + os.sep


# Frames of these files only carry a statement into trio and its outcome back.
_PLUMBING_DIRS = tuple(_package_dir(m) for m in (megatrio, outcome, concurrent.futures))
_PLUMBING_FILES = frozenset({str(Path(_package_dir(trio), "_threads.py"))})


def _is_plumbing(frame: traceback.FrameSummary) -> bool:
    filename = frame.filename
    return filename.startswith(_PLUMBING_DIRS) or filename in _PLUMBING_FILES


def format_user_traceback(error: BaseException, statement_filename: str) -> str:
    """The traceback of *error*, raised by a statement compiled as *statement_filename*,
    starting at the statement's own frame.

    Everything before that frame is the REPL's machinery; after it (and in chained and
    grouped exceptions), frames of megatrio, ``outcome``, ``concurrent.futures`` and trio's
    thread bridge are left out too. The user's own frames — at the prompt, or in modules the
    statement called — and other libraries' are kept.
    """
    report = traceback.TracebackException.from_exception(error)
    stack = list(report.stack)
    first = next(
        (i for i, frame in enumerate(stack) if frame.filename == statement_filename), len(stack)
    )
    report.stack = traceback.StackSummary.from_list(stack[first:])
    _drop_plumbing(report, set())
    return "".join(report.format())


def _drop_plumbing(report: traceback.TracebackException, seen: set[int]) -> None:
    if id(report) in seen:
        return
    seen.add(id(report))
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if not _is_plumbing(frame)]
    )
    for chained in (report.__cause__, report.__context__, *(report.exceptions or ())):
        if chained is not None:
            _drop_plumbing(chained, seen)


class PromptAwareStream(io.TextIOBase):
    """The console's log stream: writes to *stream* (stderr) without breaking the prompt.

    Outside :meth:`prompting` it is *stream*. While the REPL waits for input on a terminal,
    each write first blanks the prompt line (so a record starts at the left margin), and a
    write that ends a line draws the prompt and the input typed so far again after it.
    Thread-safe: records come from the runtime's thread while the main thread reads input.

    Limits: only the prompt's last terminal row is blanked (a wrapped input line leaves its
    first rows), and the cursor is put at the end of the redrawn input.
    """

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self._stream = stream
        self._lock = threading.Lock()
        self._prompt: str | None = None
        self._typed: Callable[[], str] = str

    def write(self, text: str) -> int:
        with self._lock:
            if self._prompt is None:
                return self._stream.write(text)
            self._stream.write(_CLEAR_LINE + text)
            if text.endswith("\n"):
                self._stream.write(self._prompt + self._typed())
            self._stream.flush()
            return len(text)

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    def show_prompt(self, prompt: str, typed: Callable[[], str]) -> None:
        """From now on, redraw *prompt* and ``typed()`` after each record."""
        with self._lock:
            self._prompt, self._typed = prompt, typed

    def hide_prompt(self) -> None:
        """The prompt is no longer on screen: write records as they come."""
        with self._lock:
            self._prompt, self._typed = None, str

    @contextlib.contextmanager
    def prompting(self, prompt: str, typed: Callable[[], str]) -> Iterator[None]:
        """While the block runs, *prompt* is on screen followed by ``typed()``."""
        self.show_prompt(prompt, typed)
        try:
            yield
        finally:
            self.hide_prompt()


class _TrioConsole(code.InteractiveConsole):
    def __init__(
        self,
        namespace: dict[str, Any],
        token: trio.lowlevel.TrioToken,
        log_stream: PromptAwareStream | None,
    ) -> None:
        super().__init__(namespace)
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self._token = token
        self._log_stream = log_stream if sys.stdin.isatty() else None
        self._readline: Any = None
        if self._log_stream is not None:
            try:
                import readline
            except ImportError:  # records still start on their own line; no typed text
                pass
            else:
                self._readline = readline

    def raw_input(self, prompt: str = "") -> str:
        stream = self._log_stream
        if stream is None:
            return input(prompt)
        readline = self._readline
        if readline is None:
            with stream.prompting(prompt, str):
                return input(prompt)
        # readline calls this once it has drawn the prompt, so a record never races it.
        readline.set_pre_input_hook(lambda: stream.show_prompt(prompt, readline.get_line_buffer))
        try:
            return input(prompt)
        finally:
            readline.set_pre_input_hook(None)
            stream.hide_prompt()

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

    def showtraceback(self) -> None:
        sys.last_type, sys.last_value, sys.last_traceback = sys.exc_info()
        error = sys.last_value
        if error is not None:
            self.write(format_user_traceback(error, self.filename))


def run_console(app: App, config: Config, *, log_stream: PromptAwareStream | None = None) -> int:
    """Serve *app* in a trio thread and run a REPL on this thread; returns the exit code.

    *log_stream* is the stream the log handler writes to, told when the prompt is on screen.

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
    redactor = Redactor(config.redact_keys)

    def tree() -> None:
        """Print the live supervision tree, redacted as the admin listener redacts it."""
        print(format_tree(redactor.redact(app.rt.snapshot())))

    namespace = {
        "rt": app.rt,
        "app": app,
        "megatrio": megatrio,
        "trio": trio,
        "tree": tree,
        "__name__": "__console__",
    }
    console = _TrioConsole(namespace, state["token"], log_stream)
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
