"""Jobs: at-least-once background work on a queue engine (NATS JetStream, or the embedded
in-process driver when no ``nats_url`` is set), consumed by supervised children.

``_driver.py`` is the contract between the consumers and an engine; ``_consumer.py`` the
driver-agnostic consumer child (its decisions are sans-IO, in ``megatrio/_policy/_jobs.py``);
``_embedded.py`` the in-process engine; ``_jobs.py`` the declarations and the ``Jobs`` facade;
``_codec.py`` and ``_envelope.py`` the payload codecs and the dead-letter envelope.
"""
