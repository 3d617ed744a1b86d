"""The fast front's HTTP/1.1 parsers, sans-IO: however a byte stream is split into reads, the
same requests come out; llhttp and the h11 fallback agree; ambiguous framing is refused."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from megatrio.services.http._h1parse import (
    END,
    Head,
    Limits,
    ProtocolError,
    _H11Parser,
    _HttptoolsParser,
)

PARSERS = (_HttptoolsParser, _H11Parser)

names = st.sampled_from([b"Accept", b"X-Id", b"User-Agent", b"Cookie", b"X-Empty"])
values = st.binary(max_size=20).map(
    lambda v: bytes(b for b in v if 0x21 <= b <= 0x7E)  # visible ASCII: valid in both parsers
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, tuple[str, bytes, list[tuple[bytes, bytes]], bytes]]:
    """One valid request and what a parser must report for it (method, target, headers, body)."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    target = b"/" + draw(st.sampled_from([b"", b"a", b"a/b?c=d", b"%20x"]))
    headers = [(b"host", b"example")]
    headers += [(n.lower(), v) for n, v in draw(st.lists(st.tuples(names, values), max_size=4))]
    body = draw(st.binary(max_size=50)) if method in ("POST", "PUT") else b""
    chunked = bool(body) and draw(st.booleans())
    lines = [f"{method} ".encode() + target + b" HTTP/1.1"]
    lines += [n + b": " + v for n, v in headers]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        payload = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    elif body:
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    else:
        payload = b""
    wire = b"\r\n".join(lines) + b"\r\n\r\n" + payload
    expected_headers = [*headers]
    if chunked:
        expected_headers.append((b"transfer-encoding", b"chunked"))
    elif body:
        expected_headers.append((b"content-length", str(len(body)).encode()))
    return wire, (method, target, expected_headers, body)


def parse(parser_class: type, wire: bytes, cuts: list[int]) -> list[tuple[object, ...]]:
    """Feed *wire* cut at *cuts*; the requests seen, each with its whole body."""
    parser = parser_class(Limits())
    seen: list[tuple[object, ...]] = []
    body = b""
    head: Head | None = None
    bounds = [0, *sorted(set(cuts)), len(wire)]
    for start, stop in itertools.pairwise(bounds):
        for event in parser.feed(wire[start:stop]):
            if isinstance(event, Head):
                head, body = event, b""
            elif event is END:
                assert head is not None
                seen.append((head.method, head.target, head.headers, body))
            else:
                assert isinstance(event, bytes)
                body += event
    return seen


@given(
    pipeline=st.lists(requests(), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_any_split_of_a_pipeline_yields_the_same_requests_on_both_parsers(
    pipeline: list[tuple[bytes, tuple[str, bytes, list[tuple[bytes, bytes]], bytes]]],
    cuts: list[int],
) -> None:
    wire = b"".join(w for w, _ in pipeline)
    cuts = [c for c in cuts if c < len(wire)]
    expected = [tuple(e) for _, e in pipeline]
    for parser_class in PARSERS:
        assert parse(parser_class, wire, cuts) == expected, parser_class.__name__


FAULTS = [
    b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    b"Content-Length: 3\r\nContent-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"X-Fold: a\r\n b\r\n",
    b"X-Fold: a\r\n\tb\r\n",
    b"X-Bare-LF: a\n",
    b"X-Bare-CR: a\rb\r\n",
]


@given(
    fault=st.sampled_from(FAULTS),
    position=st.integers(0, 3),
    cut=st.floats(0, 1),
    first=requests(),
)
def test_ambiguous_framing_is_refused_wherever_it_is_and_however_it_is_split(
    fault: bytes,
    position: int,
    cut: float,
    first: tuple[bytes, object],
) -> None:
    """Also behind a valid pipelined request: the whole connection is refused at the fault,
    even when the faulty head arrives whole before its body (*cut* is where the bytes are
    split, as a fraction of them)."""
    lines = [b"POST /x HTTP/1.1\r\n", b"Host: h\r\n", b"A: b\r\n", b"C: d\r\n"]
    lines.insert(position + 1, fault)
    bad = b"".join(lines) + b"\r\n0\r\n\r\n"
    wire = first[0] + bad
    split = max(1, round(cut * len(wire)))
    for parser_class in PARSERS:
        parser = parser_class(Limits())
        refused = None
        served = []
        for chunk in (wire[:split], wire[split:]):
            try:
                served += [e for e in parser.feed(chunk) if isinstance(e, Head)]
            except ProtocolError as exc:
                refused = exc
                break
        assert refused is not None, parser_class.__name__
        assert refused.status == 400, (parser_class.__name__, refused.reason)
        assert all(head.target != b"/x" for head in served), parser_class.__name__


def test_a_repeated_content_length_is_refused_at_every_split_before_any_head_is_served() -> None:
    """h11 itself merges equal repeated lengths: the head must be refused even when it
    arrives whole before its body."""
    wire = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc"
    for parser_class in PARSERS:
        for split in range(1, len(wire) + 1):
            parser = parser_class(Limits())
            served = []
            with pytest.raises(ProtocolError) as refused:  # either feed may refuse
                for chunk in (wire[:split], wire[split:]):
                    served += [e for e in parser.feed(chunk) if isinstance(e, Head)]
            assert refused.value.status == 400
            assert served == [], (parser_class.__name__, split)
