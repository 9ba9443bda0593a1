"""The Quart-Trio application: lifespan (the pooled upstream client), auth, errors, per-request scope."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

import trio
from quart import Response, current_app, request
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from werkzeug.exceptions import HTTPException

from proxycast import cors, formats, loopguard
from proxycast.accounting import Accounting, current_record
from proxycast.api import admin, embeddings, inbound, models, responses, root
from proxycast.api._common import CLOSERS
from proxycast.catalog import Catalog
from proxycast.errors import (
    AuthenticationError,
    InvalidRequestError,
    MethodNotAllowedError,
    ProxycastError,
    RequestTooLargeError,
    RouteNotFoundError,
)
from proxycast.exchange import Exchange, request_resources, request_scope
from proxycast.ui import api as ui_api
from proxycast.ui import pages as ui_pages
from proxycast.upstreams import make_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import httpx
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable

    from proxycast.clients import Client, Directory
    from proxycast.config import Config

log = logging.getLogger("proxycast")

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class _HTTPConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP handling, inside a resource stack owned by the request.

    quart closes a streamed body when it gets to send it; a cancellation that lands between the handler
    returning and the body being entered (the client gone at that very moment) would leave the upstream
    response open. The stack closes it, shielded, whatever happened.
    """

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        accounts: Accounting = self.app.extensions["proxycast_accounting"]
        async with request_scope(), accounts.request(self.scope, send) as tracked:
            await super().__call__(receive, tracked)


def error_response(error: ProxycastError) -> Response:
    """The error in the dialect of the route's clients."""
    exchange: Exchange = current_app.extensions["proxycast"]
    error.message = exchange.redact(error.message)
    record = current_record()
    if record is not None:  # accounting: the ledger row's error type
        record.error_type = error.kind
    status, body = formats.dialect_for(request.path).render_error(error)
    response = Response(body, status=status, content_type="application/json")
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _authenticate(directory: Directory) -> Client:
    presented = request.headers.get("x-api-key")
    auth = request.headers.get("authorization")
    if presented is None and auth is not None:
        scheme, _, credentials = auth.partition(" ")
        if scheme.lower() == "bearer":
            presented = credentials.strip()
    if not presented:
        raise AuthenticationError(
            "Missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY' "
            "with one of this gateway's client keys."
        )
    client = directory.find(presented)  # constant time: every key's digest is compared
    if client is None:
        raise AuthenticationError(
            "Incorrect API key: it is not one of this gateway's client keys "
            "(server.api_keys, [[clients]])."
        )
    return client


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
) -> QuartTrio:
    """The gateway as a Quart-Trio app, ready for hypercorn.

    Args:
        config: the configuration.
        client: the pooled upstream client, owned (and closed) by the caller, as :func:`serve` does.
            Without one, the app opens its own while it serves (for running it under hypercorn's CLI).
        clock: monotonic seconds, for the key pools' cooldowns (tests pass one they advance).
        hop_mark: this gateway's mark (``loopguard``), which ``client`` sends upstream: a request
            that arrives with it is a loop, answered 508.
    """
    app = QuartTrio("proxycast")
    app.asgi_http_class = _HTTPConnection
    app.config.update(
        MAX_CONTENT_LENGTH=config.server.max_body_bytes,
        RESPONSE_TIMEOUT=None,  # streams may last as long as the model writes
        BODY_TIMEOUT=config.server.upstream_timeout,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    exchange = Exchange(config, clock=clock)
    app.extensions["proxycast"] = exchange
    app.extensions["proxycast.catalog"] = Catalog(config)  # refreshed by serve()
    accounts = Accounting(config, exchange.redact)  # clients, limits, usage (issue 11)
    exchange.accounting = accounts
    app.extensions["proxycast_accounting"] = accounts
    app.extensions[CLOSERS] = []
    if client is not None:
        exchange.connect(client)
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

    cors.install(app, config.server.cors_origins)  # preflights are answered before authentication

    @app.before_request
    async def refuse_control_characters() -> None:
        # h11 lets control characters other than NUL, CR and LF through in header values (RFC 9110
        # 5.5 allows only HTAB, SP, visible characters and obs-text): they have no business in them.
        for name, value in request.headers.items():
            if _CONTROL.search(value):
                raise InvalidRequestError(
                    f"The request header {name.lower()!r} holds a control character."
                )

    @app.before_request
    async def refuse_loops() -> None:
        if hop_mark is not None:
            url = request.host_url.rstrip("/")
            loopguard.arrive(request.headers.get(loopguard.HOP_HEADER), hop_mark, url)

    @app.before_request
    async def authenticate() -> None:
        if request.path.startswith(("/v1/", "/ui/api/")) or request.path == "/metrics":
            accounts.authenticated(_authenticate(accounts.directory))

    @app.before_request
    async def reserve_body_memory() -> None:
        # What a request's body may take is reserved before it is read (a chunked one may be up to
        # max_body_bytes), and given back when the request ends, however it ends.
        size = request.content_length
        if size is None and "transfer-encoding" in request.headers:
            size = config.server.max_body_bytes
        if not size or size > config.server.max_body_bytes:
            return  # nothing to hold, or a 413 anyway
        limit = config.server.max_inflight_body_bytes
        if exchange.inflight_body_bytes + size > limit:
            raise ProxycastError(
                f"The gateway holds as many request bodies as it may ({limit} bytes, "
                "server.max_inflight_body_bytes); retry shortly.",
                status=503,
                headers={"retry-after": "1"},
            )
        request_resources().callback(exchange.reserve_body(size))

    app.register_blueprint(inbound.blueprint())
    app.register_blueprint(models.blueprint)
    app.register_blueprint(responses.blueprint(config))
    app.register_blueprint(root.blueprint)
    app.register_blueprint(embeddings.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(ui_api.blueprint)  # the dashboard (issue 18)
    app.register_blueprint(ui_pages.blueprint)

    @app.errorhandler(ProxycastError)
    async def on_proxycast_error(error: ProxycastError) -> Response:
        return error_response(error)

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
            mapped = RequestTooLargeError(
                f"The request body is larger than this gateway's limit of "
                f"{config.server.max_body_bytes} bytes (server.max_body_bytes)."
            )
        else:
            mapped = ProxycastError(error.description or error.name, status=code)
        return error_response(mapped)

    @app.errorhandler(Exception)
    async def on_unexpected(error: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.path, exc_info=error)
        return error_response(ProxycastError("Internal error in proxycast; see its log."))

    return app
