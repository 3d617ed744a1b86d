"""HTTP serving: the listener child and its accept loop, sockets, the admin listener, error
pages, proxy headers. hypercorn's internals are used in ``_hypercorn`` only.

Private: the public names are re-exported from :mod:`megatrio`.
"""
