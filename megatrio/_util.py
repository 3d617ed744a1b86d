"""Small helpers shared across the package."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class NoPublicConstructor(type):
    """Metaclass for handles that only megatrio creates: ``Cls(...)`` raises TypeError.

    megatrio code builds instances with ``Cls._create(...)``.
    """

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no public constructor")

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


def fixup_module_metadata(module_name: str, namespace: dict[str, Any]) -> None:
    """Make the public objects in *namespace* claim *module_name* as their home.

    Public classes and functions are defined in private modules and re-exported by the
    package face; their ``__module__`` (and, for classes, the ``__module__`` of their methods)
    is set to the face, so reprs, docs and pickles name ``megatrio.Cache``, not a private path.
    Objects defined outside megatrio are left alone.
    """
    seen: set[int] = set()

    def fix(name: str, obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith("megatrio."):
            return
        try:
            obj.__module__ = module_name
        except (AttributeError, TypeError):
            return
        if isinstance(obj, type):
            for attr, value in vars(obj).items():
                if callable(value) and not attr.startswith("__"):
                    fix(attr, value)

    for name, obj in namespace.items():
        if not name.startswith("_") and (isinstance(obj, type) or callable(obj)):
            fix(name, obj)


def missing_references(refs: Iterable[str]) -> list[str]:
    """Those of *refs* (``"package.module:Name.attribute"``) that do not resolve: the module
    does not import, or an attribute on the path is missing. For the tests and start-up checks
    that fail loudly when another library renames an internal megatrio relies on."""
    missing: list[str] = []
    for ref in refs:
        module_name, _, path = ref.partition(":")
        try:
            obj: object = importlib.import_module(module_name)
        except ImportError:
            missing.append(ref)
            continue
        for part in path.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                missing.append(ref)
                break
    return missing
