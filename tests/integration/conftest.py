"""Every HTTP test module runs on both HTTP/1.1 fronts.

The modules in :data:`BOTH_FRONTS` are collected twice, ``[hypercorn]`` and ``[fast]``: the
``http_front`` fixture sets ``MEGATRIO_HTTP_FRONT`` (which ``megatrio run`` processes
started by a test read) and makes every in-process ``serve_app`` serve on that front.
``HTTP_FRONTS_UNDER_TEST`` (comma-separated) narrows the fronts, e.g. to ``fast``.
"""

from __future__ import annotations

import os

import attrs
import pytest

import megatrio.app._serve as serve_module
from megatrio.services.http._front import HttpFront

BOTH_FRONTS = frozenset(
    {
        "test_http",
        "test_http_serving",
        "test_http_fuzz",
        "test_http_raw",
        "test_listeners",
        "test_cli",
        "test_signals",
        "test_ws_hub",
        "test_cluster",
    }
)


def _fronts() -> list[str]:
    chosen = os.environ.get("HTTP_FRONTS_UNDER_TEST", "hypercorn,fast")
    fronts = [f.strip() for f in chosen.split(",") if f.strip()]
    for front in fronts:
        HttpFront(front)  # an unknown name fails the collection, naming it
    return fronts


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module in BOTH_FRONTS:
        metafunc.parametrize("http_front", _fronts(), indirect=True)


@pytest.fixture(autouse=True)
def http_front(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Autouse, so that it is in every test's closure; it acts only where parametrized."""
    if not hasattr(request, "param"):
        return None
    front = HttpFront(request.param)
    monkeypatch.setenv("MEGATRIO_HTTP_FRONT", front.value)
    original = serve_module.http_options

    def http_options(config: object) -> object:
        return attrs.evolve(original(config), front=front)  # type: ignore[arg-type]

    monkeypatch.setattr(serve_module, "http_options", http_options)
    return front.value
