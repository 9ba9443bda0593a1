"""What each route does: the handlers of the operations the dialects' routes name (``generate``,
``embed``, ``list_models``, ``create_response``...), served by the router; and Quart's few routes
(``root``, ``admin``: ``/``, ``/health``, ``/metrics``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxycast.api.completions import ModelRoutes
from proxycast.api.embeddings import EmbeddingsRoutes
from proxycast.api.models import ModelsRoutes
from proxycast.api.responses import ResponsesRoutes

if TYPE_CHECKING:
    from proxycast.api.responses_store import ResponseStore
    from proxycast.core.exchange import Exchange
    from proxycast.http.router import Handler
    from proxycast.upstream.catalog import Catalog


def handlers(
    exchange: Exchange, catalog: Catalog, store: ResponseStore | None
) -> dict[str, Handler]:
    """Operation name -> its handler (every ``RouteOperation``)."""
    model = ModelRoutes(exchange)
    models = ModelsRoutes(exchange, catalog)
    responses = ResponsesRoutes(exchange, store)
    return {
        "generate": model.generate,
        "count_tokens": model.count_tokens,
        "embed": EmbeddingsRoutes(exchange).embed,
        "list_models": models.list,
        "get_model": models.retrieve,
        "create_response": responses.create,
        "get_response": responses.retrieve,
        "delete_response": responses.delete,
        "list_input_items": responses.input_items,
        "cancel_response": responses.cancel,
        "compact_response": responses.compact,
        "response_socket": responses.socket,
    }
