"""Sans-IO policies: restart windows, backoff and other caps.

Nothing in this package imports an event loop; every function that depends on time takes ``now``
as an argument, so Hypothesis can drive the policies directly.
"""
