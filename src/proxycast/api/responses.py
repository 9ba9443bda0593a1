"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``: the Responses API's handlers.

The Responses API is the one stateful API proxycast serves: a request may continue a stored response
(``previous_response_id``), and a response is stored for that. This module does that part (the store
is ``proxycast.api.responses_store``); the conversion is the ``responses`` dialect's and the request path
the exchange's, as for every other dialect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from typing import TYPE_CHECKING, Any

import attrs
import trio

from proxycast.accounting.records import current_record
from proxycast.api.completions import mark_dropped, validated
from proxycast.api.responses_store import ResponseStore, Stored, owner_of
from proxycast.core import routing
from proxycast.core.answer import Answer, json_answer
from proxycast.core.scope import request_scope
from proxycast.errors import InvalidRequestError, ProxycastError, ResponseNotFoundError
from proxycast.formats import sse
from proxycast.formats.json_spans import dumps_text
from proxycast.formats.responses.inbound import (
    DIALECT,
    Request,
    input_items,
    warm_up,
)
from proxycast.http.call import Call
from proxycast.http.gate import identify

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from proxycast.core.exchange import Exchange
    from proxycast.formats.contracts import InboundRequest

log = logging.getLogger("proxycast")


def _previous_not_found(ident: str) -> InvalidRequestError:
    """OpenAI's answer to an unknown ``previous_response_id`` (400, the code Codex recovers on by
    sending the full request again)."""
    return InvalidRequestError(
        f"Previous response with id '{ident}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def _not_found(ident: str, param: str | None = None) -> ResponseNotFoundError:
    return ResponseNotFoundError(
        f"Response with id '{ident}' not found.", param=param, code="response_not_found"
    )


class ResponsesRoutes:
    """The handlers of the Responses API's routes, with the store (None with ``[responses] store =
    false``)."""

    __slots__ = ("_exchange", "_store")

    def __init__(self, exchange: Exchange, store: ResponseStore | None) -> None:
        self._exchange = exchange
        self._store = store

    def _recorder(
        self, owner: str, items: list[dict[str, Any]]
    ) -> Callable[[dict[str, Any]], None]:
        store = self._store
        assert store is not None

        def record(response: dict[str, Any]) -> None:
            try:
                store.put(owner, response, [*items, *response["output"]])
            except sqlite3.Error as exc:  # the answer still goes out; only its follow-up can't
                log.warning("responses store: could not keep %s: %s", response["id"], exc)

        return record

    async def _history(
        self,
        call: Call,
        inbound: InboundRequest,
        recent: dict[str, list[dict[str, Any]]] | None,
    ) -> tuple[list[dict[str, Any]] | None, bool]:
        """The items of the response ``previous_response_id`` names (None without one: the request
        starts a conversation), and whether they came from the connection's ``recent`` ones; an
        id neither the connection, the store nor (when forwarded) the upstream knows is a 400."""
        body = inbound.parsed.body
        ident = body.previous_response_id
        if ident is None:
            return None, False
        if recent is not None and ident in recent:
            return recent[ident], True
        provider = routing.resolve(body.model, self._exchange.config).provider
        if DIALECT.forwards_to(provider, inbound):  # the upstream keeps what it answered
            return [], False
        store = self._store
        stored = (
            None
            if store is None
            else await trio.to_thread.run_sync(store.get, owner_of(call.credential or ""), ident)
        )
        if stored is not None:
            return stored.items, False
        raise _previous_not_found(ident)

    async def create(
        self, call: Call, recent: dict[str, list[dict[str, Any]]] | None = None
    ) -> Answer:
        """``POST /v1/responses`` (and each ``response.create`` of a WebSocket connection, whose
        ``recent`` responses a ``previous_response_id`` continues without the store)."""
        inbound = await validated(call)
        store = self._store
        parsed: Request = inbound.parsed
        body = parsed.body
        owner = owner_of(call.credential or "")
        found, from_recent = await self._history(call, inbound, recent)
        history = found or []
        items = [*history, *input_items(body)]
        keep: list[Callable[[dict[str, Any]], None]] = []
        provider = routing.resolve(body.model, self._exchange.config).provider
        forwarded = not history and DIALECT.forwards_to(provider, inbound)
        if store is not None and body.store is not False:
            # a forwarded one too, for its input items (its continuation is the upstream's)
            keep.append(self._recorder(owner, items))
        if recent is not None:
            keep.append(_Remember(recent, items))
        record = None
        if keep:
            record = keep[0] if len(keep) == 1 else _Both(keep)
        inbound = attrs.evolve(
            inbound, parsed=attrs.evolve(parsed, history=tuple(history), record=record)
        )
        if body.generate is False and not forwarded:  # a warm-up: nothing to ask the model
            events, whole = warm_up(inbound.parsed, body.model)
            if body.stream:
                return Answer(events, content_type="text/event-stream")
            return json_answer(whole)
        try:
            if found is None or found:  # the whole conversation is known here
                _check_outputs(items)
            response = await self._exchange.generate(DIALECT, inbound, call.headers)
        except ProxycastError:
            # OpenAI's connection-local cache forgets a response whose continuation failed
            if from_recent and recent is not None:
                recent.pop(str(body.previous_response_id), None)
            raise
        if forwarded and record is not None and response.status == 200:
            if isinstance(response.body, bytes):  # a forwarded stream's relay keeps its own
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record(json.loads(response.body))
        mark_dropped(self._exchange, DIALECT, inbound, response)
        return response

    async def compact(self, call: Call) -> Answer:
        """``POST /v1/responses/compact``: forwarded to a provider that serves the Responses API;
        else the upstream model summarises the window, and the answer is its user messages and a
        ``compaction`` item that carries the summary (``formats.responses.inbound.compacted``),
        which proxycast expands when it comes back as input."""
        inbound = await validated(call)
        parsed: Request = inbound.parsed
        found, _ = await self._history(call, inbound, None)
        inbound = attrs.evolve(inbound, parsed=attrs.evolve(parsed, history=tuple(found or ())))
        return await self._exchange.generate(DIALECT, inbound, call.headers)

    def error_answer(self, error: ProxycastError) -> Answer:
        """``error`` as the Responses API answers it (its message without configured secrets)."""
        error.message = self._exchange.redact(error.message)
        record = current_record()
        if record is not None:  # the ledger row's error type
            record.error_type = error.kind
        status, body = DIALECT.render_error(error)
        return Answer(body, status)

    async def socket(self, call: Call) -> Answer:
        """WebSocket mode (``GET /v1/responses`` upgraded): each ``response.create`` answered with
        the events a streamed ``POST`` gives, one response at a time, each accounted as a request of
        its own; a ``previous_response_id`` continues from this connection's earlier responses
        without the store (and from the store as over HTTP). The client leaving cancels the
        response in flight, and its upstream request."""
        connection = _Connection(self, call)
        await connection.serve()
        return Answer(b"", 101)  # taken over: nothing more to send

    async def _stored(self, call: Call) -> Stored:
        """The stored response the path names, the client's own (404 for any other)."""
        ident, store = call.params["id"], self._store
        stored = None
        if store is not None:
            stored = await trio.to_thread.run_sync(
                store.get, owner_of(call.credential or ""), ident
            )
        if stored is None:
            raise _not_found(ident)
        return stored

    async def retrieve(self, call: Call) -> Answer:
        return json_answer((await self._stored(call)).response)

    async def delete(self, call: Call) -> Answer:
        ident, store = call.params["id"], self._store
        deleted = False
        if store is not None:
            deleted = await trio.to_thread.run_sync(
                store.delete, owner_of(call.credential or ""), ident
            )
        if not deleted:
            raise _not_found(ident)
        return json_answer({"id": ident, "object": "response", "deleted": True})

    async def input_items(self, call: Call) -> Answer:
        """``GET /v1/responses/{id}/input_items``: the items the response answered (its
        conversation before its output), paged as OpenAI pages them (``limit``, ``order``,
        ``after``, ``before``; newest first by default)."""
        stored = await self._stored(call)
        output = len(stored.response.get("output") or ())
        items = stored.items[: len(stored.items) - output] if output else list(stored.items)
        return json_answer(input_items_page(items, call.params["id"], call.query))

    async def cancel(self, call: Call) -> Answer:
        """``POST /v1/responses/{id}/cancel``: proxycast runs no response in the background, so there
        is never one to cancel (OpenAI's 400 for a response not created with ``background``)."""
        await self._stored(call)
        raise InvalidRequestError(
            "Only responses created with background set to true can be cancelled; this gateway "
            "runs none in the background.",
            code="invalid_request_error",
        )


def _check_outputs(items: list[dict[str, Any]]) -> None:
    """OpenAI's 400 for a tool output whose call is not in the conversation."""
    calls = {
        item.get("call_id")
        for item in items
        if isinstance(item, dict) and item.get("type") in ("function_call", "custom_tool_call")
    }
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") in ("function_call_output", "custom_tool_call_output"):
            if item.get("call_id") not in calls:
                raise InvalidRequestError(
                    "No tool call found for function call output with call_id "
                    f"{item.get('call_id')}.",
                    param="input",
                )


def _as_item(item: dict[str, Any]) -> dict[str, Any]:
    """An input item as the API lists it: a message (``{"role", "content"}`` as clients may send
    it) with its ``type``, its content as parts and its status."""
    if item.get("type", "message") != "message" or "role" not in item:
        return item
    content = item.get("content")
    if isinstance(content, str):
        kind = "output_text" if item["role"] == "assistant" else "input_text"
        content = [{"type": kind, "text": content}]
    return {
        **item,
        "type": "message",
        "content": content,
        "status": item.get("status", "completed"),
    }


def input_items_page(
    items: list[dict[str, Any]], ident: str, query: Mapping[str, str]
) -> dict[str, Any]:
    """A page of a response's input items, each with its id (a stored item without one gets a
    stable one: the response's id and its place)."""
    listed = []
    for n, item in enumerate(items):
        item = _as_item(item)
        listed.append(
            item if isinstance(item.get("id"), str) else {"id": f"{ident}_item_{n}", **item}
        )
    if query.get("order", "desc") != "asc":
        listed.reverse()
    ids = [item["id"] for item in listed]
    try:
        limit = min(max(int(query.get("limit", "20")), 1), 100)
    except ValueError:
        raise InvalidRequestError(
            "limit: expected an integer from 1 to 100.", param="limit"
        ) from None
    start, end = 0, len(listed)
    if query.get("after") in ids:
        start = ids.index(query["after"]) + 1
    if query.get("before") in ids:
        end = ids.index(query["before"])
        start = max(start, end - limit) if "after" not in query else start
    page = listed[start : min(end, start + limit)]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + len(page) < end,
    }


