"""The ``megatrio`` command: ``run``, ``console``, ``tree`` and the cluster primary and worker
entry points. Nothing in the library imports this package; it sits on top of :mod:`megatrio.app`."""

from __future__ import annotations

from ._main import entry_point, main

__all__ = ["entry_point", "main"]
