"""The hypercorn internals megatrio serves with exist, and a missing one is named loudly."""

from __future__ import annotations

import hypercorn.trio.tcp_server
import hypercorn.trio.worker_context
import pytest

from megatrio.services.http import _hypercorn


def test_every_internal_megatrio_uses_exists_in_this_hypercorn() -> None:
    missing = _hypercorn.missing_internals()
    assert missing == [], f"hypercorn renamed or removed: {', '.join(missing)}"
    _hypercorn.check_internals()


def test_a_missing_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(hypercorn.trio.tcp_server.TCPServer, "_close")
    assert _hypercorn.missing_internals() == ["hypercorn.trio.tcp_server:TCPServer._close"]
    with pytest.raises(
        RuntimeError, match=r"hypercorn 0\.\d+\.\d+ lacks internals .*TCPServer\._close"
    ):
        _hypercorn.HypercornServer(
            lambda *a: None,
            _hypercorn.make_config(
                graceful_seconds=1,
                keep_alive_timeout_seconds=1,
                root_path="",
                certfile="",
                keyfile="",
            ),
        )


def test_a_missing_module_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_hypercorn, "REQUIRED", (*_hypercorn.REQUIRED, "hypercorn.trio.nope:Thing"))
    assert _hypercorn.missing_internals() == ["hypercorn.trio.nope:Thing"]


def test_a_missing_instance_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    original = hypercorn.trio.worker_context.WorkerContext.__init__

    def init_without_terminated(self: object, max_requests: int | None) -> None:
        original(self, max_requests)  # type: ignore[arg-type]
        del self.terminated  # type: ignore[attr-defined]

    monkeypatch.setattr(
        hypercorn.trio.worker_context.WorkerContext, "__init__", init_without_terminated
    )
    assert _hypercorn.missing_internals() == ["WorkerContext(None).terminated"]
