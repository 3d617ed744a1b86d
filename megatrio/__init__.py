"""megatrio: a structured-concurrency service runtime with OTP supervision.

Every long-lived piece of a service runs as a supervised task in one tree; shutdown is a
cancel-scope deadline and restarts follow Erlang/OTP supervisor semantics.
"""

from ._exceptions import MegatrioError as MegatrioError
from ._exceptions import RestartIntensityExceeded as RestartIntensityExceeded
from ._exceptions import StartupFailed as StartupFailed
from ._exceptions import SupervisorNotRunning as SupervisorNotRunning
from ._runtime import Runtime as Runtime
from ._runtime import mega_runtime as mega_runtime
from ._timers import every as every
from ._tree import format_tree as format_tree
from .nursery._child import ChildContext as ChildContext
from .nursery._child import current_child as current_child
from .supervisor import NO_BACKOFF as NO_BACKOFF
from .supervisor import Backoff as Backoff
from .supervisor import ChildSpec as ChildSpec
from .supervisor import Restart as Restart
from .supervisor import RestartWindow as RestartWindow
from .supervisor import Strategy as Strategy
from .supervisor import Supervisor as Supervisor
from .supervisor import ready_immediately as ready_immediately

__version__ = "0.1.0"

__all__ = (
    "NO_BACKOFF",
    "Backoff",
    "ChildContext",
    "ChildSpec",
    "MegatrioError",
    "Restart",
    "RestartIntensityExceeded",
    "RestartWindow",
    "Runtime",
    "StartupFailed",
    "Strategy",
    "Supervisor",
    "SupervisorNotRunning",
    "current_child",
    "every",
    "format_tree",
    "mega_runtime",
    "ready_immediately",
)
