"""The public surface is deliberate: __all__ lists exactly the public names."""

from __future__ import annotations

import types

import pytest

import megatrio
import megatrio.supervisor


def test_megatrio_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(megatrio).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert isinstance(megatrio.__all__, tuple)
    assert set(megatrio.__all__) == public


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
