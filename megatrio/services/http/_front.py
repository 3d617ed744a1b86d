"""Which HTTP/1.1 server serves a listener's plain connections."""

from __future__ import annotations

import enum


class HttpFront(enum.Enum):
    """``fast``: megatrio's own HTTP/1.1 front (:mod:`._fast`); ``hypercorn``: hypercorn's
    per-connection server. TLS connections (and so HTTP/2, negotiated by ALPN) are served by
    hypercorn either way."""

    FAST = "fast"
    HYPERCORN = "hypercorn"
