"""A served App's NATS: one connection per process, shared by the bus and the jobs engine.

With ``nats_url`` set, :func:`open_connection` opens the connection once per runtime (a
runtime resource) with its supervised ``nats`` status child, and :func:`open_bus` installs
``rt.bus`` on it; :func:`~megatrio.app._jobs.open_jobs` runs the JetStream engine on the same
connection. A process therefore shows one client to the server and one ``nats`` child in its
tree, whatever uses NATS.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from .._config import Config
from .._runtime import Runtime
from ..supervisor import ChildSpec

if TYPE_CHECKING:
    from ..services.nats._bus import Bus
    from ..services.nats._connection import NatsConnection

# The connection each runtime opened, for as long as it is open: the second caller gets the
# first one's connection instead of opening another. Weak, so a runtime that is gone (its
# closer already removed the entry, or a test dropped it) keeps nothing alive.
_connections: weakref.WeakKeyDictionary[Runtime, NatsConnection] = weakref.WeakKeyDictionary()


async def open_connection(rt: Runtime, config: Config, name: str) -> NatsConnection | None:
    """The NATS connection of *rt*: None without ``config.nats_url``; otherwise the one opened
    on *rt* already, or a new one (client *name*) entered with ``rt.enter_async_context`` —
    so it closes after every child and after the resources opened later on it (the jobs
    engine) — with the supervised child ``nats`` reporting its state and reconnects.

    Called from the serving task, one call at a time (concurrent first calls would each open
    a connection).

    Raises:
        megatrio.BackendUnavailable: NATS cannot be reached.
    """
    if not config.nats_url:
        return None
    existing = _connections.get(rt)
    if existing is not None:
        return existing
    # nats-py is imported only by a process that uses NATS.
    from ..services.nats._connection import open_nats, serve_nats_status

    conn = await rt.enter_async_context(open_nats(config.nats_url, name=name))
    _connections[rt] = conn
    # Pushed after the connection, so it runs before the connection closes: nothing finds a
    # closing connection through this map.
    rt.push_async_callback(_forget, rt, conn)
    await rt.start_child(ChildSpec("nats", serve_nats_status, (conn,)))
    return conn


async def open_bus(rt: Runtime, config: Config, name: str) -> Bus | None:
    """Install ``rt.bus``, the at-most-once core-NATS bus on *rt*'s connection
    (:func:`open_connection`), until the runtime stops; None (and nothing opened) without
    ``config.nats_url``.

    Raises:
        megatrio.BackendUnavailable: NATS cannot be reached.
    """
    conn = await open_connection(rt, config, name)
    if conn is None:
        return None
    from ..services.nats._bus import Bus

    bus = Bus(conn)
    rt.install_bus(bus)
    rt.push_async_callback(_uninstall_bus, rt, bus)
    return bus


async def _forget(rt: Runtime, conn: NatsConnection) -> None:
    if _connections.get(rt) is conn:
        del _connections[rt]


async def _uninstall_bus(rt: Runtime, bus: Bus) -> None:
    rt.uninstall_bus(bus)
