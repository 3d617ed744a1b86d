"""The public surface is deliberate: __all__ lists exactly the public names."""

from __future__ import annotations

import subprocess
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

import pytest

import megatrio
import megatrio.supervisor


def test_megatrio_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(megatrio).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } | set(megatrio._LAZY)
    assert isinstance(megatrio.__all__, tuple)
    assert set(megatrio.__all__) == public
    for name in megatrio._LAZY:
        assert getattr(megatrio, name).__module__ == "megatrio"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = megatrio.nope  # type: ignore[attr-defined]


def test_importing_megatrio_does_not_load_redis_nats_or_http_clients() -> None:
    code = "import sys, megatrio; print(sorted({'coredis', 'httpx', 'nats'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_nats_names_are_lazy_and_claim_the_face() -> None:
    # Reached through the face, they load nats-py; the connection and a subscription are
    # handles users never build.
    names = {"Bus", "BusMessage", "Subscription", "NatsConnection", "open_nats"}
    assert names <= set(megatrio._LAZY)
    for name in ("Bus", "BusMessage", "Subscription"):
        assert repr(getattr(megatrio, name)) == f"<class 'megatrio.{name}'>"
    for handle in (megatrio.NatsConnection, megatrio.Subscription):
        with pytest.raises(TypeError, match="no public constructor"):
            handle()


@pytest.mark.parametrize(
    "function",
    [
        lambda: megatrio.Bus.__init__,
        lambda: megatrio.Bus.subscribe,
        lambda: megatrio.Bus.request,
        lambda: megatrio.Bus.reply,
        lambda: megatrio.Subscription.__anext__,
        lambda: megatrio.Runtime.install_bus,
    ],
)
def test_bus_signatures_use_only_exported_types(function: Callable[[], Any]) -> None:
    # A subscriber or responder annotates what it receives (BusMessage, Subscription) with
    # names from megatrio.
    # The runtime names Bus only under TYPE_CHECKING: resolve it through the face.
    hints = typing.get_type_hints(function(), localns={"Bus": megatrio.Bus})
    used = set().union(*map(_megatrio_classes, hints.values()))
    assert used
    for cls in used:
        assert getattr(megatrio, cls.__name__, None) is cls, f"{cls.__qualname__} is not exported"


def _megatrio_classes(annotation: Any) -> set[type]:
    """The megatrio classes an annotation names, through unions and generics."""
    found: set[type] = set()
    origin = typing.get_origin(annotation)
    for tp in (annotation, origin):
        if isinstance(tp, type) and tp.__module__.startswith("megatrio"):
            found.add(tp)
    for arg in typing.get_args(annotation):
        found |= _megatrio_classes(arg)
    return found


@pytest.mark.parametrize(
    "function",
    [
        lambda: megatrio.serve_alerts,
        lambda: megatrio.AlertSender.send,
        lambda: megatrio.AlertHandler.__init__,
        lambda: megatrio.TelegramSender.__init__,
        lambda: megatrio.WebhookSender.__init__,
    ],
)
def test_alert_signatures_use_only_exported_types(function: Callable[[], Any]) -> None:
    # A user who writes a sender or wires serve_alerts by hand names every type from megatrio.
    hints = typing.get_type_hints(function())
    used = set().union(*map(_megatrio_classes, hints.values()))
    for cls in used:
        assert getattr(megatrio, cls.__name__, None) is cls, f"{cls.__qualname__} is not exported"


def test_serve_alerts_takes_the_exported_throttle_and_sender() -> None:
    hints = typing.get_type_hints(megatrio.serve_alerts)
    assert hints["sender"] is megatrio.AlertSender
    assert _megatrio_classes(hints["throttle"]) == {megatrio.TokenBucket}
    assert hints["queue"] is megatrio.RetryQueue


def test_supervisor_module_exports_its_documented_names() -> None:
    module = megatrio.supervisor
    assert isinstance(module.__all__, tuple)
    assert set(module.__all__) == {
        "NO_BACKOFF", "Backoff", "ChildSpec", "Restart", "RestartWindow", "Strategy",
        "Supervisor", "ready_immediately",
    }  # fmt: skip
    for name in module.__all__:
        assert getattr(megatrio, name) is getattr(module, name)


def test_public_objects_claim_the_public_module_in_docs() -> None:
    # Every re-exported class and function has a docstring stating its contract, and names
    # the face as its module (repr, docs and pickles say megatrio.Cache).
    for name in megatrio.__all__:
        obj = getattr(megatrio, name)
        if isinstance(obj, type | types.FunctionType):
            assert obj.__doc__, f"megatrio.{name} has no docstring"
            if obj.__module__.startswith("megatrio"):
                assert obj.__module__ == "megatrio", f"megatrio.{name} claims {obj.__module__}"
    assert repr(megatrio.Cache) == "<class 'megatrio.Cache'>"


def test_the_types_in_retry_queue_drain_are_public() -> None:
    # RetryQueue.drain takes a deliver(QueuedEntry) and returns a DrainSummary: users name
    # both in their own annotations, so both are re-exported and claim the face.
    hints = typing.get_type_hints(megatrio.RetryQueue.drain)
    assert hints["return"] is megatrio.DrainSummary
    assert typing.get_args(hints["deliver"])[0] == [megatrio.QueuedEntry]
    for cls in (megatrio.QueuedEntry, megatrio.DrainSummary):
        assert cls.__module__ == "megatrio"
        assert cls.__name__ in megatrio.__all__


def test_handles_have_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        megatrio.ChildContext("x", ("x",))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "function",
    [
        lambda: megatrio.Jobs.__init__,
        lambda: megatrio.Jobs.enqueue,
        lambda: megatrio.Jobs.dead_letters,
        lambda: megatrio.JobDriver.fetch,
        lambda: megatrio.JobDriver.settle,
        lambda: megatrio.JobDriver.declare,
        lambda: megatrio.JobDriver.dead_letter,
        lambda: megatrio.EmbeddedDriver.fetch,
        lambda: megatrio.App.job,
    ],
)
def test_job_signatures_use_only_exported_types(function: Callable[[], Any]) -> None:
    # Writing an engine, a codec or a handler names every type from megatrio.
    hints = typing.get_type_hints(function())
    used = set().union(*map(_megatrio_classes, hints.values()))
    for cls in used:
        assert getattr(megatrio, cls.__name__, None) is cls, f"{cls.__qualname__} is not exported"
    assert megatrio.JobSpec.__module__ == "megatrio"
