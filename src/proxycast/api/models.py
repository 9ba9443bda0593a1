"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this gateway serves, as OpenAI lists them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from proxycast import formats, routing
from proxycast.api.inbound import current_exchange
from proxycast.exchange import json_response
from proxycast.formats.anthropic import models as anthropic_models

if TYPE_CHECKING:
    from proxycast.config import ProviderConfig

blueprint = Blueprint("models", __name__)

_STARTED = int(time.time())


def _model_object(model_id: str, provider: ProviderConfig) -> dict[str, Any]:
    owner = formats.UPSTREAMS[provider.type].owner(provider.name, provider.url)
    return {"id": model_id, "object": "model", "created": _STARTED, "owned_by": owner}


@blueprint.get("/v1/models")
async def list_models() -> Response:
    config = current_exchange().config
    listed = routing.listed_models(config)
    if request.headers.get("anthropic-version"):  # the anthropic SDK, Claude Code
        return json_response(anthropic_models.model_page([n for n, _ in listed], request.args))
    data = [_model_object(name, provider) for name, provider in listed]
    return json_response({"object": "list", "data": data})


@blueprint.get("/v1/models/<path:model_id>")
async def retrieve_model(model_id: str) -> Response:
    route = routing.resolve(model_id, current_exchange().config)
    if request.headers.get("anthropic-version"):
        return json_response(anthropic_models.model_info(model_id))
    return json_response(_model_object(model_id, route.provider))
