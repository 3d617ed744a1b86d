"""What megatrio tells people: the structured, redacting logging pipeline and the rendering
of supervision trees. Every other service may use it.

Private: the public names are re-exported from :mod:`megatrio`.
"""
