"""The App (routes, hooks, children) and the wiring that serves one: listeners, stores,
readiness. Above the services and the runtime; below the CLI.
"""

from ._app import App as App
