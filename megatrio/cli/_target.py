"""The App a command names: ``module:attr`` or ``path/to/file.py:attr``, found and loaded.

Two kinds of failure are kept apart, because they need different answers:

- :class:`~megatrio.AppNotFound` — the target itself is wrong (malformed, no such module or
  file, no such attribute, not an App): a usage error, one line, exit 2;
- :class:`~megatrio._exceptions.AppLoadError` — the app's own code raised while its module was
  imported or the App was built (an import or syntax error in it, its constructor or
  ``setup()``): exit 1, with the traceback of the app's frames (see :func:`format_load_error`).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import attrs

from .._exceptions import AppLoadError, AppNotFound
from ..app._app import App
from ..services.logs._redact import Redactor

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1]) + os.sep
_IMPORTLIB_DIR = str(Path(importlib.__file__).resolve().parent) + os.sep


@attrs.frozen
class AppTarget:
    """A parsed ``MODULE:ATTR`` target. Build it with :func:`parse_target`."""

    text: str
    """The target as given, for messages."""
    module: str
    """The importable module name."""
    directory: Path
    """The absolute directory the module is imported from."""
    attribute: str
    """The dotted attribute path inside the module."""
    path_form: bool
    """Whether the module was given as a file or directory path (``./app``, ``app.py``)."""
    factory: bool = False
    """Whether the attribute is a callable that returns the App (``--factory``)."""


def parse_target(text: str, *, app_dir: Path | None = None, factory: bool = False) -> AppTarget:
    """Parse *text*: ``module.sub:attr`` (imported from *app_dir*, default the current
    directory) or a file path as the module part (``./app:app``, ``app.py:app``,
    ``src/app.py:app``, relative to *app_dir*): that file's directory is imported from and its
    stem is the module name; a path to a directory is a package. With *factory*, the attribute
    is a callable returning the App.

    Raises:
        AppNotFound: *text* is not of that form.
    """
    module_part, sep, attribute = text.partition(":")
    if not sep or not module_part or not attribute:
        raise AppNotFound(f"expected MODULE:ATTRIBUTE (like app:App), got {text!r}")
    if not all(part.isidentifier() for part in attribute.split(".")):
        raise AppNotFound(f"{attribute!r} in {text!r} is not an attribute name")
    base = (app_dir or Path.cwd()).resolve()
    path_form = module_part.endswith(".py") or "/" in module_part or os.sep in module_part
    if not path_form:
        if not all(part.isidentifier() for part in module_part.split(".")):
            raise AppNotFound(
                f"{module_part!r} in {text!r} is neither a module name nor a path to a .py file"
            )
        return AppTarget(text, module_part, base, attribute, path_form=False, factory=factory)
    path = base / module_part
    module = path.stem if path.suffix == ".py" else path.name
    if not module.isidentifier():
        raise AppNotFound(
            f"{module_part!r} in {text!r}: {module!r} is not an importable module name"
        )
    return AppTarget(
        text, module, path.parent.resolve(), attribute, path_form=True, factory=factory
    )


def check_target(target: AppTarget) -> None:
    """Without importing anything: the target's module (or its top-level package) exists.

    Raises:
        AppNotFound: it does not.
    """
    if target.path_form:
        if not importlib.machinery.PathFinder.find_spec(target.module, [str(target.directory)]):
            raise AppNotFound(_missing_file(target))
        shadowing = sys.modules.get(target.module)
        if shadowing is not None:
            _check_origin(target, shadowing)
        return
    _add_to_path(target.directory)
    if importlib.util.find_spec(target.module.split(".")[0]) is None:
        raise AppNotFound(f"module {target.module!r} not found (searched {target.directory})")


def load_app(target: AppTarget) -> App:
    """Import the target's module and return its App; an App subclass is instantiated with no
    arguments. For a factory target, the attribute is called with no arguments instead.

    Raises:
        AppNotFound: the module, the file or the attribute does not exist, or the object is
            not an App (nor an App subclass); for a factory target, it is not callable or did
            not return an App.
        AppLoadError: the app's own code raised (importing its module, building the App);
            that exception is the ``__cause__``.
    """
    module = _import(target)
    obj: Any = module
    for part in target.attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppNotFound(
                f"module {_shown(target)!r} has no attribute {target.attribute!r}"
            ) from None
    if target.factory:
        return _call_factory(target, obj)
    if isinstance(obj, type) and issubclass(obj, App):
        try:
            obj = obj()
        except Exception as exc:
            raise AppLoadError(target.text, exc) from exc
    if not isinstance(obj, App):
        hint = "; pass --factory if it returns one" if callable(obj) else ""
        raise AppNotFound(f"{target.text!r} is not a megatrio.App (it is {_type_name(obj)}){hint}")
    return obj


def _call_factory(target: AppTarget, factory: Any) -> App:
    if not callable(factory):
        raise AppNotFound(
            f"{target.text!r} is not callable (it is {_type_name(factory)}); "
            "--factory needs a function that returns a megatrio.App"
        )
    try:
        app = factory()
    except Exception as exc:
        raise AppLoadError(target.text, exc) from exc
    if inspect.iscoroutine(app):
        app.close()
        raise AppNotFound(
            f"{target.text!r} is an async function: --factory needs a plain function "
            "that returns a megatrio.App"
        )
    if not isinstance(app, App):
        raise AppNotFound(f"{target.text!r} returned {_type_name(app)}, not a megatrio.App")
    return app


def format_load_error(error: AppLoadError, redactor: Redactor) -> str:
    """What a user sees for *error*: the traceback of the app's own frames — importlib's and
    megatrio's are left out — then one ``megatrio: error: cannot load ...`` line, redacted.

    A syntax error keeps its file, line and caret (they are not frames).
    """
    cause = error.__cause__
    lines: list[str] = []
    if cause is not None:
        report = traceback.TracebackException.from_exception(cause)
        _drop_internal_frames(report, set())
        lines.extend(report.format())
    lines.append(f"megatrio: error: {error}\n")
    return redactor.scrub("".join(lines))


# -- helpers ---------------------------------------------------------------------------------


def _add_to_path(directory: Path) -> None:
    search = str(directory)
    if search not in sys.path:
        sys.path.insert(0, search)


def _shown(target: AppTarget) -> str:
    return target.text.partition(":")[0]


def _missing_file(target: AppTarget) -> str:
    where = target.directory / target.module
    return f"{_shown(target)!r} not found: no file {where}.py and no package {where}{os.sep}"


def _type_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _import(target: AppTarget) -> Any:
    _add_to_path(target.directory)
    try:
        module = importlib.import_module(target.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == target.module or target.module.startswith(missing + "."):
            if target.path_form:
                raise AppNotFound(_missing_file(target)) from None
            raise AppNotFound(
                f"module {target.module!r} not found (searched {target.directory})"
            ) from None
        raise AppLoadError(target.text, exc) from exc
    except Exception as exc:
        raise AppLoadError(target.text, exc) from exc
    if target.path_form:
        _check_origin(target, module)
    return module


def _check_origin(target: AppTarget, module: Any) -> None:
    # A module of that name imported before (the standard library's, another file's) is
    # returned instead of the file: say so rather than look for the attribute in it.
    origin = getattr(module, "__file__", None) or ""
    expected = target.directory / target.module
    if not origin or Path(origin).resolve() not in {
        expected.with_suffix(".py"),
        expected / "__init__.py",
    }:
        raise AppNotFound(
            f"{_shown(target)!r} would be imported as module {target.module!r}, which is "
            f"already {origin or 'a built-in module'}; rename the file"
        )


def _is_internal(frame: traceback.FrameSummary) -> bool:
    filename = frame.filename
    return (
        filename.startswith("<frozen importlib")
        or filename.startswith(_IMPORTLIB_DIR)
        or filename.startswith(_PACKAGE_DIR)
    )


def _drop_internal_frames(report: traceback.TracebackException, seen: set[int]) -> None:
    if id(report) in seen:
        return
    seen.add(id(report))
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if not _is_internal(frame)]
    )
    for chained in (report.__cause__, report.__context__, *(report.exceptions or ())):
        if chained is not None:
            _drop_internal_frames(chained, seen)


def no_jobs_reason(app: App) -> str | None:
    """Why ``megatrio worker`` cannot run *app* (it declares no job), or None."""
    if app.job_specs():
        return None
    return f"app {app.name!r} declares no jobs: megatrio worker has nothing to run"
