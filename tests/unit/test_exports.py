"""The public surface is deliberate: __all__ lists exactly the public names."""

from __future__ import annotations

import subprocess
import sys
import types

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
        assert getattr(megatrio, name).__module__.startswith("megatrio.services")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = megatrio.nope  # type: ignore[attr-defined]


def test_importing_megatrio_does_not_load_redis_or_http_clients() -> None:
    code = "import sys, megatrio; print(sorted({'coredis', 'httpx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_supervisor_module_exports_what_it_defines() -> None:
    module = megatrio.supervisor
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == module.__name__
        and name != "log"
    }
    assert isinstance(module.__all__, tuple)
    assert defined <= set(module.__all__)
    for name in module.__all__:
        assert getattr(megatrio, name) is getattr(module, name)


def test_public_objects_claim_the_public_module_in_docs() -> None:
    # Every re-exported class and function has a docstring stating its contract.
    for name in megatrio.__all__:
        obj = getattr(megatrio, name)
        if isinstance(obj, type | types.FunctionType):
            assert obj.__doc__, f"megatrio.{name} has no docstring"


def test_handles_have_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        megatrio.ChildContext("x", ("x",))  # type: ignore[call-arg]
