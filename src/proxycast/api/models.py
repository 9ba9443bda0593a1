"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this gateway serves (the configuration's,
and what globbing providers' upstreams list: ``catalog.py``), in the shape the client asks for
(``formats.model_listing``: Anthropic's when the request carries ``anthropic-version``, else OpenAI's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, current_app, request

from proxycast import formats
from proxycast.accounting.clients import UNLIMITED
from proxycast.accounting.records import current_record
from proxycast.api.inbound import current_exchange
from proxycast.core import routing
from proxycast.core.exchange import json_response
from proxycast.formats.contracts import ModelEntry

if TYPE_CHECKING:
    from proxycast.accounting.clients import Client
    from proxycast.config import ProviderConfig
    from proxycast.upstream.catalog import Catalog

blueprint = Blueprint("models", __name__)


def _client() -> Client:
    record = current_record()
    return UNLIMITED if record is None else record.client


def _entry(model_id: str, provider: ProviderConfig) -> ModelEntry:
    return ModelEntry(model_id, formats.UPSTREAMS[provider.type].owner(provider.name, provider.url))


@blueprint.get("/v1/models")
async def list_models() -> Response:
    catalog: Catalog = current_app.extensions["proxycast.upstream.catalog"]
    client = _client()
    entries = [
        _entry(name, provider)
        for name, provider in await catalog.models()
        if client.allows(name)  # a named client sees only its models
    ]
    return json_response(formats.model_listing(request.headers).page(entries, request.args))


@blueprint.get("/v1/models/<path:model_id>")
async def retrieve_model(model_id: str) -> Response:
    exchange = current_exchange()
    if exchange.accounting is not None:
        exchange.accounting.allow(_client(), model_id)
    route = routing.resolve(model_id, exchange.config)
    listing = formats.model_listing(request.headers)
    return json_response(listing.info(_entry(model_id, route.provider)))
