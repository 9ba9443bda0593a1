"""The model routes of every dialect (``POST /v1/chat/completions``, ``/v1/messages``,
``/v1/messages/count_tokens``...): read the body, let the route's dialect validate it, hand it to the
exchange."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxycast.http.body import parse_and_validate

if TYPE_CHECKING:
    from proxycast.core.answer import Answer
    from proxycast.core.exchange import Exchange
    from proxycast.formats.contracts import InboundRequest
    from proxycast.http.call import Call


async def validated(call: Call) -> InboundRequest:
    """The request ``call`` carries, validated by its route's dialect (400 in the dialect when it
    is not valid)."""
    dialect, declared = call.route.dialect, call.route.declared
    headers, params, query = call.headers, call.params, call.query
    return await parse_and_validate(
        call.body,
        lambda text, body, spans: dialect.read(text, body, spans, headers, declared, params, query),
    )


class ModelRoutes:
    """The handlers of the ``generate`` and ``count_tokens`` operations."""

    __slots__ = ("_exchange",)

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def generate(self, call: Call) -> Answer:
        return await self._exchange.generate(call.route.dialect, await validated(call))

    async def count_tokens(self, call: Call) -> Answer:
        return await self._exchange.count_tokens(call.route.dialect, await validated(call))
