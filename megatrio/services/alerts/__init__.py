"""Error alerts: a logging handler that never blocks, senders (Telegram, webhooks) and the
throttled dispatcher child; failed sends wait in a retry queue (:mod:`..stores`).

Private: the public names are re-exported from :mod:`megatrio`.
"""
