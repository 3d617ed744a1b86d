"""Fixture module that fails while importing (its own bug, not a bad path)."""

import definitely_not_a_real_module  # noqa: F401
