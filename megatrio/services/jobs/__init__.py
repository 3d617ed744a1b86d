"""Jobs: at-least-once background work on a queue engine (NATS JetStream, or the embedded
in-process driver when no ``nats_url`` is set), consumed by supervised children.

``_driver.py`` is the contract between the consumers and an engine.
"""
