"""App declaration and resolution of ``module:attr`` targets."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import megatrio
from megatrio import App, AppNotFound, ChildSpec
from megatrio.cli._main import resolve_app


def test_decorators_register_routes_and_children_in_order() -> None:
    app = App("demo")

    @app.get("/x")
    async def x() -> str:
        return "x"

    @app.every(2.0)
    async def tick() -> None:
        pass

    @app.child(shutdown_seconds=1)
    async def worker(*, task_status: object) -> None:
        pass

    app.add_child(ChildSpec("last", worker))
    assert [c.name for c in app.children()] == ["tick", "worker", "last"]
    assert app.children()[1].shutdown_seconds == 1  # type: ignore[index]
    assert "/x" in [rule.rule for rule in app.http.url_map.iter_rules()]
    with pytest.raises(ValueError, match="already has a child named 'last'"):
        app.add_child(ChildSpec("last", worker))


def test_subclass_name_setup_and_rt_outside_serving() -> None:
    class Shop(App):
        def setup(self) -> None:
            self.post("/buy")(self.buy)

        async def buy(self) -> str:
            return "ok"

    shop = Shop()
    assert shop.name == "shop"
    assert "/buy" in [rule.rule for rule in shop.http.url_map.iter_rules()]
    with pytest.raises(RuntimeError, match="'shop' is not being served"):
        _ = shop.rt
    with pytest.raises(ValueError, match="app name"):
        App("a/b")


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "shopapp.py").write_text(
        textwrap.dedent(
            """
            import megatrio

            class Shop(megatrio.App):
                name = "shop"

            instance = megatrio.App("inst")
            number = 3
            """
        )
    )
    yield tmp_path
    sys.modules.pop("shopapp", None)


def test_resolve_app_accepts_instances_and_subclasses(app_dir: Path) -> None:
    assert resolve_app("shopapp:instance", directory=app_dir).name == "inst"
    shop = resolve_app("shopapp:Shop", directory=app_dir)
    assert isinstance(shop, megatrio.App)
    assert shop.name == "shop"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("shopapp", "expected MODULE:ATTRIBUTE"),
        (":x", "expected MODULE:ATTRIBUTE"),
        ("nope_module:x", "module 'nope_module' not found"),
        ("shopapp:missing", "module 'shopapp' has no attribute 'missing'"),
        ("shopapp:number", "'shopapp:number' is not a megatrio.App (it is builtins.int)"),
    ],
)
def test_resolve_app_errors_name_what_is_wrong(app_dir: Path, target: str, message: str) -> None:
    with pytest.raises(AppNotFound, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_app(target, directory=app_dir)


def test_resolve_app_takes_a_file_path_as_the_module(app_dir: Path) -> None:
    (app_dir / "src").mkdir()
    (app_dir / "src" / "srcapp.py").write_text("import megatrio\napp = megatrio.App('src')\n")
    (app_dir / "json.py").write_text("")
    try:
        assert resolve_app("src/srcapp.py:app", directory=app_dir).name == "src"
        assert resolve_app("./shopapp:instance", directory=app_dir).name == "inst"
        assert resolve_app(f"{app_dir}/shopapp.py:Shop").name == "shop"
        with pytest.raises(AppNotFound, match=r"'json\.py' would be imported as module 'json'"):
            resolve_app("json.py:x", directory=app_dir)
    finally:
        sys.modules.pop("srcapp", None)
