"""The Quart-Trio application: lifespan (the pooled upstream client), auth, errors, per-request scope."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from werkzeug.exceptions import HTTPException

from proxycast import api, formats
from proxycast.accounting.records import Accounting
from proxycast.api import admin, root
from proxycast.api.responses_store import ResponseStore
from proxycast.config import Config
from proxycast.core.exchange import Exchange
from proxycast.core.scope import request_scope
from proxycast.errors import (
    MethodNotAllowedError,
    ProxycastError,
    RouteNotFoundError,
)
from proxycast.formats.contracts import bearer_or_api_key
from proxycast.home import data_dir
from proxycast.http import cors
from proxycast.http.gate import Gate, internal_error
from proxycast.http.quart import to_quart
from proxycast.http.router import Router
from proxycast.http.serving import Serving
from proxycast.ui import api as ui_api
from proxycast.ui import pages as ui_pages
from proxycast.upstream.catalog import Catalog
from proxycast.upstream.provider import make_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import httpx
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

    from proxycast.core.overload import Overload

log = logging.getLogger("proxycast")

_SERVING = "proxycast.serving"
GENERATION = "proxycast.generation"
"""``app.extensions[GENERATION]``: the :class:`Generation` serving new requests."""
STORE = "proxycast.store"
"""``app.extensions[STORE]``: the Responses store (None: off), kept by every generation."""
HOP_MARK = "proxycast.hop_mark"
CLIENT = "proxycast.client"
"""``app.extensions[CLIENT]``: the worker's pooled upstream client (once connected)."""
OVERLOAD = "proxycast.overload"
"""``app.extensions[OVERLOAD]``: the worker's overload manager, or None (``/health`` reads it)."""
CLOSERS = "proxycast.closers"
"""``app.extensions[CLOSERS]``: what the app opened and the server closes when it stops
(:func:`close_resources`; not a ``while_serving`` generator, which a cancelled server never
finishes)."""


