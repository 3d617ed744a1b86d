"""Human-readable rendering of a supervision-tree snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_tree(snapshot: Mapping[str, Any]) -> str:
    """Render a :meth:`Supervisor.snapshot` (or ``Runtime.snapshot()``) as an indented tree.

    One line per supervisor — strategy, state, how much of the restart window is used
    (``restarts in window 1/3 in 5 s``) and the run's restarts in all — and one per child:
    state, uptime, restarts and the last error.

    The snapshot is rendered as it is, unredacted: an error text carries whatever its
    exception message carried. To show it to anyone, redact it first —
    ``format_tree(Redactor(redact_keys).redact(snapshot))`` — as the admin listener and the
    console's ``tree()`` do.
    """
    lines: list[str] = []
    _supervisor_lines(snapshot, "", lines)
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _supervisor_lines(snap: Mapping[str, Any], indent: str, lines: list[str]) -> None:
    used = snap.get("restarts_in_window", 0)
    window = f"restarts in window {used}/{snap['max_restarts']} in {snap['period_seconds']:g} s"
    lines.append(
        f"{indent}{snap['name']} [{snap['strategy']}, {snap['state']}, "
        f"{window}; {snap['restarts']} total]"
    )
    children = snap["children"]
    for index, child in enumerate(children):
        last = index == len(children) - 1
        branch, carry = ("└── ", "    ") if last else ("├── ", "│   ")
        uptime = child["uptime_seconds"]
        parts = [
            f"{child['name']}",
            child["state"],
            "-" if uptime is None else f"up {uptime:.1f}s",
            _count(child["restarts"], "restart"),
        ]
        for key, value in (child.get("info") or {}).items():
            parts.append(f"{key}={value}")
        if child["last_error"]:
            parts.append(f"last error: {child['last_error']}")
        lines.append(f"{indent}{branch}{'  '.join(parts)}")
        nested = child.get("supervisor")
        if nested is not None:
            _supervisor_lines(nested, indent + carry, lines)
