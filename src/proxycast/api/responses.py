"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``: the Responses API's handlers.

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

from proxycast.api.completions import mark_dropped, validated
from proxycast.api.responses_store import ResponseStore, owner_of
from proxycast.core import routing
from proxycast.core.answer import json_answer
from proxycast.errors import InvalidRequestError, ResponseNotFoundError
from proxycast.formats.responses.inbound import (
    DIALECT,
    Request,
    input_items,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from proxycast.core.answer import Answer
    from proxycast.core.exchange import Exchange
    from proxycast.http.call import Call

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

    async def create(self, call: Call) -> Answer:
        inbound = await validated(call)
        exchange, store = self._exchange, self._store
        parsed: Request = inbound.parsed
        body = parsed.body
        provider = routing.resolve(body.model, exchange.config).provider
        owner = owner_of(call.credential or "")
        history: list[dict[str, Any]] = []
        if body.previous_response_id is not None:
            ident = body.previous_response_id
            stored = (
                None if store is None else await trio.to_thread.run_sync(store.get, owner, ident)
            )
            if stored is not None:
                history = stored.items
            elif not DIALECT.forwards_to(provider, inbound):  # the upstream may know it: not us
                raise _previous_not_found(ident)
        record = None
        if store is not None and body.store is not False:
            record = self._recorder(owner, [*history, *input_items(body)])
        inbound = attrs.evolve(
            inbound, parsed=attrs.evolve(parsed, history=tuple(history), record=record)
        )
        response = await exchange.generate(DIALECT, inbound)
        mark_dropped(exchange, DIALECT, inbound, response)
        return response

    async def retrieve(self, call: Call) -> Answer:
        ident, store = call.params["id"], self._store
        stored = None
        if store is not None:
            stored = await trio.to_thread.run_sync(
                store.get, owner_of(call.credential or ""), ident
            )
        if stored is None:
            raise _not_found(ident)
        return json_answer(stored.response)

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
        ident, store = call.params["id"], self._store
        stored = None
        if store is not None:
            stored = await trio.to_thread.run_sync(
                store.get, owner_of(call.credential or ""), ident
            )
        if stored is None:
            raise _not_found(ident)
        output = len(stored.response.get("output") or ())
        items = stored.items[: len(stored.items) - output] if output else list(stored.items)
        return json_answer(input_items_page(items, ident, call.query))

    async def cancel(self, call: Call) -> Answer:
        """``POST /v1/responses/{id}/cancel``: proxycast runs no response in the background, so there
        is never one to cancel (OpenAI's 400 for a response not created with ``background``)."""
        ident, store = call.params["id"], self._store
        stored = None
        if store is not None:
            stored = await trio.to_thread.run_sync(
                store.get, owner_of(call.credential or ""), ident
            )
        if stored is None:
            raise _not_found(ident)
        raise InvalidRequestError(
            "Only responses created with background set to true can be cancelled; this gateway "
            "runs none in the background.",
            code="invalid_request_error",
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
