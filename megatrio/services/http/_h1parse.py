"""HTTP/1.1 request parsing for the fast front, sans-IO: bytes in, request events out.

:func:`make_parser` returns an httptools (llhttp) parser, or an h11-based one where httptools
is not installed; both turn a connection's bytes into the same events — :class:`Head`, body
``bytes``, :data:`END` — and raise :class:`ProtocolError` (with the status to answer) at the
first byte that is not HTTP/1.1 a server may accept. After a ``ProtocolError`` the parser is
dead: the connection answers that status and closes.

Strict on purpose, so that no proxy in front of megatrio can frame a request differently:
conflicting ``Content-Length``/``Transfer-Encoding``, a repeated ``Content-Length``, an
obsolete line fold, a bare CR or LF in a head, and anything but HTTP/1.0 or 1.1 are rejected.
Nothing here imports an event loop; Hypothesis drives both parsers directly.
"""

from __future__ import annotations

from typing import Final, Protocol

import attrs

try:
    import httptools
except ImportError:  # pragma: no cover - exercised by forcing the h11 parser in tests
    httptools = None  # type: ignore[assignment]

import h11

END: Final = None
"""The event that ends a request (its whole body has been received)."""


class ProtocolError(Exception):
    """What the peer sent cannot be served; answer *status* and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on a request head (0: none)."""

    max_header_count: int = 100
    max_head_bytes: int = 64 * 1024


@attrs.define(slots=True)
class Head:
    """A request line and its headers (names lower-cased, in order)."""

    method: str
    target: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    content_length: int | None
    expect_continue: bool
    upgrade: bool = False


class Parser(Protocol):
    in_head: bool
    """Whether part of a request head has been received but not all of it."""

    def feed(self, data: bytes) -> list[Head | bytes | None]: ...


def make_parser(limits: Limits, *, prefer_httptools: bool = True) -> Parser:
    """A parser for one connection: httptools when installed (and preferred), else h11."""
    if prefer_httptools and httptools is not None:
        return _HttptoolsParser(limits)
    return _H11Parser(limits)


def _check_version(version: str) -> None:
    if version not in ("1.1", "1.0"):
        raise ProtocolError(505 if version.startswith(("2", "3")) else 400, "unsupported HTTP")


def _describe(headers: list[tuple[bytes, bytes]], version: str) -> tuple[int | None, bool]:
    """(content length, expects 100-continue, has one Host) from lower-cased *headers*."""
    length: int | None = None
    expect = False
    hosts = 0
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            # Each parser checks the value's digits; this one also refuses a repeat.
            if length is not None:
                raise ProtocolError(400, "more than one Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            if chunked:
                raise ProtocolError(400, "more than one Transfer-Encoding")
            chunked = True
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
        elif name == b"host":
            hosts += 1
    if chunked and length is not None:
        raise ProtocolError(400, "both Content-Length and Transfer-Encoding")
    if version == "1.1" and hosts != 1:
        raise ProtocolError(400, "an HTTP/1.1 request needs exactly one Host header")
    return length, expect


class _HttptoolsParser:
    """llhttp through httptools: its callbacks collect the events of one ``feed``."""

    def __init__(self, limits: Limits) -> None:
        assert httptools is not None
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Head | bytes | None] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._dead = False
        self.in_head = False

    def feed(self, data: bytes) -> list[Head | bytes | None]:
        if self._dead:
            raise ProtocolError(400, "the connection already failed to parse")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade (or CONNECT) megatrio does not serve here: the request is answered
            # as a plain one and the connection closes after it; what follows is not parsed.
            self._dead = True
            for event in self._events:
                if isinstance(event, Head):
                    event.upgrade = True
        except httptools.HttpParserCallbackError as exc:
            # Whatever this read completed is dropped with it: nothing of a connection that
            # sent a malformed request is served after the error is seen.
            self._dead = True
            self._events = []
            if isinstance(exc.__context__, ProtocolError):
                raise exc.__context__ from None
            raise ProtocolError(400, "malformed request") from exc
        except httptools.HttpParserError as exc:
            self._dead = True
            self._events = []
            raise ProtocolError(400, f"malformed request: {exc}") from None
        if self.in_head:
            self._head_bytes += len(data)
            if self._limits.max_head_bytes and self._head_bytes > self._limits.max_head_bytes:
                self._dead = True
                raise ProtocolError(431, "request head too large")
        events, self._events = self._events, []
        return events

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self._url = b""
        self._headers = []
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name.lower(), value))
        limits = self._limits
        if limits.max_header_count and len(headers) > limits.max_header_count:
            raise ProtocolError(431, "too many request headers")
        self._head_bytes += len(name) + len(value) + 4
        if limits.max_head_bytes and self._head_bytes > limits.max_head_bytes:
            raise ProtocolError(431, "request head too large")

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self._parser
        version = parser.get_http_version()
        _check_version(version)
        length, expect = _describe(self._headers, version)
        self._events.append(
            Head(
                method=parser.get_method().decode("ascii"),
                target=self._url,
                http_version=version,
                headers=self._headers,
                keep_alive=parser.should_keep_alive() and version == "1.1",
                content_length=length,
                expect_continue=expect,
            )
        )

    def on_body(self, body: bytes) -> None:
        self._events.append(body)

    def on_message_complete(self) -> None:
        self._events.append(END)


