"""Argument validation shared by the policy and configuration classes."""

from __future__ import annotations

import math


def check_count(name: str, value: object, *, minimum: int = 0) -> int:
    """Return *value* if it is an ``int`` (not a bool) of at least *minimum*, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_seconds(
    name: str,
    value: object,
    *,
    allow_zero: bool = True,
    allow_inf: bool = True,
) -> float:
    """Return *value* as a float number of seconds, or raise naming *name*.

    NaN and negative values are always rejected; zero and infinity only when disallowed.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must not be NaN")
    if seconds < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if math.isinf(seconds) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    return seconds
