"""Bounded stores: the cache facade and its memory, file and Redis drivers, the nonce stores,
the retry queue. Each has a hard bound and a cleaner that runs as a supervised child.

Private: the public names are re-exported from :mod:`megatrio`.
"""
