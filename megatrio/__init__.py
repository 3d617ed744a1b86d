"""megatrio: a structured-concurrency service runtime with OTP supervision.

Every long-lived piece of a service runs as a supervised task in one tree; shutdown is a
cancel-scope deadline and restarts follow Erlang/OTP supervisor semantics.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._config import Config as Config
from ._config import load_config as load_config
from ._exceptions import AppNotFound as AppNotFound
from ._exceptions import BackendUnavailable as BackendUnavailable
from ._exceptions import ConfigError as ConfigError
from ._exceptions import ListenError as ListenError
from ._exceptions import MegatrioError as MegatrioError
from ._exceptions import RestartIntensityExceeded as RestartIntensityExceeded
from ._exceptions import StartupFailed as StartupFailed
from ._exceptions import SupervisorNotRunning as SupervisorNotRunning
from ._policy._nonces import NonceVerdict as NonceVerdict
from ._policy._throttle import TokenBucket as TokenBucket
from ._runtime import Runtime as Runtime
from ._runtime import mega_runtime as mega_runtime
from ._samples import Sample as Sample
from ._samples import counter_sample as counter_sample
from ._samples import gauge_sample as gauge_sample
from ._util import fixup_module_metadata as _fixup_module_metadata
from .app._app import App as App
from .app._serve import Serving as Serving
from .app._serve import serve_app as serve_app
from .nursery._child import ChildContext as ChildContext
from .nursery._child import current_child as current_child
from .nursery._timer import every as every
from .services.alerts._alert import AlertSender as AlertSender
from .services.alerts._alert import SendResult as SendResult
from .services.http._raw_request import RawRequest as RawRequest
from .services.jobs._codec import Codec as Codec
from .services.jobs._codec import JsonCodec as JsonCodec
from .services.jobs._driver import DeadLetter as DeadLetter
from .services.jobs._driver import Delivery as Delivery
from .services.jobs._driver import JobDriver as JobDriver
from .services.jobs._driver import JobSettings as JobSettings
from .services.jobs._driver import Settle as Settle
from .services.jobs._embedded import EmbeddedDriver as EmbeddedDriver
from .services.jobs._jobs import Jobs as Jobs
from .services.jobs._jobs import JobSpec as JobSpec
from .services.logs._levels import LogFormat as LogFormat
from .services.logs._levels import LogLevel as LogLevel
from .services.logs._logging import configure_logging as configure_logging
from .services.logs._redact import Redactor as Redactor
from .services.logs._tree import format_tree as format_tree
from .services.stores._cache import Cache as Cache
from .services.stores._cache import CacheDriver as CacheDriver
from .services.stores._cache import MemoryCache as MemoryCache
from .services.stores._cache import open_cache as open_cache
from .services.stores._file_cache import FileCache as FileCache
from .services.stores._nonce import MemoryNonceStore as MemoryNonceStore
from .services.stores._nonce import NonceStore as NonceStore
from .services.stores._nonce import open_nonces as open_nonces
from .services.stores._retry_queue import DrainSummary as DrainSummary
from .services.stores._retry_queue import QueuedEntry as QueuedEntry
from .services.stores._retry_queue import RetryQueue as RetryQueue
from .services.ws._connection import Connection as Connection
from .services.ws._endpoint import Reject as Reject
from .services.ws._endpoint import WebSocketEndpoint as WebSocketEndpoint
from .services.ws._endpoint import WebSocketSettings as WebSocketSettings
from .services.ws._hub import Hub as Hub
from .supervisor import NO_BACKOFF as NO_BACKOFF
from .supervisor import Backoff as Backoff
from .supervisor import ChildSpec as ChildSpec
from .supervisor import Restart as Restart
from .supervisor import RestartWindow as RestartWindow
from .supervisor import Strategy as Strategy
from .supervisor import Supervisor as Supervisor
from .supervisor import ready_immediately as ready_immediately

if _TYPE_CHECKING:
    from .services.alerts._dispatcher import serve_alerts as serve_alerts
    from .services.alerts._handler import AlertHandler as AlertHandler
    from .services.alerts._senders import TelegramSender as TelegramSender
    from .services.alerts._senders import WebhookSender as WebhookSender
    from .services.nats._bus import Bus as Bus
    from .services.nats._bus import BusMessage as BusMessage
    from .services.nats._bus import Subscription as Subscription
    from .services.nats._connection import NatsConnection as NatsConnection
    from .services.nats._connection import open_nats as open_nats
    from .services.stores._redis import CacheUnavailable as CacheUnavailable
    from .services.stores._redis import NonceStoreUnavailable as NonceStoreUnavailable
    from .services.stores._redis import open_redis as open_redis
    from .services.stores._redis_cache import RedisCache as RedisCache
    from .services.stores._redis_nonce import RedisNonceStore as RedisNonceStore

# Names whose modules pull in heavy clients (coredis, httpx, nats-py), with the rest of the
# alert path: imported on first use, so a process that uses neither Redis, NATS nor alerts does
# not carry them (memory, GC work). The alert path's Protocol and result type are light and eager.
_LAZY = {
    "AlertHandler": ".services.alerts._handler",
    "TelegramSender": ".services.alerts._senders",
    "WebhookSender": ".services.alerts._senders",
    "serve_alerts": ".services.alerts._dispatcher",
    "Bus": ".services.nats._bus",
    "BusMessage": ".services.nats._bus",
    "Subscription": ".services.nats._bus",
    "NatsConnection": ".services.nats._connection",
    "open_nats": ".services.nats._connection",
    "CacheUnavailable": ".services.stores._redis",
    "NonceStoreUnavailable": ".services.stores._redis",
    "RedisCache": ".services.stores._redis_cache",
    "RedisNonceStore": ".services.stores._redis_nonce",
    "open_redis": ".services.stores._redis",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'megatrio' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    _fixup_module_metadata(__name__, {name: value})
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = (
    "NO_BACKOFF",
    "AlertHandler",
    "AlertSender",
    "App",
    "AppNotFound",
    "BackendUnavailable",
    "Backoff",
    "Bus",
    "BusMessage",
    "Cache",
    "CacheDriver",
    "CacheUnavailable",
    "ChildContext",
    "ChildSpec",
    "Codec",
    "Config",
    "ConfigError",
    "Connection",
    "DeadLetter",
    "Delivery",
    "DrainSummary",
    "EmbeddedDriver",
    "FileCache",
    "Hub",
    "JobDriver",
    "JobSettings",
    "JobSpec",
    "Jobs",
    "JsonCodec",
    "ListenError",
    "LogFormat",
    "LogLevel",
    "MegatrioError",
    "MemoryCache",
    "MemoryNonceStore",
    "NatsConnection",
    "NonceStore",
    "NonceStoreUnavailable",
    "NonceVerdict",
    "QueuedEntry",
    "RawRequest",
    "Redactor",
    "RedisCache",
    "RedisNonceStore",
    "Reject",
    "Restart",
    "RestartIntensityExceeded",
    "RestartWindow",
    "RetryQueue",
    "Runtime",
    "Sample",
    "SendResult",
    "Serving",
    "Settle",
    "StartupFailed",
    "Strategy",
    "Subscription",
    "Supervisor",
    "SupervisorNotRunning",
    "TelegramSender",
    "TokenBucket",
    "WebSocketEndpoint",
    "WebSocketSettings",
    "WebhookSender",
    "configure_logging",
    "counter_sample",
    "current_child",
    "every",
    "format_tree",
    "gauge_sample",
    "load_config",
    "mega_runtime",
    "open_cache",
    "open_nats",
    "open_nonces",
    "open_redis",
    "ready_immediately",
    "serve_alerts",
    "serve_app",
)

_fixup_module_metadata(__name__, {n: v for n, v in globals().items() if n in __all__})