class _Remember:
    """Keeps a WebSocket connection's responses (their whole conversations) for its next
    ``previous_response_id``."""

    def __init__(
        self, recent: dict[str, list[dict[str, Any]]], items: list[dict[str, Any]]
    ) -> None:
        self._recent = recent
        self._items = items

    def __call__(self, response: dict[str, Any]) -> None:
        while len(self._recent) >= _REMEMBERED:  # the oldest go first
            del self._recent[next(iter(self._recent))]
        self._recent[response["id"]] = [*self._items, *response["output"]]


class _Both:
    def __init__(self, callbacks: list[Callable[[dict[str, Any]], None]]) -> None:
        self._callbacks = callbacks

    def __call__(self, response: dict[str, Any]) -> None:
        for callback in self._callbacks:
            callback(response)


_REMEMBERED = 16
"""Responses a WebSocket connection keeps for ``previous_response_id`` (OpenAI's connection-local
cache; older ones come from the store)."""


class _Connection:
    """One WebSocket connection of the Responses API."""

    def __init__(self, routes: ResponsesRoutes, call: Call) -> None:
        assert call.receive is not None, "a WebSocket route's call"
        assert call.send is not None, "a WebSocket route's call"
        self._routes = routes
        self._call = call
        self._receive = call.receive
        self._send = call.send
        self._lock = trio.Lock()
        self._recent: dict[str, list[dict[str, Any]]] = {}
        self._busy = False
        settings = routes._exchange.config.responses
        self._idle = settings.websocket_idle_timeout
        self._lifetime = settings.websocket_max_seconds

    def idle(self) -> None:
        """The response in flight has sent its last event (what remains is closing it)."""
        self._busy = False

    async def text(self, data: str) -> None:
        async with self._lock:
            await self._send({"type": "websocket.send", "text": data, "bytes": None})

    async def error(self, error: ProxycastError) -> None:
        """An ``error`` event (the connection stays open)."""
        answer = self._routes.error_answer(error)
        assert isinstance(answer.body, bytes)
        await self.text(_error_event(answer.body, answer.status))

    async def serve(self) -> None:
        await self._send({"type": "websocket.accept", "headers": [], "subprotocol": None})
        with trio.move_on_after(self._lifetime):
            async with trio.open_nursery() as nursery:
                while True:
                    with trio.move_on_after(self._idle) as idle:
                        message = await self._receive()
                    if idle.cancelled_caught and not self._busy:
                        break
                    if idle.cancelled_caught:
                        continue
                    if message["type"] == "websocket.disconnect":
                        nursery.cancel_scope.cancel()  # the response in flight, and its upstream
                        return
                    if message["type"] != "websocket.receive":
                        continue
                    await self._message(message, nursery)
        with trio.move_on_after(5, shield=True):  # idle, or at the end of its life: closed
            with contextlib.suppress(Exception):
                await self._send({"type": "websocket.close", "code": 1000, "reason": ""})

    async def _message(self, message: Any, nursery: trio.Nursery) -> None:
        raw = message.get("text")
        if raw is None:
            raw = (message.get("bytes") or b"").decode("utf-8", "replace")
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self.error(
                InvalidRequestError("Expected a JSON event with a 'type'.", param="type")
            )
            return
        if event["type"] != "response.create":
            await self.error(
                InvalidRequestError(
                    f"Unsupported event type {event['type']!r}: this gateway serves "
                    "'response.create'.",
                    param="type",
                )
            )
            return
        if self._busy:
            await self.error(
                InvalidRequestError(
                    "A response is already in progress on this connection; wait for its last "
                    "event before sending the next response.create.",
                    code="conversation_already_has_active_response",
                )
            )
            return
        # Codex sends ``stream: true`` (as OpenAI accepts): only asking for no stream is refused
        if event.get("stream", True) is not True or event.get("background"):
            field = "background" if event.get("background") else "stream"
            await self.error(
                InvalidRequestError(
                    f"'{field}' is not accepted over WebSocket: every response streams here.",
                    param=field,
                )
            )
            return
        body = {k: v for k, v in event.items() if k != "type"}
        body["stream"] = True
        self._busy = True
        nursery.start_soon(self._respond, dumps_text(body).encode())

    async def _respond(self, body: bytes) -> None:
        """One response, as its own request: its accounting record, its resources, its events."""
        call, routes = self._call, self._routes
        accounting = routes._exchange.accounting
        scope: Any = {  # the access log's method says where it came from: "WS /v1/responses"
            "type": "http",
            "method": "WS",
            "path": "/v1/responses",
            "headers": call.scope["headers"],
            "query_string": b"",
        }
        frames = _Frames(self)
        try:
            async with request_scope() as resources:
                send = frames.send
                if accounting is not None:
                    tracking = accounting.request(scope, frames.send)
                    resources.push_async_callback(tracking)
                    send = tracking.tracked
                try:
                    if accounting is not None:  # the key may have been revoked since the handshake
                        accounting.authenticated(identify(call.credential, accounting.directory))
                    request = Call(call.scope, call.route, {}, call.headers, {}, call.credential)
                    request.body = body
                    answer = await routes.create(request, self._recent)
                except Exception as error:
                    if not isinstance(error, ProxycastError):
                        log.error("unexpected error on a Responses WebSocket", exc_info=error)
                        error = ProxycastError("Internal error in proxycast; see its log.")
                    answer = routes.error_answer(error)
                await _send_answer(send, answer)
        finally:
            self._busy = False


