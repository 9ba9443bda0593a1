"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this gateway serves, as OpenAI lists them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response

from proxycast import formats, routing
from proxycast.accounting import current_record
from proxycast.api.inbound import current_exchange
from proxycast.clients import UNLIMITED
from proxycast.exchange import json_response

if TYPE_CHECKING:
    from proxycast.clients import Client
    from proxycast.config import ProviderConfig

blueprint = Blueprint("models", __name__)

_STARTED = int(time.time())


def _client() -> Client:
    record = current_record()
    return UNLIMITED if record is None else record.client


def _model_object(model_id: str, provider: ProviderConfig) -> dict[str, Any]:
    owner = formats.UPSTREAMS[provider.type].owner(provider.name, provider.url)
    return {"id": model_id, "object": "model", "created": _STARTED, "owned_by": owner}


@blueprint.get("/v1/models")
async def list_models() -> Response:
    config = current_exchange().config
    client = _client()
    data = [
        _model_object(name, provider)
        for name, provider in routing.listed_models(config)
        if client.allows(name)  # a named client sees only its models
    ]
    return json_response({"object": "list", "data": data})


@blueprint.get("/v1/models/<path:model_id>")
async def retrieve_model(model_id: str) -> Response:
    exchange = current_exchange()
    if exchange.accounting is not None:
        exchange.accounting.allow(_client(), model_id)
    route = routing.resolve(model_id, exchange.config)
    return json_response(_model_object(model_id, route.provider))