class _HTTPConnection(TrioASGIHTTPConnection):
    """A request Quart serves (the dashboard, ``/health``, ``/metrics``), inside a resource stack
    owned by the request (its accounting record the last of them).

    quart closes a streamed body when it gets to send it; a cancellation that lands between the handler
    returning and the body being entered (the client gone at that very moment) would leave the upstream
    response open. The stack closes it, shielded, whatever happened.
    """

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        accounts: Accounting = self.app.extensions["proxycast_accounting"]
        await accounted(accounts, self.scope, receive, send, self._serve)

    async def _serve(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        await super().__call__(receive, send)


async def accounted(
    accounts: Accounting,
    scope: HTTPScope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    serve: Callable[[HTTPScope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]],
) -> None:
    """Serve one HTTP request inside its resource scope, with its accounting record: the ``send``
    that ``serve`` gets adds ``x-request-id`` and sees the answer go out, and the record is the last
    thing the scope closes (after everything the request held)."""
    async with request_scope() as resources:
        tracking = accounts.request(scope, send)
        resources.push_async_callback(tracking)
        await serve(scope, receive, tracking.tracked)


class _Gateway(QuartTrio):
    """The app. A request to the router's paths (every API surface: ``/v1/...``), HTTP or WebSocket,
    is served by ``proxycast.http.serving`` as hypercorn hands it over, in the same resource scope as
    :class:`_HTTPConnection`'s; every other goes through Quart."""

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            serving: Serving = self.extensions[_SERVING]
            path = serving.path(scope)
            if path is not None:
                accounts: Accounting = self.extensions["proxycast_accounting"]
                async with request_scope() as resources:  # as accounted(), one call less: hot
                    tracking = accounts.request(scope, send)
                    resources.push_async_callback(tracking)
                    await serving.http(scope, receive, tracking.tracked, path)
                return
        elif scope["type"] == "websocket":  # any path: a router's route, or a clean refusal
            async with request_scope():
                await self.extensions[_SERVING].websocket(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


@attrs.frozen(eq=False)
class Generation:
    """What one configuration makes of the app: the objects a request takes at its start and keeps
    to its end. A reload (:mod:`proxycast.server.reload`) builds another and installs it (:func:`install`)
    in one step; requests in flight keep the one they started with."""

    config: Config
    exchange: Exchange
    accounts: Accounting
    catalog: Catalog
    gate: Gate
    serving: Serving


def assemble(
    config: Config,
    exchange: Exchange,
    accounts: Accounting,
    catalog: Catalog,
    store: ResponseStore | None,
    hop_mark: str | None,
) -> Generation:
    """The gate, the handlers and the router of a configuration's exchange and accounting."""
    gate = Gate(config, exchange, accounts, hop_mark)
    handlers = api.handlers(exchange, catalog, store)
    router = Router.from_registry(formats.DIALECTS, handlers)
    serving = Serving(config, router, gate, exchange.overload)
    return Generation(config, exchange, accounts, catalog, gate, serving)


def install(app: QuartTrio, generation: Generation) -> None:
    """Make ``generation`` the one new requests get (no await in here: no request sees half of it)."""
    app.extensions[GENERATION] = generation
    app.extensions[_SERVING] = generation.serving
    app.extensions["proxycast"] = generation.exchange
    app.extensions["proxycast.catalog"] = generation.catalog
    app.extensions["proxycast_accounting"] = generation.accounts
    app.config["MAX_CONTENT_LENGTH"] = generation.config.server.max_body_bytes


def close_resources(app: QuartTrio) -> None:
    """Close what the route modules opened (the Responses store), once the server has stopped."""
    closers, app.extensions[CLOSERS] = app.extensions.get(CLOSERS, []), []
    for close in closers:
        close()


def create_app(
    config: Config,
    client: httpx.AsyncClient | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    hop_mark: str | None = None,
    overload: Overload | None = None,
) -> QuartTrio:
    """The gateway as a Quart-Trio app, ready for hypercorn.

    Args:
        config: the configuration.
        client: the pooled upstream client, owned (and closed) by the caller, as :func:`serve` does.
            Without one, the app opens its own while it serves (for running it under hypercorn's CLI).
        clock: monotonic seconds, for the key pools' cooldowns (tests pass one they advance).
        hop_mark: this gateway's mark (``loopguard``), which ``client`` sends upstream: a request
            that arrives with it is a loop, answered 508.
        overload: the worker's overload manager (``server.max_memory_mb``), which the server
            keeps sampling; None: off.
    """
    app = _Gateway("proxycast")
    app.asgi_http_class = _HTTPConnection
    app.config.update(
        MAX_CONTENT_LENGTH=config.server.max_body_bytes,
        RESPONSE_TIMEOUT=None,  # streams may last as long as the model writes
        BODY_TIMEOUT=config.server.upstream_timeout,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    exchange = Exchange(config, clock=clock, overload=overload)
    app.extensions[OVERLOAD] = overload
    catalog = Catalog(config)  # refreshed by serve()
    accounts = Accounting(config, exchange.redact)  # clients, limits, usage
    exchange.accounting = accounts
    app.extensions[CLOSERS] = []
    if client is not None:
        exchange.connect(client)
        app.extensions[CLIENT] = client
    else:

        @app.while_serving  # type: ignore[type-var]
        async def lifespan() -> AsyncIterator[None]:
            async with make_client(config.server) as own, trio.open_nursery() as nursery:
                exchange.connect(own)
                nursery.start_soon(accounts.run)
                yield
                exchange.providers = {}
                nursery.cancel_scope.cancel()
                await accounts.aclose()
                close_resources(app)

    settings = config.responses
    store = None
    if settings.store:  # closed when the server stops (server.serve, or the app's lifespan)
        store = ResponseStore(
            path=data_dir() / "responses.db",
            max_age=settings.store_days * 86400,
            max_bytes=int(settings.store_max_mb * 1024 * 1024),
        )
        app.extensions[CLOSERS].append(store.close)
    app.extensions[STORE] = store
    app.extensions[HOP_MARK] = hop_mark
    install(app, assemble(config, exchange, accounts, catalog, store, hop_mark))

    def gate() -> Gate:
        generation: Generation = app.extensions[GENERATION]
        return generation.gate

    @app.before_request
    async def answer_preflight() -> Response | None:
        # CORS for Quart's routes (the router's answer their own), with the origins of the
        # configuration in effect; before authentication: browsers send no key with a preflight
        origins = app.extensions[GENERATION].config.server.cors_origins
        answer = cors.preflight(request.method, request.headers, origins)
        if answer is None:
            return None
        return Response(answer.body, status=answer.status, headers=answer.headers)

    @app.after_request
    async def allow_origin(response: Response) -> Response:
        origins = app.extensions[GENERATION].config.server.cors_origins
        cors.mark(response.headers, request.headers.get("origin"), origins)
        return response

    @app.before_request
    async def check() -> None:
        headers = request.headers
        credential = bearer_or_api_key(headers)
        url = request.host_url.rstrip("/")
        path = request.path
        # Quart's own routes: the dashboard's API and /metrics take a key; an unknown /v1 path is
        # the router's (it never reaches here)
        protected = Gate.protects(path)
        gate().check(headers, headers.items(), path, lambda: url, credential, protected)

    app.register_blueprint(root.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(ui_api.blueprint)  # the dashboard
    app.register_blueprint(ui_pages.blueprint)

    @app.errorhandler(ProxycastError)
    async def on_proxycast_error(error: ProxycastError) -> Response:
        return to_quart(gate().error_response(error, formats.dialect_for(request.path)))

    @app.errorhandler(HTTPException)
    async def on_http_exception(error: HTTPException) -> Response:
        code = error.code or 500
        if code == 404:
            mapped: ProxycastError = RouteNotFoundError(
                f"Unknown route: {request.method} {request.path}."
            )
        elif code == 405:
            allowed = ", ".join(getattr(error, "valid_methods", None) or ())
            mapped = MethodNotAllowedError(
                f"Method {request.method} is not allowed on {request.path}"
                + (f"; use {allowed}." if allowed else ".")
            )
        elif code == 413:
            mapped = gate().too_large()
        elif code == 408:
            mapped = gate().too_slow()
        else:
            mapped = ProxycastError(error.description or error.name, status=code)
        return to_quart(gate().error_response(mapped, formats.dialect_for(request.path)))

    @app.errorhandler(Exception)
    async def on_unexpected(error: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.path, exc_info=error)
        return to_quart(gate().error_response(internal_error(), formats.dialect_for(request.path)))

    return app
