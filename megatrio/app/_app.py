"""The App: HTTP routes (Quart), lifecycle hooks and supervised children, served by megatrio.

Two styles, both served with ``megatrio run module:attr``::

    app = megatrio.App("hello")

    @app.get("/")
    async def index():
        return {"hello": "world"}

    @app.every(5.0)
    async def heartbeat():
        logging.getLogger("hello").info("alive")

or a subclass (``megatrio run module:Hello`` instantiates it with no arguments)::

    class Hello(megatrio.App):
        def setup(self):
            self.get("/")(self.index)
            self.add_child(ChildSpec("consumer", self.consume))

        async def on_start(self, rt): ...   # before HTTP starts: open pools, register resources
        async def on_stop(self, rt): ...    # after every child and the HTTP server stopped
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from quart import request

from .._runtime import Runtime
from ..nursery._timer import every
from ..services.http._access import ROUTE_KEY, HttpMetrics
from ..services.http._error_pages import register_error_pages
from ..services.http._quart_classes import quart_app_class
from ..services.http._quart_trio import InlineHTTPConnection, inline_connection_class
from ..services.http._raw import RawRoutes, quart_view
from ..services.jobs._codec import JSON, Codec
from ..services.jobs._driver import JobSettings
from ..services.jobs._jobs import Jobs, JobSpec
from ..services.stores._cache import Cache
from ..services.ws._endpoint import WebSocketEndpoint, WebSocketSettings
from ..services.ws._hub import Hub
from ..supervisor import ChildSpec

if TYPE_CHECKING:
    # nats-py is imported only by a process that uses NATS.
    from ..services.nats._bus import Bus

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """Base class of a megatrio application.

    :attr:`http` is a :class:`quart_trio.QuartTrio` application: everything Quart offers
    (blueprints, ``before_request``, error handlers, ``websocket`` routes) works on it, and
    :meth:`route`, :meth:`get`, :meth:`post`, ... are shortcuts to it.

    Children declared with :meth:`add_child`, :meth:`child` or :meth:`every` (or returned by an
    overridden :meth:`children`) start, in order, after the HTTP server is listening, and stop
    — in reverse order — before it drains. ``/healthz``, ``/readyz`` and the admin listener's
    ``/_megatrio/tree`` are provided by the server.

    404, 405 and 500 are answered as JSON (``{"status", "error", "message"}``) to requests
    whose ``Accept`` prefers ``application/json``, as a small HTML page otherwise; a 500 never
    shows the exception (Quart logs it, redacted). An error handler the app registers for
    one of those statuses (``@app.http.errorhandler(404)``) replaces megatrio's.
    """

    name: str = ""
    """The application's name (default: the class name, lower-cased); names the root
    supervisor and the Quart app."""

    def __init__(self, name: str | None = None) -> None:
        resolved = name or type(self).name or type(self).__name__.lower()
        if not isinstance(resolved, str) or not resolved or "/" in resolved:
            raise ValueError(f"app name must be a non-empty string without '/': {resolved!r}")
        self.name = resolved
        self.http = quart_app_class()(resolved)
        self.http.asgi_http_class = inline_connection_class()
        register_error_pages(self.http)
        if self.http.asgi_http_class is not InlineHTTPConnection:
            self.http.before_request(_record_route)  # else the connection class records it
        self._children: list[ChildSpec] = []
        self._jobs: dict[str, JobSpec] = {}
        self._ws: list[WebSocketEndpoint] = []
        self._hub: Hub | None = None
        self._http_metrics: HttpMetrics | None = None
        self._raw_routes = RawRoutes(
            lambda value: self.http.json.dumps(value, separators=(",", ":"))
        )
        self._rt: Runtime | None = None
        self.setup()

    # -- declaration --------------------------------------------------------------------------

    def setup(self) -> None:
        """Subclass hook, called by ``__init__``: register routes and children here."""

    def route(self, rule: str, *, raw: bool = False, **options: Any) -> Callable[[F], F]:
        """``@app.route(rule, methods=[...])`` — Quart's ``route`` on :attr:`http`.

        With ``raw=True`` the route is a *lean* one: dispatched before Quart and served
        without its request machinery, for hot endpoints. Its handler is called as
        ``await handler(request, **path_params)`` with a :class:`megatrio.RawRequest`, and
        returns what a Quart handler commonly does: ``str`` (``text/html``), ``bytes``, a
        ``dict`` or ``list`` (JSON), or a ``(body, status)``, ``(body, headers)`` or ``(body,
        status, headers)`` tuple. It gets request ids, the access log, metrics by rule, and
        megatrio's error pages (an ``HTTPException`` such as ``abort(404)`` gives its status;
        any other exception a logged 500); not Quart's ``before_request``/``after_request``
        hooks, error handlers, sessions or ``request`` context. A method the lean route does
        not serve goes on to Quart's routes (405 when none serves it); ``GET`` serves
        ``HEAD``. The only option a lean route takes is ``endpoint`` (for ``url_for``).

        Raises:
            TypeError: another option with ``raw=True``.
            ValueError: a malformed rule.
        """
        if raw:
            methods = options.pop("methods", None) or ("GET",)
            return self._raw_route(rule, methods, options)
        return self.http.route(rule, **options)

    def get(self, rule: str, *, raw: bool = False, **options: Any) -> Callable[[F], F]:
        """``@app.get(rule)``: :meth:`route` for ``GET`` (and ``HEAD``); ``raw=True`` for a
        lean route."""
        if raw:
            return self._raw_route(rule, ("GET",), options)
        return self.http.get(rule, **options)

    def post(self, rule: str, *, raw: bool = False, **options: Any) -> Callable[[F], F]:
        """``@app.post(rule)``: :meth:`route` for ``POST``."""
        if raw:
            return self._raw_route(rule, ("POST",), options)
        return self.http.post(rule, **options)

    def put(self, rule: str, *, raw: bool = False, **options: Any) -> Callable[[F], F]:
        """``@app.put(rule)``: :meth:`route` for ``PUT``."""
        if raw:
            return self._raw_route(rule, ("PUT",), options)
        return self.http.put(rule, **options)

    def delete(self, rule: str, *, raw: bool = False, **options: Any) -> Callable[[F], F]:
        """``@app.delete(rule)``: :meth:`route` for ``DELETE``."""
        if raw:
            return self._raw_route(rule, ("DELETE",), options)
        return self.http.delete(rule, **options)

    def patch(self, rule: str, *, raw: bool = False, **options: Any) -> Callable[[F], F]:
        """``@app.patch(rule)``: :meth:`route` for ``PATCH``."""
        if raw:
            return self._raw_route(rule, ("PATCH",), options)
        return self.http.patch(rule, **options)

    def _raw_route(
        self, rule: str, methods: Sequence[str], options: dict[str, Any]
    ) -> Callable[[F], F]:
        endpoint = options.pop("endpoint", None)
        if options:
            raise TypeError(f"a raw route takes no option {', '.join(sorted(options))}")
        if isinstance(methods, str):
            raise TypeError("methods must be a list of method names, not a string")

        def register(handler: F) -> F:
            self._raw_routes.add(rule, methods, handler)
            # Quart knows the rule too: its 405s, OPTIONS and url_for then include it.
            self.http.add_url_rule(
                rule, endpoint or handler.__name__, quart_view(handler), methods=list(methods)
            )
            return handler

        return register

    def add_child(self, spec: ChildSpec) -> ChildSpec:
        """Declare a supervised child. Raises ValueError on a duplicate name."""
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"add_child takes a ChildSpec, got {spec!r}")
        if any(existing.name == spec.name for existing in self._children):
            raise ValueError(f"app {self.name!r} already has a child named {spec.name!r}")
        self._children.append(spec)
        return spec

    def child(self, name: str | None = None, **spec_options: Any) -> Callable[[F], F]:
        """Decorator: declare ``target(*, task_status)`` as a supervised child.

        *spec_options* are :class:`ChildSpec` fields (``restart``, ``shutdown_seconds``, ``args``).
        """

        def register(target: F) -> F:
            self.add_child(ChildSpec(name or target.__name__, target, **spec_options))
            return target

        return register

    def every(
        self, interval_seconds: float, *, name: str | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Decorator: call ``await fn()`` every *interval_seconds* as a supervised timer child.

        *options* are those of :func:`megatrio.every` (``first_tick_seconds``, ``restart``, ...).
        """

        def register(fn: F) -> F:
            self.add_child(every(interval_seconds, fn, name=name or fn.__name__, **options))
            return fn

        return register

    def job(
        self,
        name: str,
        *,
        max_deliver: int | None = None,
        retry_delays: Iterable[float] | None = None,
        ack_wait_seconds: float | None = None,
        concurrency: int | None = None,
        max_in_progress_seconds: float | None = None,
        no_retry: Iterable[type[Exception]] = (),
        codec: Codec = JSON,
    ) -> Callable[[F], F]:
        """Decorator: declare ``async def handler(payload)`` as the handler of job *name*.

        The handler receives the payload as it was given to ``app.jobs.enqueue(name,
        payload)``, after a round trip through *codec* (JSON by default: dicts, lists,
        strings, numbers, booleans and None; a tuple comes back as a list). Its return value
        is ignored. Delivery is at least once: the message is acknowledged only after the
        handler returned, so a handler must tolerate running twice for one message.

        A handler that raises is retried after ``retry_delays[n - 1]`` (the last delay
        repeating) until *max_deliver* deliveries; then — or at once for an exception in
        *no_retry*, or a payload the codec cannot decode — the message goes to the
        dead-letter queue. At most *concurrency* handlers of this job run at once per
        process; a handler running longer than *ack_wait_seconds* keeps its delivery with
        progress signals, for *max_in_progress_seconds* at most. Unset settings take
        :class:`megatrio.JobSettings`' defaults, and a ``[jobs.NAME]`` config table
        overrides them.

        Raises:
            ValueError: a job *name* is declared already, or a setting is invalid.
        """
        given: dict[str, Any] = {
            "max_deliver": max_deliver,
            "retry_delays": None if retry_delays is None else tuple(retry_delays),
            "ack_wait_seconds": ack_wait_seconds,
            "concurrency": concurrency,
            "max_in_progress_seconds": max_in_progress_seconds,
        }
        settings = JobSettings(name, **{k: v for k, v in given.items() if v is not None})
        if name in self._jobs:
            raise ValueError(f"app {self.name!r} already has a job named {name!r}")

        def register(handler: F) -> F:
            if name in self._jobs:
                raise ValueError(f"app {self.name!r} already has a job named {name!r}")
            self._jobs[name] = JobSpec(name, handler, settings, no_retry=no_retry, codec=codec)
            return handler

        return register

    def ws(self, rule: str, **settings: Any) -> WebSocketEndpoint:
        """Declare a WebSocket endpoint on *rule* (``"/chat/<room>"``), served on the HTTP
        port; register its handlers with the decorators of the endpoint returned::

            chat = app.ws("/chat/<room>")

            @chat.on_message
            async def message(conn, data):
                app.hub.broadcast(conn.params["room"], data)

        *settings* are :class:`megatrio.WebSocketSettings`' fields (``max_message_bytes``,
        ``max_buffered_bytes``, ``send_timeout_seconds``, ``ping_interval_seconds``,
        ``ping_timeout_seconds``, ``rate_per_second``, ``json``...). Each connection is a task
        tree under the ``ws`` child: a reader, a writer draining a bounded send queue, a
        heartbeat; see :class:`megatrio.Connection` for what handlers get.

        Raises:
            ValueError: a malformed rule, a rule declared already, or an invalid setting.
            TypeError: an unknown setting or one of the wrong type.
        """
        if any(endpoint.rule == rule for endpoint in self._ws):
            raise ValueError(f"app {self.name!r} already has a WebSocket endpoint {rule!r}")
        endpoint = WebSocketEndpoint(rule, WebSocketSettings(**settings))
        self._ws.append(endpoint)
        return endpoint

    def ws_endpoints(self) -> Sequence[WebSocketEndpoint]:
        """The declared WebSocket endpoints, in declaration order."""
        return tuple(self._ws)

    @property
    def hub(self) -> Hub:
        """The WebSocket hub while the app is served: ``app.hub.broadcast(channel, msg)``,
        ``app.hub.send_to(conn_id, msg)``, ``app.hub.members(channel)``.

        Raises:
            RuntimeError: the app is not being served, or declares no WebSocket endpoint.
        """
        if self._hub is None:
            raise RuntimeError(
                f"app {self.name!r} has no WebSocket hub: it is not being served, or it "
                "declares no endpoint with app.ws(...)"
            )
        return self._hub

    def job_specs(self) -> Iterable[JobSpec]:
        """The declared jobs, in declaration order. Override to compute them."""
        return tuple(self._jobs.values())

    @property
    def jobs(self) -> Jobs:
        """The app's jobs while it is served: ``await app.jobs.enqueue(name, payload)``.

        Raises:
            RuntimeError: the app is not being served. LookupError: it declares no jobs.
        """
        return self.rt.jobs

    @property
    def bus(self) -> Bus:
        """The core-NATS bus while the app is served with ``nats_url``: ``await
        app.bus.publish(subject, data)``, ``async with app.bus.subscribe(subject) as sub``,
        ``await app.bus.request(subject, data, timeout_seconds=...)``. At-most-once: a message
        nobody is subscribed to when it is published is gone (use jobs for work that must
        happen).

        Raises:
            RuntimeError: the app is not being served. LookupError: ``nats_url`` is not set.
        """
        return self.rt.bus

    def children(self) -> Iterable[ChildSpec]:
        """The children to start after HTTP is ready, in order. Override to compute them."""
        return tuple(self._children)

    # -- lifecycle ----------------------------------------------------------------------------

    async def on_start(self, rt: Runtime) -> None:
        """Called once the runtime runs, before the HTTP server starts.

        Register resources with ``await rt.enter_async_context(...)``; they close after
        :meth:`on_stop`. An exception here is fatal: the process exits 1.
        """

    async def on_stop(self, rt: Runtime) -> None:
        """Called after every child and the HTTP server have stopped, before resources close."""

    def cache(self, alias: str = "default") -> Cache:
        """The cache *alias* configured for this app (``[cache.<alias>]`` in the config).

        Raises:
            RuntimeError: the app is not being served. LookupError: no such cache.
        """
        cache = self.rt.cache(alias)
        assert isinstance(cache, Cache)  # only open_cache registers caches
        return cache

    @property
    def rt(self) -> Runtime:
        """The runtime serving this app. Raises RuntimeError when it is not being served."""
        if self._rt is None:
            raise RuntimeError(f"app {self.name!r} is not being served")
        return self._rt

    def _attach(self, rt: Runtime | None) -> None:
        self._rt = rt

    def asgi(self) -> Callable[..., Awaitable[None]]:
        """The ASGI application behind the routes (the Quart app)."""
        return self.http

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


async def _record_route() -> None:
    # The matched rule's template, for the request metrics (a bounded label, unlike the path).
    rule = request.url_rule
    if rule is not None:
        cast(dict[str, Any], request.scope)[ROUTE_KEY] = rule.rule
