"""Small Redis helpers for the integration tests, on the client under test's raw commands."""

from __future__ import annotations

from megatrio.services.stores._redis import RedisClient


async def raw_keys(client: RedisClient, pattern: str = "*") -> set[bytes]:
    reply = await client.execute("KEYS", pattern)
    assert isinstance(reply, list)
    return {key for key in reply if isinstance(key, bytes)}


async def pttl(client: RedisClient, key: str) -> int:
    reply = await client.execute("PTTL", key)
    assert isinstance(reply, int)
    return reply


async def client_list(client: RedisClient) -> list[dict[str, str]]:
    """CLIENT LIST as one dict a connection (``id``, ``name``, ``cmd``, ...)."""
    reply = await client.execute("CLIENT", "LIST")
    assert isinstance(reply, bytes)
    clients = []
    for line in reply.decode().splitlines():
        fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
        clients.append(fields)
    return clients