def check_head_framing(head: bytes) -> None:
    """Raise :class:`ProtocolError` for a bare CR or LF, or an obsolete line fold, in *head*
    (the bytes of a request head from its first byte, complete or not)."""
    if head.endswith(b"\r"):
        head = head[:-1]  # its LF may be in the next read
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        raise ProtocolError(400, "bare CR or LF in the request head")
    if b"\r\n " in head or b"\r\n\t" in head:
        raise ProtocolError(400, "obsolete line folding in the request head")


def _check_one_content_length(head: bytes) -> None:
    # h11 merges repeated equal Content-Length headers into one; llhttp refuses them, and
    # so does this front with either parser (a smuggling vector when proxies disagree).
    lengths = 0
    for line in head.split(b"\r\n")[1:]:
        if line.partition(b":")[0].strip().lower() == b"content-length":
            lengths += 1
    if lengths > 1:
        raise ProtocolError(400, "malformed request: duplicate Content-Length")


class _H11Parser:
    """h11 as a parser only: each request it reads is answered to it with an empty response,
    which is discarded, so that it moves on to the next. h11 accepts bare LF and folded
    lines, so each head is checked first (:func:`check_head_framing`)."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        size = limits.max_head_bytes or 1 << 30
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=size)
        self._dead = False
        self.in_head = False

    def feed(self, data: bytes) -> list[Head | bytes | None]:
        if self._dead:
            raise ProtocolError(400, "the connection already failed to parse")
        try:
            return self._feed(data)
        except ProtocolError:
            self._dead = True
            raise
        except h11.RemoteProtocolError as exc:
            self._dead = True
            # h11 says 501 for a Transfer-Encoding other than chunked; llhttp, and so this
            # front, says 400 to every framing it refuses.
            status = 400 if exc.error_status_hint == 501 else exc.error_status_hint
            raise ProtocolError(status, f"malformed request: {exc}") from None
        except ValueError as exc:  # a Content-Length too long for int()
            self._dead = True
            raise ProtocolError(400, f"malformed request: {exc}") from None

    def _feed(self, data: bytes) -> list[Head | bytes | None]:
        conn = self._conn
        if data:  # to h11, no bytes would mean the end of the stream
            conn.receive_data(data)
        events: list[Head | bytes | None] = []
        while True:
            if conn.their_state is h11.IDLE:
                pending = bytes(conn.trailing_data[0]).lstrip(b"\r\n")
                end = pending.find(b"\r\n\r\n")
                check_head_framing(pending if end < 0 else pending[: end + 2])
                if end >= 0:
                    _check_one_content_length(pending[: end + 2])
                self.in_head = bool(pending)
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return events
            if isinstance(event, h11.Request):
                self.in_head = False
                events.append(self._head(event))
            elif isinstance(event, h11.Data):
                events.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                events.append(END)
                conn.send(h11.Response(status_code=204, headers=[]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return events  # the request ended the connection (Connection: close)
                conn.start_next_cycle()
            else:
                return events

    def _head(self, request: h11.Request) -> Head:
        version = request.http_version.decode("ascii")
        _check_version(version)
        headers = [(bytes(name), bytes(value)) for name, value in request.headers]
        limits = self._limits
        if limits.max_header_count and len(headers) > limits.max_header_count:
            raise ProtocolError(431, "too many request headers")
        size = len(request.target) + sum(len(n) + len(v) + 4 for n, v in headers)
        if limits.max_head_bytes and size > limits.max_head_bytes:
            raise ProtocolError(431, "request head too large")
        length, expect = _describe(headers, version)
        close = any(n == b"connection" and b"close" in v.lower() for n, v in headers)
        return Head(
            method=request.method.decode("ascii"),
            target=bytes(request.target),
            http_version=version,
            headers=headers,
            keep_alive=version == "1.1" and not close,
            content_length=length,
            expect_continue=expect,
            upgrade=any(n == b"upgrade" for n, _ in headers),
        )
