"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``: the Responses API's thin route.

The Responses API is the one stateful API proxycast serves: a request may continue a stored response
(``previous_response_id``), and a response is stored for that. This module does that part (the store
is ``proxycast.api.responses_store``); the conversion is the ``responses`` dialect's and the request path
the exchange's, as for every other dialect.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import Blueprint, Response, request

from proxycast.api.inbound import current_exchange
from proxycast.api.responses_store import ResponseStore, owner_of
from proxycast.core import routing
from proxycast.core.exchange import PROVIDER_HEADER, json_response
from proxycast.errors import ResponseNotFoundError
from proxycast.formats.responses.inbound import (
    DIALECT,
    SEARCH_TOOLS,
    Request,
    dropped_tools,
    input_items,
    request_to_internal,
)
from proxycast.home import data_dir
from proxycast.http.body import CLOSERS, parse_and_validate

if TYPE_CHECKING:
    from collections.abc import Callable

    from proxycast.config import Config
    from proxycast.core.exchange import Answer, Exchange

log = logging.getLogger("proxycast")

DROPPED_TOOLS_HEADER = "x-proxycast-dropped-tools"
"""Names the built-in tools that a converted request left out (comma-separated tool types)."""


def _not_found(ident: str, param: str | None = None) -> ResponseNotFoundError:
    return ResponseNotFoundError(
        f"Response with id '{ident}' not found.", param=param, code="response_not_found"
    )


def _client_key() -> str:
    """The key the client presented (authentication already checked it)."""
    key = request.headers.get("x-api-key")
    if key is None:
        key = request.headers.get("authorization", "").partition(" ")[2].strip()
    return key


def _dropped(exchange: Exchange, response: Answer, parsed: Request) -> tuple[str, ...]:
    """The built-in tools the converted request left out, for the provider that answered: all of
    them, but a web search that provider's format runs itself."""
    body = parsed.body
    if not any(t.get("type") in SEARCH_TOOLS for t in body.tools or ()):
        return dropped_tools(body)
    answered = exchange.providers.get(response.headers.get(PROVIDER_HEADER, ""))
    searches = answered is not None and answered.format.searches(request_to_internal(parsed))
    return dropped_tools(body, searches=searches)


def blueprint(config: Config) -> Blueprint:
    """The routes, with the store ``config`` asks for (none with ``[responses] store = false``)."""
    routes = Blueprint("responses", __name__)
    settings = config.responses
    store = (
        ResponseStore(
            path=data_dir() / "responses.db",
            max_age=settings.store_days * 86400,
            max_bytes=int(settings.store_max_mb * 1024 * 1024),
        )
        if settings.store
        else None
    )

    if store is not None:  # closed when the server stops (server.serve, or the app's lifespan)
        routes.record_once(lambda state: state.app.extensions[CLOSERS].append(store.close))

    def recorder(owner: str, items: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
        assert store is not None

        def record(response: dict[str, Any]) -> None:
            try:
                store.put(owner, response, [*items, *response["output"]])
            except sqlite3.Error as exc:  # the answer still goes out; only its follow-up can't
                log.warning("responses store: could not keep %s: %s", response["id"], exc)

        return record

    @routes.post("/v1/responses")
    async def create() -> Response:
        raw = await request.get_data(cache=False, as_text=False)
        assert isinstance(raw, bytes)  # as_text=False
        headers = request.headers
        inbound = await parse_and_validate(
            raw, lambda text, body, spans: DIALECT.read(text, body, spans, headers, "generate")
        )
        exchange = current_exchange()
        parsed: Request = inbound.parsed
        body = parsed.body
        provider = routing.resolve(body.model, exchange.config).provider
        owner = owner_of(_client_key())
        history: list[dict[str, Any]] = []
        if body.previous_response_id is not None:
            ident = body.previous_response_id
            stored = (
                None if store is None else await trio.to_thread.run_sync(store.get, owner, ident)
            )
            if stored is not None:
                history = stored.items
            elif not DIALECT.forwards_to(provider, inbound):  # the upstream may know it: not us
                raise _not_found(ident, "previous_response_id")
        record = None
        if store is not None and body.store is not False:
            record = recorder(owner, [*history, *input_items(body)])
        inbound = attrs.evolve(
            inbound, parsed=attrs.evolve(parsed, history=tuple(history), record=record)
        )
        forwarded = DIALECT.forwards_to(provider, inbound)
        response = await exchange.generate(DIALECT, inbound)
        dropped = () if forwarded else _dropped(exchange, response, inbound.parsed)
        if dropped:
            log.warning(
                "/v1/responses: built-in tools left out (no equivalent upstream): %s",
                ", ".join(dropped),
            )
            response.headers[DROPPED_TOOLS_HEADER] = ", ".join(dropped)
        return response.to_quart()

    @routes.get("/v1/responses/<ident>")
    async def retrieve(ident: str) -> Response:
        stored = None
        if store is not None:
            stored = await trio.to_thread.run_sync(store.get, owner_of(_client_key()), ident)
        if stored is None:
            raise _not_found(ident)
        return json_response(stored.response)

    @routes.delete("/v1/responses/<ident>")
    async def delete(ident: str) -> Response:
        deleted = False
        if store is not None:
            deleted = await trio.to_thread.run_sync(store.delete, owner_of(_client_key()), ident)
        if not deleted:
            raise _not_found(ident)
        return json_response({"id": ident, "object": "response", "deleted": True})

    return routes
