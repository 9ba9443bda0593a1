"""The model routes of every dialect (``POST /v1/chat/completions``, ``/v1/messages``,
``/v1/messages/count_tokens``...): read the body, let the route's dialect validate it, hand it to the
exchange."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from proxycast.core.exchange import PROVIDER_HEADER
from proxycast.http.body import held_once, parse_and_validate, parse_body

if TYPE_CHECKING:
    from proxycast.core.answer import Answer
    from proxycast.core.exchange import Exchange
    from proxycast.formats.contracts import InboundDialect, InboundRequest
    from proxycast.http.call import Call

log = logging.getLogger("proxycast")

DROPPED_TOOLS_HEADER = "x-proxycast-dropped-tools"
"""Names the built-in tools that a converted request left out (comma-separated)."""


async def validated(call: Call) -> InboundRequest:
    """The request ``call`` carries, validated by its route's dialect (400 in the dialect when it
    is not valid)."""
    dialect, declared = call.route.dialect, call.route.declared
    headers, params, query = call.headers, call.params, call.query
    raw = call.body

    def read(text: str, body: dict[str, Any], spans: dict[str, tuple[int, int]]) -> InboundRequest:
        return dialect.read(text, body, spans, headers, declared, params, query)

    if getattr(dialect, "forwards_bytes", False):  # a large body is held once, as its bytes
        return await parse_and_validate(
            raw,
            lambda *parsed: held_once(read(*parsed), raw, lambda: read(*parse_body(raw)).parsed),
        )
    return await parse_and_validate(raw, read)


class ModelRoutes:
    """The handlers of the ``generate`` and ``count_tokens`` operations."""

    __slots__ = ("_exchange",)

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def generate(self, call: Call) -> Answer:
        dialect, inbound = call.route.dialect, await validated(call)
        answer = await self._exchange.generate(dialect, inbound, call.headers)
        mark_dropped(self._exchange, dialect, inbound, answer)
        return answer

    async def count_tokens(self, call: Call) -> Answer:
        return await self._exchange.count_tokens(
            call.route.dialect, await validated(call), call.headers
        )


def mark_dropped(
    exchange: Exchange, dialect: InboundDialect, request: InboundRequest, answer: Answer
) -> None:
    """Name the built-in tools the converted request left out in ``x-proxycast-dropped-tools`` (and
    the log): none when it went to an upstream of the client's own format, as it was written."""
    provider = exchange.providers.get(answer.headers.get(PROVIDER_HEADER, ""))
    if provider is None or dialect.forwards_to(provider.config, request):
        return
    dropped = dialect.dropped_tools(
        request, lambda: provider.format.searches(dialect.request_to_internal(request))
    )
    if dropped:
        log.warning(
            "%s: built-in tools left out (no equivalent upstream): %s",
            dialect.name,
            ", ".join(dropped),
        )
        answer.headers[DROPPED_TOOLS_HEADER] = ", ".join(dropped)
