"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this gateway serves, as OpenAI lists them
(the configuration's, and what globbing providers' upstreams list: ``catalog.py``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, current_app, request

from proxycast import formats, routing
from proxycast.api.inbound import current_exchange
from proxycast.exchange import json_response
from proxycast.formats.anthropic import models as anthropic_models

if TYPE_CHECKING:
    from proxycast.catalog import Catalog
    from proxycast.config import ProviderConfig

blueprint = Blueprint("models", __name__)

_STARTED = int(time.time())


def _model_object(model_id: str, provider: ProviderConfig) -> dict[str, Any]:
    owner = formats.UPSTREAMS[provider.type].owner(provider.name, provider.url)
    return {"id": model_id, "object": "model", "created": _STARTED, "owned_by": owner}


@blueprint.get("/v1/models")
async def list_models() -> Response:
    catalog: Catalog = current_app.extensions["proxycast.catalog"]
    listed = await catalog.models()
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
