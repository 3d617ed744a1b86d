"""The exception family. Every error megatrio raises on purpose is a MegatrioError."""

from __future__ import annotations


class MegatrioError(Exception):
    """Root of every exception megatrio raises on purpose."""


class StartupFailed(MegatrioError):
    """A child failed before it reported readiness with ``task_status.started()``.

    Raised by :meth:`Supervisor.run` (an initial child failed: the children already started are
    stopped in reverse order first) and by :meth:`Supervisor.start_child`. The child's own error
    is the ``__cause__``. :attr:`child` names the child.
    """

    def __init__(self, child: str, reason: str) -> None:
        super().__init__(f"child {child!r} failed to start: {reason}")
        self.child = child


class RestartIntensityExceeded(MegatrioError):
    """A supervisor needed more restarts than its intensity allows, and gave up.

    Raised by :meth:`Supervisor.run` after every child has been stopped in reverse order; the
    last child error is the ``__cause__``. A parent supervisor treats it as that child's crash,
    which is how OTP escalates.
    """

    def __init__(self, supervisor: str, max_restarts: int, period_seconds: float) -> None:
        super().__init__(
            f"supervisor {supervisor!r} gave up: more than {max_restarts} restart(s) "
            f"within {period_seconds:g} s"
        )
        self.supervisor = supervisor
        self.max_restarts = max_restarts
        self.period_seconds = period_seconds


class SupervisorNotRunning(MegatrioError):
    """An operation that needs a running supervisor was called on one that is not running."""


class BackendUnavailable(MegatrioError):
    """A backing service (Redis, NATS) could not be reached, or did not answer in time.

    Raised by :func:`megatrio.open_redis` when the first PING fails and by
    :func:`megatrio.open_nats` when the first connection attempt fails; the stores built on
    Redis raise its subclasses. The backend's own error is the ``__cause__``. Messages name
    the backend's URL with its credentials redacted.
    """


class ConfigError(MegatrioError, ValueError):
    """Configuration is invalid: the message names the file or variable, the key and the value.

    Raised by :func:`megatrio.load_config` before anything starts.
    """


class AppNotFound(MegatrioError):
    """``megatrio run module:attr`` named a module or attribute that does not exist, or an
    object that is not a :class:`megatrio.App`."""


class AppLoadError(MegatrioError):
    """The app's own code raised while megatrio imported its module or built the App: an
    import or syntax error in the module, or its constructor, ``setup()`` or factory raised.

    Raised by ``megatrio run`` and ``megatrio console`` before anything starts. The app's
    exception is the ``__cause__``; :attr:`target` is the target as given.
    """

    def __init__(self, target: str, error: BaseException) -> None:
        text = str(error)
        reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
        super().__init__(f"cannot load {target!r}: {reason}")
        self.target = target


class ListenError(MegatrioError, OSError):
    """A listening socket could not be bound: the address is in use, its host does not resolve
    or is not on this machine, permission was denied, ...

    Raised by :func:`megatrio.serve_app` (and ``megatrio run``) before anything starts, so no
    listener is ever served while another could not be bound. :attr:`address` is the bind
    string as configured; the OS error is the ``__cause__``, and ``errno`` is its errno.
    """

    def __init__(self, address: str, error: OSError) -> None:
        super().__init__(error.errno, error.strerror)
        self.address = address
        self._reason = str(error)

    def __str__(self) -> str:
        return f"cannot listen on {self.address}: {self._reason}"
