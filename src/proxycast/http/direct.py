"""The model routes (every inbound dialect's: ``POST /v1/chat/completions``, ``/v1/messages``, ...)
served straight from the ASGI connection, not through Quart's request dispatch.

Every request of an agent loop is one of these, and Quart's dispatch (a request object with its
headers copied title-cased, the request and app contexts, URL routing, the hooks, the response's
processing, a second task for the body) cost 0.81 M instructions a request, a quarter of the bare
framework's whole answer to one (``bench/results/analysis.md``). Here a request is checked by the same
:class:`~proxycast.http.gate.Gate` as Quart's hooks use, its body read from the connection (the same size
limit and deadline), the exchange called, and its answer (or error, in the client's dialect) sent, while
a watcher cancels everything the moment the client goes away, as quart-trio's does. Every other route,
and these with another method, stay Quart's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import trio

from proxycast import formats
from proxycast.api import inbound as inbound_api
from proxycast.errors import ProxycastError
from proxycast.http import cors
from proxycast.http.gate import internal_error

if TYPE_CHECKING:
    from hypercorn.typing import (
        ASGIReceiveCallable,
        ASGISendCallable,
        HTTPResponseStartEvent,
        HTTPScope,
    )

    from proxycast.config import Config
    from proxycast.core.exchange import Answer, Exchange
    from proxycast.formats.contracts import InboundDialect, Operation
    from proxycast.http.gate import Gate

log = logging.getLogger("proxycast")


class Direct:
    """The model routes of one app: :meth:`route` says whether a request is one of them,
    :meth:`serve` answers it."""

    __slots__ = ("_body_timeout", "_exchange", "_gate", "_max_body", "_origins", "_routes")

    def __init__(self, config: Config, exchange: Exchange, gate: Gate) -> None:
        self._routes: dict[str, tuple[InboundDialect, Operation]] = {
            route.path: (dialect, route.operation)
            for dialect in formats.DIALECTS
            for route in dialect.routes
        }
        self._exchange = exchange
        self._gate = gate
        self._max_body = config.server.max_body_bytes
        self._body_timeout = config.server.upstream_timeout
        self._origins = config.server.cors_origins

    def route(self, scope: HTTPScope) -> tuple[InboundDialect, Operation] | None:
        """The dialect and operation of a request to a model route; None for any other."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        return self._routes.get(scope["path"])

    async def serve(
        self,
        route: tuple[InboundDialect, Operation],
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        dialect, operation = route
        pairs = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in scope["headers"]]
        headers: dict[str, str] = {}
        for name, value in pairs:  # the first of a repeated header, as werkzeug's get() gives
            headers.setdefault(name, value)
        path = scope["path"]
        try:
            self._gate.check(headers, pairs, path, lambda: _url(scope, headers))
            raw = await self._body(receive, headers.get("content-length"))
            if raw is None:
                return  # the client left before its body arrived
            inbound = await inbound_api.validated(dialect, operation, raw, headers)
        except Exception as error:  # refused before the exchange: nothing upstream to cancel
            await self._respond(send, self._failed(error, scope), headers)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            try:
                response = await inbound_api.answer(self._exchange, dialect, operation, inbound)
            except Exception as error:
                response = self._failed(error, scope)
            await self._respond(send, response, headers)
            nursery.cancel_scope.cancel()

    async def _body(self, receive: ASGIReceiveCallable, length: str | None) -> bytes | None:
        """The request's body (None: the client left first); 413 over the limit, 408 when it does not
        arrive within ``upstream_timeout`` (as Quart's reading)."""
        limit = self._max_body
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._gate.too_large()
        parts: list[bytes] = []
        size = 0
        with trio.move_on_after(self._body_timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                part = cast("bytes", message.get("body", b""))
                size += len(part)
                if size > limit:
                    raise self._gate.too_large()
                if not message.get("more_body", False):
                    if not parts:
                        return part
                    parts.append(part)
                    return b"".join(parts)
                parts.append(part)
        raise self._gate.too_slow()

    def _failed(self, error: Exception, scope: HTTPScope) -> Answer:
        if not isinstance(error, ProxycastError):
            log.error("unexpected error on %s %s", scope["method"], scope["path"], exc_info=error)
            error = internal_error()
        return self._gate.error_response(error, scope["path"])

    async def _respond(
        self, send: ASGISendCallable, answer: Answer, headers: dict[str, str]
    ) -> None:
        cors.mark(answer.headers, headers.get("origin"), self._origins)
        head = [(name.encode(), value.encode()) for name, value in answer.headers.items()]
        body = answer.body
        if isinstance(body, bytes):  # the whole answer: one piece, and the end
            head.append((b"content-length", str(len(body)).encode()))
            await send(_start(answer.status, head))
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        # A stream: its end closes it (Relay), and so do the request's resources, shielded, if the
        # client goes away first.
        await send(_start(answer.status, head))
        async for piece in body:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> HTTPResponseStartEvent:
    return {"type": "http.response.start", "status": status, "headers": headers, "trailers": False}


async def _cancel_on_disconnect(receive: ASGIReceiveCallable, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _url(scope: HTTPScope, headers: dict[str, str]) -> str:
    """The URL the gateway was called at, as Quart's ``request.host_url`` gives it (without its
    trailing slash)."""
    host = headers.get("host")
    if host is None:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    return f"{scope['scheme']}://{host}"
