"""RESP2 and the pool's choice, sans-IO, against naive references.

- Any reply tree, written as RESP2 and fed in chunks of any sizes, comes out of the
  pure-Python :class:`ReplyParser` whole and in order, and hiredis' parser (when installed)
  agrees reply for reply.
- :func:`encode_command` is what a naive reference writes.
- :func:`choose_connection` never lets open plus opening connections pass the cap, pipelines
  onto a least loaded connection, and without pipelining hands out only idle ones.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from megatrio._policy._pipeline import Connect, choose_connection
from megatrio._policy._resp import (
    ErrorReply,
    ReplyParser,
    RespProtocolError,
    encode_command,
)

simple_text = st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)
leaves = st.one_of(
    st.binary(max_size=40).map(lambda b: ("bulk", b)),
    simple_text.map(lambda b: ("simple", b)),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda i: ("int", i)),
    st.just(("null", None)),
    # Redis' error messages are ASCII text.
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(
        lambda t: ("error", t)
    ),
)
replies = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4).map(lambda x: ("array", x))
)


def wire(node: tuple[str, Any]) -> bytes:
    kind, value = node
    if kind == "bulk":
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if kind == "simple":
        return b"+%s\r\n" % value
    if kind == "int":
        return b":%d\r\n" % value
    if kind == "null":
        return b"$-1\r\n"
    if kind == "error":
        return b"-%s\r\n" % value.encode()
    return b"*%d\r\n" % len(value) + b"".join(wire(item) for item in value)


def expected(node: tuple[str, Any]) -> Any:
    kind, value = node
    if kind == "array":
        return [expected(item) for item in value]
    if kind == "error":
        return ("error", value)
    return value


def comparable(reply: Any) -> Any:
    if isinstance(reply, ErrorReply):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [comparable(item) for item in reply]
    return reply


def parse_in_chunks(parser: Any, data: bytes, cuts: list[int]) -> list[Any]:
    out = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        parser.feed(data[start:end])
        while (reply := parser.gets()) is not False:
            out.append(comparable(reply))
    return out


@given(st.lists(replies, min_size=1, max_size=6), st.lists(st.integers(0, 10_000), max_size=8))
def test_replies_fed_in_any_chunks_come_out_whole_and_in_order(
    nodes: list[tuple[str, Any]], cuts: list[int]
) -> None:
    data = b"".join(wire(node) for node in nodes)
    want = [expected(node) for node in nodes]
    assert parse_in_chunks(ReplyParser(), data, cuts) == want
    hiredis = pytest.importorskip("hiredis")
    reader = hiredis.Reader(replyError=ErrorReply, protocolError=RespProtocolError)
    assert parse_in_chunks(reader, data, cuts) == want


def test_garbage_is_a_protocol_error() -> None:
    parser = ReplyParser()
    parser.feed(b"?what\r\n")
    with pytest.raises(RespProtocolError, match="unknown reply type"):
        parser.gets()
    parser = ReplyParser()
    parser.feed(b"$3\r\nabcXY")
    with pytest.raises(RespProtocolError, match="CRLF"):
        parser.gets()


args = st.one_of(
    st.binary(max_size=30),
    st.text(max_size=10),
    st.integers(min_value=-(10**12), max_value=10**12),
)


@given(st.lists(args, min_size=1, max_size=6))
def test_commands_are_arrays_of_bulk_strings(command: list[bytes | str | int]) -> None:
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in command]
    reference = b"*%d\r\n" % len(parts) + b"".join(
        b"$" + str(len(p)).encode() + b"\r\n" + p + b"\r\n" for p in parts
    )
    assert encode_command(command) == reference


def test_bad_command_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="cannot be a bool, got True"):
        encode_command(["SET", "k", True])
    with pytest.raises(TypeError, match="must be bytes, str, int or float, got NoneType"):
        encode_command(["GET", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least its name"):
        encode_command([])


@given(
    st.lists(st.integers(0, 100), max_size=10),
    st.integers(0, 5),
    st.integers(1, 12),
    st.booleans(),
    st.integers(1, 4),
)
def test_the_pool_never_passes_its_cap_and_picks_as_documented(
    loads: list[int], connecting: int, cap: int, pipelined: bool, grow_at: int
) -> None:
    index, connect = choose_connection(loads, connecting, cap, pipelined=pipelined, grow_at=grow_at)
    room = len(loads) + connecting < cap
    if connect in (Connect.BACKGROUND, Connect.HERE):
        assert room, "opened a connection past the cap"
    if index is not None:
        assert connect in (Connect.NO, Connect.BACKGROUND)
        if pipelined:
            assert loads[index] == min(loads)
            assert (connect is Connect.BACKGROUND) == (room and loads[index] >= grow_at)
        else:
            assert loads[index] == 0
            assert connect is Connect.NO
    else:
        usable = bool(loads) if pipelined else 0 in loads
        assert not usable
        assert connect is (Connect.HERE if room else Connect.WAIT)
