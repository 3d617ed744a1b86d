"""megatrio's own server frames are byte for byte what wsproto (trio-websocket's) builds, and
the trio-websocket internals the writer shares its stream through exist."""

from __future__ import annotations

import pytest
import trio_websocket
from wsproto.frame_protocol import FrameProtocol

from megatrio.services.ws._frames import REQUIRED, check_internals, encode_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("kind", ["text", "binary"])
def test_frames_match_wsproto_at_every_length_boundary(size: int, kind: str) -> None:
    message: str | bytes = (
        "é" * (size // 2) + "x" * (size % 2) if kind == "text" else b"\x00" * size
    )
    expected = FrameProtocol(client=False, extensions=[]).send_data(message, fin=True)
    assert encode_frame(message) == expected


def test_the_internals_the_writer_needs_are_there() -> None:
    # A connection object as trio-websocket builds one (its attributes are set in __init__).
    class Stub:
        pass

    stub = Stub()
    with pytest.raises(RuntimeError, match="_stream"):
        check_internals(stub)  # type: ignore[arg-type]
    import inspect

    source = inspect.getsource(trio_websocket.WebSocketConnection.__init__)
    for name in REQUIRED:
        assert name in source or hasattr(trio_websocket.WebSocketConnection, name), name
