"""Error alerts: ERROR log records, redacted, sent to Telegram or a webhook.

The path of an alert::

    logging call ──► AlertHandler (redact, bounded buffer) ──► AlertDispatcher round
        ──► throttle (token bucket) ──► AlertSender (HTTP POST) ──► failure: RetryQueue (file)
                                                  ▲                              │
                                                  └──── periodic drain ◄─────────┘

Modules: ``_alert`` (the shared vocabulary: ``Alert``, ``truncate``, the ``AlertSender``
protocol and ``SendResult``), ``_handler`` (the logging handler), ``_senders`` (the HTTP
senders; the only httpx import) and ``_dispatcher`` (the throttled dispatcher child); failed
sends wait in the retry queue of :mod:`..stores`.

Every bound drops and counts: the buffer (``"buffer_full"``), the throttle (``"throttled"``),
the retry queue (``"too_many"``, ``"too_old"``, ``"corrupt"``), and a failed write to the retry
queue (``"queue_error"``). Nothing unredacted leaves the process.

Private: the public names are re-exported from :mod:`megatrio`.
"""
