"""The supervised task tree's mechanisms: one child's lifecycle, signals, timers, errors.

The public names are re-exported from :mod:`megatrio`.
"""
