"""Helpers shared by the benchmark scripts (run as ``python bench/<script>.py``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect, then keep the cyclic GC off for the block (used identically on every side)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: set[int]) -> str:
    """A Markdown table with padded columns; columns in *right* are right-aligned."""
    all_rows = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(all_rows[0]), rule, *(line(r) for r in all_rows[1:])])
