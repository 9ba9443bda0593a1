"""The router's routes served straight from the ASGI call: every API surface (``/v1/...``), HTTP and
WebSocket, one way.

A request is matched by the router, checked by the gate (control characters, loops, the client key
where its dialect's clients put it, the body's memory), its body read (the size limit, the deadline),
and its route's handler called, while a watcher cancels everything the moment the client goes away.
The answer, or the error in the route's dialect, is sent from here, CORS headers included. Quart's
request dispatch (a request object with its headers copied, the contexts, URL routing, the hooks,
a second task for the body) cost 0.81 M instructions a request, a quarter of the bare framework's
whole answer to one (``bench/results/analysis.md``): none of it is paid here. Quart serves what is
left (the dashboard, ``/health``, ``/metrics``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import trio

from proxycast import formats
from proxycast.accounting.records import on_model_route
from proxycast.errors import MethodNotAllowedError, ProxycastError, RouteNotFoundError
from proxycast.http import cors
from proxycast.http.call import Call, app_path, parse_query
from proxycast.http.gate import internal_error
from proxycast.http.router import WEBSOCKET, Mismatch

if TYPE_CHECKING:
    from hypercorn.typing import (
        ASGIReceiveCallable,
        ASGISendCallable,
        HTTPResponseStartEvent,
        HTTPScope,
        WebsocketScope,
    )

    from proxycast.config import Config
    from proxycast.core.answer import Answer
    from proxycast.core.overload import Overload
    from proxycast.formats.contracts import InboundDialect
    from proxycast.http.gate import Gate
    from proxycast.http.router import Route, Router

log = logging.getLogger("proxycast")

_BODILESS = frozenset(("GET", "HEAD", "DELETE", "OPTIONS"))
_LEDGERED = frozenset(("generate", "count_tokens", "embed", "create_response"))
"""The operations whose requests get a ledger row (a model is asked), valid or not."""
_MODEL_OPERATIONS = frozenset(
    ("generate", "count_tokens", "embed", "create_response", "response_socket")
)
"""The routes that ask a model (what the overload manager sheds)."""


class Serving:
    """The router's routes of one app: :meth:`owns` says whether a path is theirs, :meth:`http`
    and :meth:`websocket` answer a request to one."""

    __slots__ = ("_body_timeout", "_gate", "_max_body", "_origins", "_overload", "_router")

    def __init__(
        self, config: Config, router: Router, gate: Gate, overload: Overload | None = None
    ) -> None:
        self._router = router
        self._gate = gate
        self._overload = overload
        self._max_body = config.server.max_body_bytes
        self._body_timeout = config.server.upstream_timeout
        self._origins = config.server.cors_origins

    def path(self, scope: HTTPScope) -> str | None:
        """The request's path within the app when it is one of the router's (an API surface);
        None for any other."""
        path = app_path(scope)
        return path if self._router.owns(path) else None

    async def http(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable, path: str
    ) -> None:
        """Serve a request to the router's ``path`` (:meth:`path`)."""
        method = scope["method"]
        pairs, headers = _headers(scope)
        if self._origins and method == "OPTIONS":
            preflight = cors.preflight(method, headers, self._origins)
            if preflight is not None:  # before authentication: browsers send no key with one
                await self._respond(send, preflight, headers, method)
                return
        matched = self._router.match(method, path)
        dialect = formats.dialect_for(path) if isinstance(matched, Mismatch) else matched[0].dialect
        held = 0  # the declared body's bytes the overload manager counts while it arrives
        try:
            call, held = self._admit(scope, path, matched, dialect, headers, pairs)
            declared = call.route.declared
            if declared.operation in _LEDGERED:
                api = "embeddings" if declared.operation == "embed" else call.route.dialect.name
                on_model_route(api, call.params.get("model", ""), bool(declared.stream))
            if call.route.method not in _BODILESS:
                body = await self._body(receive, headers.get("content-length"))
                if body is None:
                    return  # the client left before its body arrived
                call.body = body
        except Exception as error:  # refused before the handler: nothing upstream to cancel
            await self._respond(send, self._failed(error, scope, dialect), headers, method)
            return
        finally:
            if held and self._overload is not None:
                self._overload.arrived(held)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            try:
                answer = await call.route.handler(call)
            except Exception as error:
                answer = self._failed(error, scope, dialect)
            await self._respond(send, answer, headers, method)
            nursery.cancel_scope.cancel()

    async def websocket(
        self, scope: WebsocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """A WebSocket upgrade: handed to its route, or refused with an HTTP answer (a 4xx in the
        dialect of the path, as for any request) before the handshake completes."""
        if (await receive())["type"] != "websocket.connect":
            return
        path = app_path(scope)
        pairs, headers = _headers(scope)
        matched = self._router.match(WEBSOCKET, path)
        dialect = formats.dialect_for(path) if isinstance(matched, Mismatch) else matched[0].dialect
        try:
            call, _ = self._admit(scope, path, matched, dialect, headers, pairs)
        except Exception as error:
            await _refuse(send, self._failed(error, scope, dialect))
            return
        call.receive, call.send = receive, send
        try:
            answer = await call.route.handler(call)
        except Exception as error:
            answer = self._failed(error, scope, dialect)
        if answer.status != 101:  # the handler did not take the connection over
            await _refuse(send, answer)

    def _admit(
        self,
        scope: HTTPScope | WebsocketScope,
        path: str,
        matched: tuple[Route, dict[str, str]] | Mismatch,
        dialect: InboundDialect,
        headers: dict[str, str],
        pairs: list[tuple[str, str]],
    ) -> tuple[Call, int]:
        """The gate's checks, then the route (404 or 405 when there is none), then the overload
        manager's word on a model request (a stream by its route, a body by its size): the call,
        and the bytes of its body the overload manager counts until :meth:`Overload.arrived`."""
        raw = scope["query_string"]
        query = parse_query(raw) if raw else {}
        credential = dialect.credential(headers, query)
        if credential is None:  # a key is a key: where any dialect's clients put it (a route
            # several APIs share, /v1/models, is called by each API's clients their own way)
            credential = next(
                (key for d in formats.DIALECTS if (key := d.credential(headers, query))), None
            )
        self._gate.check(headers, pairs, path, lambda: _url(scope, headers), credential)
        if isinstance(matched, Mismatch):
            raise _mismatch(scope, path, matched)
        route, params = matched
        held = 0
        if self._overload is not None and route.declared.operation in _MODEL_OPERATIONS:
            socket = route.method == WEBSOCKET  # a body it declares is none: it never arrives
            length = None if socket else headers.get("content-length")
            held = self._overload.admit(
                stream=route.declared.stream is True or socket,
                body_bytes=int(length) if length is not None and length.isdigit() else 0,
            )
        return Call(scope, route, params, headers, query, credential), held

    async def _body(self, receive: ASGIReceiveCallable, length: str | None) -> bytes | None:
        """The request's body (None: the client left first); 413 over the limit, 408 when it does not
        arrive within ``upstream_timeout``."""
        limit = self._max_body
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._gate.too_large()
        # One buffer (a large one is mapped on its own, past glibc's mmap threshold), not a list of
        # the 64 KB pieces joined at the end: the pieces of bodies arriving side by side were spread
        # over the heap, whose holes are not given back once freed (a burst of 30 MB bodies left
        # twice their size resident). A body of known length is written into a buffer of that size.
        declared = int(length) if length is not None and length.isdigit() else 0
        buffer: bytearray | None = None
        size = 0
        with trio.move_on_after(self._body_timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                part = cast("bytes", message.get("body", b""))
                more = message.get("more_body", False)
                if buffer is None:
                    if not more:
                        if len(part) > limit:
                            raise self._gate.too_large()
                        return part  # the whole body in one piece (most requests)
                    buffer = bytearray(declared)
                end = size + len(part)
                if end > limit:
                    raise self._gate.too_large()
                if end > len(buffer):  # a chunked body (h11 holds others to their length)
                    del buffer[size:]
                    buffer += part
                else:
                    buffer[size:end] = part
                size = end
                if not more:
                    del buffer[size:]  # nothing, unless the client sent less than it said
                    return bytes(buffer)
        raise self._gate.too_slow()

    def _failed(
        self, error: Exception, scope: HTTPScope | WebsocketScope, dialect: InboundDialect
    ) -> Answer:
        if not isinstance(error, ProxycastError):
            method = scope.get("method", "GET")
            log.error("unexpected error on %s %s", method, scope["path"], exc_info=error)
            error = internal_error()
        return self._gate.error_response(error, dialect)

    async def _respond(
        self, send: ASGISendCallable, answer: Answer, headers: dict[str, str], method: str
    ) -> None:
        cors.mark(answer.headers, headers.get("origin"), self._origins)
        head = [(name.encode(), value.encode()) for name, value in answer.headers.items()]
        body = answer.body
        if isinstance(body, bytes):  # the whole answer: one piece, and the end
            head.append((b"content-length", str(len(body)).encode()))
            await send(_start(answer.status, head))
            if method == "HEAD":
                body = b""
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        # A stream: its end closes it (Relay), and so do the request's resources, shielded, if the
        # client goes away first.
        await send(_start(answer.status, head))
        async for piece in body:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _mismatch(scope: HTTPScope | WebsocketScope, path: str, mismatch: Mismatch) -> ProxycastError:
    method = scope.get("method", "GET") if scope["type"] == "http" else WEBSOCKET
    allowed = [m for m in mismatch.allowed if m != WEBSOCKET]
    if method == WEBSOCKET:
        if allowed:
            return MethodNotAllowedError(
                f"{path} does not take WebSocket connections on this gateway; "
                f"use {', '.join(allowed)} over HTTP."
            )
        return RouteNotFoundError(f"Unknown route: WebSocket {path}.")
    if mismatch.allowed:
        shown = ", ".join("WebSocket" if m == WEBSOCKET else m for m in mismatch.allowed)
        return MethodNotAllowedError(f"Method {method} is not allowed on {path}; use {shown}.")
    return RouteNotFoundError(f"Unknown route: {method} {path}.")


async def _refuse(send: ASGISendCallable, answer: Answer) -> None:
    """Refuse a WebSocket handshake with an HTTP answer (ASGI's denial response extension, which
    hypercorn serves); a server without it closes the connection instead (a 403 to the client)."""
    if not isinstance(answer.body, bytes):  # never the case for a refusal; close what it holds
        await answer.body.aclose()
        answer.body = b""
    head = [(name.encode(), value.encode()) for name, value in answer.headers.items()]
    head.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "websocket.http.response.start", "status": answer.status, "headers": head})
    await send({"type": "websocket.http.response.body", "body": answer.body, "more_body": False})


def _start(status: int, headers: list[tuple[bytes, bytes]]) -> HTTPResponseStartEvent:
    return {"type": "http.response.start", "status": status, "headers": headers, "trailers": False}


async def _cancel_on_disconnect(receive: ASGIReceiveCallable, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _headers(scope: HTTPScope | WebsocketScope) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Every header (names in lower case) and, by name, the first of a repeated one (as werkzeug's
    ``get`` gives)."""
    pairs = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in scope["headers"]]
    headers: dict[str, str] = {}
    for name, value in pairs:
        headers.setdefault(name, value)
    return pairs, headers


def _url(scope: HTTPScope | WebsocketScope, headers: dict[str, str]) -> str:
    """The URL the gateway was called at, as Quart's ``request.host_url`` gives it (without its
    trailing slash)."""
    host = headers.get("host")
    if host is None:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    scheme = scope["scheme"]
    if scope["type"] == "websocket":
        scheme = "https" if scheme == "wss" else "http"
    return f"{scheme}://{host}"
