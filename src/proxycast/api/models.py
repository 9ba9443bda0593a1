"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this gateway serves, as OpenAI lists them
(the configuration's, and what globbing providers' upstreams list: ``catalog.py``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, current_app

from proxycast import formats, routing
from proxycast.api.inbound import current_exchange
from proxycast.exchange import json_response

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
    data = [_model_object(name, provider) for name, provider in await catalog.models()]
    return json_response({"object": "list", "data": data})


@blueprint.get("/v1/models/<path:model_id>")
async def retrieve_model(model_id: str) -> Response:
    route = routing.resolve(model_id, current_exchange().config)
    return json_response(_model_object(model_id, route.provider))
