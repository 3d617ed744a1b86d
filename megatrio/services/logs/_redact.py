"""Redaction of secrets in structured data and in free text. Sans-IO.

Keys are compared after normalisation — lower case, everything but letters and digits
removed — so ``Set-Cookie``, ``set_cookie`` and ``setCookie`` are the same key. A key is
sensitive when its normalised form ends with one of the sensitive names (``X-Api-Key``,
``db_authorization``), or contains ``secret``, ``token`` or ``password``. Values under a
sensitive key are replaced whole, whatever their type.

Free text (log messages, exception messages, error strings in snapshots) is scrubbed of
``Bearer`` tokens (8+ characters), ``Basic`` credentials (base64 of ``user:password``),
JWT-shaped tokens, passwords in URLs, and ``key=value`` / ``"key": "value"`` pairs whose key
is sensitive.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, final

MASK: Final = "[REDACTED]"

DEFAULT_SENSITIVE_KEYS: Final = (
    "authorization",
    "cookie",
    "set-cookie",
    "password",
    "passwd",
    "token",
    "secret",
    "access_token",
    "refresh_token",
    "api_key",
    "private_key",
)
SENSITIVE_SUBSTRINGS: Final = ("secret", "token", "password")

_WHOLE_LINE_KEYS: Final = frozenset({"cookie", "setcookie", "authorization", "proxyauthorization"})

_NON_ALNUM = re.compile(r"[^a-z0-9]")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9\-._~+/]{8,}=*")
_BASIC = re.compile(r"\b(Basic)(\s+)([A-Za-z0-9+/]{4,}={0,2})")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/\s@]*:)[^@\s/]+@")


def _mask_basic(match: re.Match[str]) -> str:
    # Only what really decodes to "user:password" is a credential; "Basic setup" is prose.
    try:
        decoded = base64.b64decode(match[3], validate=True)
    except (binascii.Error, ValueError):
        return match[0]
    return f"{match[1]}{match[2]}{MASK}" if b":" in decoded else match[0]


def normalize_key(key: str) -> str:
    """``"X-Api_Key"`` → ``"xapikey"``: the form keys are compared in."""
    return _NON_ALNUM.sub("", key.lower())


@final
class Redactor:
    """Masks the values of sensitive keys at any depth, and credentials inside strings.

    *extra_keys* adds names to the default sensitive set (they are normalised the same way).
    """

    __slots__ = ("_exact", "_pairs", "_sensitive")

    def __init__(self, extra_keys: Iterable[str] = ()) -> None:
        keys = (*DEFAULT_SENSITIVE_KEYS, *extra_keys)
        self._exact = tuple(sorted({normalize_key(k) for k in keys}))
        # Bounded: keys come from arbitrary log data, and an unbounded cache would be a leak.
        self._sensitive = functools.lru_cache(maxsize=4096)(self._decide)
        # A key token made of letters, digits, '-' and '_' that, normalised, is sensitive.
        # The regex finds candidates; _mask_pair decides with is_sensitive.
        self._pairs = re.compile(
            r"""(?P<key>["']?[A-Za-z][A-Za-z0-9_\-]*["']?)(?P<sep>\s*[:=]\s*)"""
            r"""(?P<value>"[^"]*"|'[^']*'|[^\s,;&}\]\)]+)"""
        )

    def is_sensitive(self, key: str) -> bool:
        """Whether values under *key* must never be shown."""
        return self._sensitive(key)

    def _decide(self, key: str) -> bool:
        norm = normalize_key(key)
        return any(norm.endswith(name) for name in self._exact) or any(
            s in norm for s in SENSITIVE_SUBSTRINGS
        )

    def redact(self, value: Any) -> Any:
        """A copy of *value* with sensitive keys masked and strings scrubbed, at any depth.

        Mappings, lists, tuples and sets are rebuilt; other objects are returned unchanged
        except ``str``/``bytes``, which are scrubbed. Cycles are cut with the mask.
        """
        return self._redact(value, set())

    def scrub(self, text: str) -> str:
        """*text* with credentials and sensitive ``key=value`` pairs masked."""
        # Each pattern runs only where its literal part occurs: most strings of a record
        # (methods, paths, ids, logger names) have none, and a substring test is far cheaper
        # than a regex pass. The tests are necessary conditions, so nothing is missed.
        if "bearer" in text.lower():
            text = _BEARER.sub(rf"\1\2{MASK}", text)
        if "Basic" in text:
            text = _BASIC.sub(_mask_basic, text)
        if "eyJ" in text:
            text = _JWT.sub(MASK, text)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
        if ":" in text or "=" in text:
            return self._mask_pairs(text)
        return text

    def _mask_pairs(self, text: str) -> str:
        # A manual scan rather than re.sub: after a non-sensitive key ("ValueError: ...") the
        # search resumes right after its separator, so a pair inside its would-be value
        # ("ValueError: secret=abc") is still found.
        out: list[str] = []
        pos = 0
        while (match := self._pairs.search(text, pos)) is not None:
            if not self.is_sensitive(match["key"].strip("\"'")):
                out.append(text[pos : match.end("sep")])
                pos = match.end("sep")
                continue
            value = match["value"]
            quote = value[0] if value[:1] in {'"', "'"} else ""
            end = match.end()
            if not quote and normalize_key(match["key"]) in _WHOLE_LINE_KEYS:
                # Header-style values ("Cookie: a=1; b=2") run to the end of the line.
                newline = text.find("\n", end)
                end = len(text) if newline < 0 else newline
            out.append(text[pos : match.start("value")])
            out.append(f"{quote}{MASK}{quote}")
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def _redact(self, value: Any, active: set[int]) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, bytes | bytearray):
            return self.scrub(bytes(value).decode("utf-8", "replace"))
        if not isinstance(value, Mapping | list | tuple | set | frozenset):
            return value
        marker = id(value)
        if marker in active:
            return MASK
        active.add(marker)
        try:
            if isinstance(value, Mapping):
                return {
                    k: MASK
                    if isinstance(k, str) and self.is_sensitive(k)
                    else self._redact(v, active)
                    for k, v in value.items()
                }
            items = [self._redact(v, active) for v in value]
            if isinstance(value, list):
                return items
            if isinstance(value, tuple):
                return tuple(items)
            return [*items]  # sets of scrubbed strings may collide; keep them all
        finally:
            active.discard(marker)
