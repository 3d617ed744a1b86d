"""Restart backoff: exponential with jitter, first restart immediate."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from ._checks import check_seconds

_LOG_FLOAT_MAX = math.log(1.7976931348623157e308)


def _seconds(
    *, allow_zero: bool = True, allow_inf: bool = True
) -> Callable[[Any, attrs.Attribute[float], float], None]:
    def validate(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
        check_seconds(attribute.name, value, allow_zero=allow_zero, allow_inf=allow_inf)

    return validate


def _multiplier(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
        raise ValueError(f"multiplier must be a number >= 1, got {value!r}")


def _jitter(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"jitter must be a number in [0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class Backoff:
    """How long to wait before a restart, as a pure function of the attempt number.

    Attempt 0 (the first restart after a stable run) is immediate. Attempt ``k >= 1`` waits
    ``min(max_seconds, initial_seconds * multiplier ** (k - 1))`` scaled by a random factor in
    ``[1 - jitter, 1 + jitter]`` and capped again at *max_seconds*. A child that stayed up for at
    least *stable_seconds* before crashing starts again from attempt 0.

    The defaults keep the default restart window meaningful: a child that crashes 0.1 s after
    every start is restarted after 0, ~0.1 and ~0.2 s, so its 4th crash lands well inside the
    default 5 s window and the supervisor gives up instead of backing off forever.
    """

    initial_seconds: float = attrs.field(default=0.1, validator=_seconds())
    multiplier: float = attrs.field(default=2.0, validator=_multiplier)
    max_seconds: float = attrs.field(default=5.0, validator=_seconds())
    jitter: float = attrs.field(default=0.2, validator=_jitter)
    stable_seconds: float = attrs.field(default=5.0, validator=_seconds())

    def delay_seconds(self, attempt: int, rand: float) -> float:
        """Seconds to wait before restart number *attempt*; *rand* is uniform in ``[0, 1)``.

        Computed in log space: any attempt number, however large, neither overflows nor
        computes a huge power.
        """
        if attempt <= 0:
            return 0.0
        base = self._base_seconds(attempt)
        scaled = base * (1.0 - self.jitter + 2.0 * self.jitter * rand)
        return min(self.max_seconds, max(0.0, scaled))

    def _base_seconds(self, attempt: int) -> float:
        initial, cap = self.initial_seconds, self.max_seconds
        multiplier = float(self.multiplier)
        if initial == 0 or cap == 0 or multiplier == 1.0:
            return min(cap, initial)
        try:
            exponent = float(attempt - 1)
        except OverflowError:
            exponent = math.inf
        log_base = math.log(initial) + exponent * math.log(multiplier)
        if math.isinf(cap):
            return math.exp(log_base) if log_base < _LOG_FLOAT_MAX else math.inf
        return cap if log_base >= math.log(cap) else math.exp(log_base)

    def attempt_after(self, attempt: int, uptime_seconds: float) -> int:
        """The attempt number for a crash after *uptime_seconds*, given the previous *attempt*.

        *attempt* counts the restarts since the last stable run; a stable run resets it to 0.
        """
        return 0 if uptime_seconds >= self.stable_seconds else attempt


DEFAULT_BACKOFF = Backoff()
"""The default: 0, ~0.1, ~0.2, ~0.4 s ... capped at 5 s, reset after 5 s of uptime."""

NO_BACKOFF = Backoff(initial_seconds=0.0, max_seconds=0.0, jitter=0.0)
"""Every restart immediate, as in OTP itself."""
