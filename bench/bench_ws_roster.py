"""WebSocket roster lookups over 10 channels: one command (megatrio's ``Roster.lookup``, a
script reading every channel's set) against 10 sequential ``ZRANGE`` round trips, same client,
same private redis-server, same run.

Run ``python bench/bench_ws_roster.py`` (``--quick`` for fewer lookups). The roster holds 10
channels of 100 members each, written by a real :class:`Roster`; each side looks up all 10
channels, one lookup at a time, and the p50/p99 latency and lookups/s are printed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import markdown_table

from megatrio.services.stores._redis import open_redis
from megatrio.services.ws._roster import Roster, _now_ms
from tests.servers import RedisServer

CHANNELS = [f"room{n}" for n in range(10)]
MEMBERS = 100


async def measure(url: str, lookups: int) -> dict[str, list[float]]:
    async with open_redis(url) as client:
        roster = Roster(client, namespace="bench")
        for channel in CHANNELS:
            for member in range(MEMBERS):
                roster.joined(channel, f"node-{member % 4}:{channel}-{member}")
        await roster._refresh_all()

        async def one_command() -> None:
            found = await roster.lookup(CHANNELS)
            assert all(len(ids) == MEMBERS for ids in found.values())

        async def sequential() -> None:
            now = _now_ms()
            for channel in CHANNELS:
                ids = await client.execute("ZRANGE", roster.key(channel), now, "+inf", "BYSCORE")
                assert isinstance(ids, list)
                assert len(ids) == MEMBERS

        samples: dict[str, list[float]] = {"one command": [], "10 sequential": []}
        sides = {"one command": one_command, "10 sequential": sequential}
        for _ in range(lookups // 100):
            for name, side in sides.items():  # interleaved, 100 at a time
                for _ in range(100):
                    began = time.perf_counter()
                    await side()
                    samples[name].append(time.perf_counter() - began)
        return samples


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 lookups per side")
    args = parser.parse_args(argv)
    lookups = 500 if args.quick else 3000
    print(
        f"megatrio WebSocket roster lookup - Python {platform.python_version()}, "
        f"{len(CHANNELS)} channels x {MEMBERS} members, {lookups:,} lookups per side"
    )
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            samples = trio.run(measure, server.url, lookups)
        finally:
            server.stop()
    rows = []
    for name, times in samples.items():
        ordered = sorted(times)
        p99 = ordered[int(len(ordered) * 0.99)]
        rows.append(
            [
                name,
                f"{statistics.median(ordered) * 1e6:,.0f} us",
                f"{p99 * 1e6:,.0f} us",
                f"{len(ordered) / sum(ordered):,.0f}",
            ]
        )
    print(
        markdown_table(["lookup of 10 channels", "p50", "p99", "lookups/s"], rows, right={1, 2, 3})
    )
    one = statistics.median(samples["one command"])
    seq = statistics.median(samples["10 sequential"])
    print(f"\none command is {seq / one:.1f}x faster at p50 than 10 sequential round trips")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
