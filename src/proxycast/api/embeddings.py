"""Embeddings routes (``POST /v1/embeddings``, Gemini's ``:embedContent`` and ``:batchEmbedContents``):
read the body, hand it to the exchange, which forwards it to providers of the client's own format (the
model renamed), converts it for the formats of ``formats.EMBEDDINGS``, and refuses it with a 400
naming the provider for the others (Anthropic has no embeddings API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxycast import formats
from proxycast.formats.contracts import InboundRequest
from proxycast.http.body import parse_and_validate

if TYPE_CHECKING:
    from proxycast.core.answer import Answer
    from proxycast.core.exchange import Exchange
    from proxycast.http.call import Call


class EmbeddingsRoutes:
    """The handler of the ``embed`` operation."""

    __slots__ = ("_exchange",)

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def embed(self, call: Call) -> Answer:
        text, body, spans = await parse_and_validate(call.body, lambda t, b, s: (t, b, s))
        dialect = formats.EMBEDDING_DIALECTS[call.route.dialect.name]
        model = dialect.client_model(body, call.params)
        inbound = InboundRequest(
            client_model=model,
            stream=False,
            operation="generate",
            parsed=body,
            text=text,
            spans=spans,
        )
        return await self._exchange.embed(dialect, inbound)