_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
"""The events that end a response's stream."""

_ERROR_CODES = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    404: "not_found",
    429: "rate_limit_exceeded",
    503: "server_is_overloaded",
}


class _Frames:
    """A response's answer as WebSocket messages: each server-sent event's data as a text message;
    an error answer as an ``error`` event."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._parser = sse.SSEParser()
        self._status = 200
        self._error = bytearray()

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
            return
        body = message.get("body", b"")
        if self._status >= 400:
            self._error += body
            if not message.get("more_body", False):
                self._connection.idle()  # the client may send its next response.create now
                await self._connection.text(_error_event(bytes(self._error), self._status))
            return
        for event in self._parser.feed(body):
            if isinstance(event, sse.Event) and event.data:
                last = event.event in _TERMINAL
                if last:  # as the client sees it: the next may come at once
                    self._connection.idle()
                await self._connection.text(event.data)
                record = current_record()
                if last and record is not None:  # the client has it all, wherever it goes now
                    record.completed = True


def _error_event(body: bytes, status: int) -> str:
    """An error answer (OpenAI's ``{"error": {...}}``) as WebSocket mode's ``error`` event:
    ``{"type": "error", "status", "error": {type, code, message, param}}``."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        error = {"type": "api_error", "message": f"Request failed with status {status}."}
    error.setdefault("code", _ERROR_CODES.get(status))
    return json.dumps({"type": "error", "status": status, "error": error})


async def _send_answer(send: Callable[[Any], Awaitable[None]], answer: Answer) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": []})
    body = answer.body
    if isinstance(body, bytes):
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    async for piece in body:
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
