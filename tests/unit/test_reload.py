"""The reloader's pure parts: which changes count, and how a reload names them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from watchfiles import Change

from megatrio.cli._reload import SourceFilter, describe_changes, forget_bytecode

ROOT = Path("/srv/shop")


@pytest.mark.parametrize(
    ("path", "counts"),
    [
        ("/srv/shop/app.py", True),
        ("/srv/shop/pkg/models.py", True),
        ("/srv/shop/notes.txt", False),
        ("/srv/shop/app.pyc", False),
        ("/srv/shop/__pycache__/app.py", False),
        ("/srv/shop/.venv/lib/site.py", False),
        ("/srv/shop/venv/lib/site.py", False),
        ("/srv/shop/.git/hooks/x.py", False),
        ("/srv/shop/.#app.py", False),
    ],
)
def test_only_python_sources_outside_tool_directories_count(path: str, counts: bool) -> None:
    assert SourceFilter([ROOT])(Change.modified, path) is counts


def test_directories_above_the_watched_one_are_not_looked_at() -> None:
    root = Path("/home/dev/venv/shop")
    assert SourceFilter([root])(Change.modified, "/home/dev/venv/shop/app.py")
    assert not SourceFilter([root])(Change.modified, "/home/dev/venv/shop/venv/app.py")


def test_changes_are_named_relative_to_the_cwd_sorted_and_capped() -> None:
    assert describe_changes(["/srv/shop/app.py"], cwd=ROOT) == "app.py"
    assert describe_changes(["/srv/shop/b.py", "/srv/shop/a.py"], cwd=ROOT) == "a.py, b.py"
    assert describe_changes(["/elsewhere/x.py"], cwd=ROOT) == "/elsewhere/x.py"
    many = [f"/srv/shop/m{i}.py" for i in range(5)]
    assert describe_changes(many, cwd=ROOT) == "m0.py, m1.py, m2.py and 2 more"


def test_the_bytecode_of_a_changed_source_is_removed(tmp_path: Path) -> None:
    source = tmp_path / "app.py"
    source.write_text("x = 1\n")
    cached = Path(importlib.util.cache_from_source(str(source)))
    cached.parent.mkdir()
    cached.write_bytes(b"stale")
    forget_bytecode([str(source), str(tmp_path / "never_compiled.py")])
    assert not cached.exists()
    assert source.exists()
