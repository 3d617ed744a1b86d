"""NATS: nats-py on an asyncio loop bridged under trio (``_bridge.py``), the connection with
its reconnect state (``_connection.py``), and the at-most-once core-NATS bus (``_bus.py``).

Private: the public names are re-exported from :mod:`megatrio`.
"""
