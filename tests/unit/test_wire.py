"""SocketWire: a fast connection's reads and writes on its socket's fd, over real socket pairs."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.lowlevel
import trio.testing

from megatrio.services.http._wire import SocketWire

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    a, b = trio.socket.socketpair()
    return a, b


async def test_the_prefix_comes_first_then_the_socket_then_eof() -> None:
    ours, theirs = pair()
    with ours, theirs:
        wire = SocketWire(ours, b"already read ")
        await theirs.send(b"then this")
        assert await wire.receive_some(100) == b"already read "
        assert await wire.receive_some(100) == b"then this"
        theirs.shutdown(socket.SHUT_WR)
        assert await wire.receive_some(100) == b""


async def test_a_receive_waits_until_bytes_arrive_and_is_cancellable() -> None:
    ours, theirs = pair()
    with ours, theirs:
        wire = SocketWire(ours)
        with trio.move_on_after(0.05) as scope:
            await wire.receive_some(100)
        assert scope.cancelled_caught
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def receive() -> None:
                got.append(await wire.receive_some(100))

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            await theirs.send(b"x")
        assert got == [b"x"]


async def test_a_send_the_kernel_takes_whole_is_no_checkpoint_unless_asked() -> None:
    ours, theirs = pair()
    with ours, theirs:
        wire = SocketWire(ours)
        with trio.testing.assert_no_checkpoints():
            await wire.send_all(b"last piece")
        with trio.testing.assert_checkpoints():
            await wire.send_all(b" and more", checkpoint=True)
        assert await theirs.recv(100) == b"last piece and more"


async def test_a_send_larger_than_the_buffers_waits_for_the_reader_and_keeps_every_byte() -> None:
    ours, theirs = pair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        payload = bytes(range(256)) * 8192  # 2 MiB: many partial writes
        wire = SocketWire(ours)
        received = bytearray()

        async def read_slowly() -> None:
            while len(received) < len(payload):
                received.extend(await theirs.recv(65536))
                await trio.lowlevel.checkpoint()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_slowly)
                await wire.send_all(payload)
        assert bytes(received) == payload


async def test_a_peer_that_resets_breaks_the_wire() -> None:
    ours, theirs = pair()
    with ours:
        wire = SocketWire(ours)
        theirs.close()
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(100):  # the first write may still be buffered
                await wire.send_all(b"x" * 65536)
        assert await wire.receive_some(100) == b""  # a closed peer reads as EOF


async def test_a_socket_closed_by_another_task_never_reaches_the_fd_number_reused_since() -> None:
    ours, theirs = pair()
    wire = SocketWire(ours)
    fd = ours.fileno()
    ours.close()
    # A new connection may get the old number at once; the wire must not write to it.
    a, b = socket.socketpair()
    with a, b, theirs:
        assert fd in (a.fileno(), b.fileno())
        with pytest.raises(trio.ClosedResourceError):
            await wire.send_all(b"not for you")
        with pytest.raises(trio.ClosedResourceError):
            await wire.receive_some(100)
        for s in (a, b):
            with pytest.raises(BlockingIOError):
                s.recv(100, socket.MSG_DONTWAIT)


async def test_a_receive_waiting_when_the_socket_is_closed_wakes_with_closed() -> None:
    ours, theirs = pair()
    wire = SocketWire(ours)
    with theirs:
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await wire.receive_some(100)

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            ours.close()


async def test_a_send_blocked_on_a_peer_that_never_reads_wakes_when_the_socket_is_closed() -> None:
    ours, theirs = pair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    wire = SocketWire(ours)
    with theirs, trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def send_forever() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await wire.send_all(b"x" * (8 << 20))

            nursery.start_soon(send_forever)
            await trio.testing.wait_all_tasks_blocked()
            ours.close()  # what the listener does to stragglers at the end of a stop
