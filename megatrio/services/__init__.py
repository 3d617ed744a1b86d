"""Long-lived services built on the supervised tree (WebSocket hub, jobs, bus, caches, ...).

Each service is a supervised child: it reports readiness through ``task_status.started()``
and stops when its :class:`~megatrio.ChildContext` asks it to.
"""
