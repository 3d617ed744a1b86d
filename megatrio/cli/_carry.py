"""A cluster worker's restart counts carried over its own restarts (sans-IO).

A replacement worker process starts its tree from zero; the primary shows each worker's tree
with the restarts its earlier processes counted added in, so ``megatrio_child_restarts_total``
for ``primary/workers/worker-1/http`` never goes back when worker 1 is replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, final


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for child in node.get("children", ()):
        if not isinstance(child, dict):
            continue
        child_path = f"{path}/{child.get('name')}"
        yield child_path, child
        nested = child.get("supervisor")
        if isinstance(nested, dict):
            yield from _walk(nested, child_path)


@final
class CarriedRestarts:
    """Restart counts of one worker slot's exited processes, by child path in its tree."""

    def __init__(self) -> None:
        self._carried: dict[str, int] = {}

    def retire(self, tree: dict[str, Any] | None) -> None:
        """The process whose last tree was *tree* exited: carry its counts."""
        if tree is None:
            return
        for path, child in _walk(tree, ""):
            restarts = child.get("restarts")
            if isinstance(restarts, int) and restarts > 0:
                self._carried[path] = self._carried.get(path, 0) + restarts

    def apply(self, tree: dict[str, Any]) -> dict[str, Any]:
        """*tree* (not changed) with the carried counts added to its children's restarts."""
        if not self._carried:
            return tree
        return _added(tree, "", self._carried)


def _added(node: dict[str, Any], path: str, carried: dict[str, int]) -> dict[str, Any]:
    children = []
    for child in node.get("children", ()):
        if not isinstance(child, dict):
            children.append(child)
            continue
        child_path = f"{path}/{child.get('name')}"
        copy = dict(child)
        extra = carried.get(child_path, 0)
        if extra and isinstance(copy.get("restarts"), int):
            copy["restarts"] += extra
        nested = copy.get("supervisor")
        if isinstance(nested, dict):
            copy["supervisor"] = _added(nested, child_path, carried)
        children.append(copy)
    return {**node, "children": children}
