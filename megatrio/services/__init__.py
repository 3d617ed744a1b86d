"""Long-lived services built on the supervised tree, one package each: ``http`` (serving),
``stores`` (caches, nonces, the retry queue), ``alerts``, ``logs`` (logging, redaction, tree
rendering). Each long-lived piece is a supervised child: it reports readiness through
``task_status.started()`` and stops when its :class:`~megatrio.ChildContext` asks it to.

A service imports no other service except ``logs``, and ``alerts`` the retry queue of
``stores`` (see docs/architecture.md).
"""
