"""Payload codecs: how a job's payload becomes the bytes an engine stores, and back.

JSON by default (:class:`JsonCodec`); a job may declare its own (``@app.job(..., codec=...)``),
anything with ``encode(obj) -> bytes`` and ``decode(data) -> object``. The consumer treats any
exception from ``decode`` as an undecodable payload (dead-lettered at once, never retried);
:func:`encode_payload` names the job when ``encode`` refuses a payload, at enqueue time, in
the caller's task — a bad payload never reaches the queue.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, final


class Codec(Protocol):
    """Turns payloads into bytes and back. Pure: no I/O, no awaiting."""

    def encode(self, obj: Any) -> bytes:
        """*obj* as bytes. Raises TypeError or ValueError for what it cannot encode."""
        ...

    def decode(self, data: bytes) -> Any:
        """The payload *data* encodes. Raises ValueError (or anything) when it cannot."""
        ...


@final
class JsonCodec:
    """Compact UTF-8 JSON. ``NaN`` and infinities are refused (they are not JSON)."""

    # One encoder for every call: json.dumps builds a new one whenever it gets options.
    _encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def encode(self, obj: Any) -> bytes:
        return self._encoder.encode(obj).encode()

    def decode(self, data: bytes) -> Any:
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors.
        return json.loads(data.decode())

    def __repr__(self) -> str:
        return "JsonCodec()"


JSON = JsonCodec()


def encode_payload(codec: Codec, job: str, payload: Any) -> bytes:
    """*payload* encoded by *codec*, for *job*.

    Raises:
        TypeError / ValueError: the codec refused it (same type, the job named, the codec's
            error as ``__cause__``); also TypeError when the codec returned no bytes.
    """
    try:
        data = codec.encode(payload)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"job {job!r}: payload cannot be encoded by {codec!r}: {exc}") from exc
    if not isinstance(data, bytes):
        raise TypeError(f"job {job!r}: {codec!r}.encode returned {type(data).__name__}, not bytes")
    return data
