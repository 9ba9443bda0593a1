"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this gateway serves (the configuration's,
and what globbing providers' upstreams list: ``upstream/catalog.py``), in the shape the client asks for
(``formats.model_listing``: Anthropic's when the request carries ``anthropic-version``, else OpenAI's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxycast import formats
from proxycast.accounting.clients import UNLIMITED
from proxycast.accounting.records import current_record
from proxycast.core import routing
from proxycast.core.answer import json_answer
from proxycast.formats.contracts import ModelEntry

if TYPE_CHECKING:
    from proxycast.accounting.clients import Client
    from proxycast.config import ProviderConfig
    from proxycast.core.answer import Answer
    from proxycast.core.exchange import Exchange
    from proxycast.http.call import Call
    from proxycast.upstream.catalog import Catalog


def _client() -> Client:
    record = current_record()
    return UNLIMITED if record is None else record.client


def _entry(model_id: str, provider: ProviderConfig) -> ModelEntry:
    return ModelEntry(model_id, formats.UPSTREAMS[provider.type].owner(provider.name, provider.url))


class ModelsRoutes:
    """The handlers of the ``list_models`` and ``get_model`` operations."""

    __slots__ = ("_catalog", "_exchange")

    def __init__(self, exchange: Exchange, catalog: Catalog) -> None:
        self._exchange = exchange
        self._catalog = catalog

    async def list(self, call: Call) -> Answer:
        client = _client()
        entries = [
            _entry(name, provider)
            for name, provider in await self._catalog.models()
            if client.allows(name)  # a named client sees only its models
        ]
        return json_answer(formats.model_listing(call.headers, call.path).page(entries, call.query))

    async def retrieve(self, call: Call) -> Answer:
        model_id, exchange = call.params["model"], self._exchange
        if exchange.accounting is not None:
            exchange.accounting.allow(_client(), model_id)
        route = routing.resolve(model_id, exchange.config)
        listing = formats.model_listing(call.headers, call.path)
        return json_answer(listing.info(_entry(model_id, route.provider)))
