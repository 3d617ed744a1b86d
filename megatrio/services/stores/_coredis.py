"""Every use of coredis' internals, in one module.

megatrio's Redis client speaks RESP itself (:mod:`._redis_conn`) but raises coredis' public
exception classes (``coredis.exceptions``), so code that catches them, and the stores' error
mapping, see exactly what a coredis client raised. Which class an error reply becomes is
coredis' own table, ``coredis.parser:Parser.EXCEPTION_CLASSES`` (error code, or error code
then message prefix, to class), which is not public API: :func:`error_from_reply` applies it
as coredis' parser does.

:data:`REQUIRED` lists every coredis name this module relies on and :func:`missing_internals`
reports those the installed coredis lacks. ``tests/unit/test_coredis_canary.py`` calls it, so
an upgrade that renames one fails that test with the name; :func:`~._redis.open_redis` calls
:func:`check_internals` too, so opening a client fails at once with the same message instead of
misclassifying errors later.
"""

from __future__ import annotations

import importlib.metadata
from typing import Final

from coredis.exceptions import RedisError, ResponseError

from ..._util import missing_references

REQUIRED: Final = ("coredis.parser:Parser.EXCEPTION_CLASSES",)
"""``module:attribute.path`` of every coredis name used here."""


def _table() -> dict[str, type[RedisError] | dict[str, type[RedisError]]]:
    from coredis.parser import Parser

    return Parser.EXCEPTION_CLASSES


def error_from_reply(message: str) -> RedisError:
    """The coredis exception for the error reply *message* (without its leading ``-``):
    ``WRONGTYPE ...`` is a ``WrongTypeError``, ``READONLY ...`` a ``ReadOnlyError``, an unknown
    code a ``ResponseError`` with the whole message. Not a checkpoint."""
    code, _, rest = message.partition(" ")
    found = _TABLE.get(code)
    if found is None:
        return ResponseError(message)
    if isinstance(found, dict):
        lowered = rest.lower()
        for prefix, cls in found.items():
            if lowered.startswith(prefix):
                return cls(rest)
        return ResponseError(rest)
    return found(rest)


def missing_internals() -> list[str]:
    """The names of :data:`REQUIRED` this coredis lacks, and a table of another shape, each
    as a readable reference. Not a checkpoint; opens no connection."""
    missing = missing_references(REQUIRED)
    if missing:
        return missing
    table = _table()
    if not isinstance(table, dict) or not all(
        isinstance(value, dict) or (isinstance(value, type) and issubclass(value, RedisError))
        for value in table.values()
    ):
        return ["coredis.parser:Parser.EXCEPTION_CLASSES as {code: class or {prefix: class}}"]
    return []


def check_internals() -> None:
    """Raise RuntimeError naming every coredis internal megatrio needs but cannot find."""
    missing = missing_internals()
    if missing:
        version = importlib.metadata.version("coredis")
        raise RuntimeError(
            f"coredis {version} lacks internals megatrio relies on: {', '.join(missing)}"
        )


_TABLE: dict[str, type[RedisError] | dict[str, type[RedisError]]] = (
    _table() if not missing_internals() else {}
)
