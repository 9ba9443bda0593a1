"""The Models API in Anthropic's shape (``GET /v1/models`` and ``/v1/models/{id}`` as the anthropic
SDK's ``models.list()`` and Claude Code's model discovery read them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from proxycast.formats.contracts import Headers, ModelEntry

UNKNOWN_RELEASE = "1970-01-01T00:00:00Z"
"""``created_at`` is the release date (RFC 3339); the API allows the epoch when it is unknown."""
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def model_info(model_id: str) -> dict[str, Any]:
    """A ``ModelInfo``."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": UNKNOWN_RELEASE,
        "lifecycle": "active",  # required by the SDK's type: a model the gateway routes is usable
    }


def model_page(model_ids: Sequence[str], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of the list: ``limit`` (1-1000, 20 by default), after ``after_id`` or before
    ``before_id``, with ``has_more``, ``first_id`` and ``last_id`` as the SDK's pager reads them."""
    try:
        limit = min(max(int(query.get("limit", DEFAULT_LIMIT)), 1), MAX_LIMIT)
    except ValueError:
        limit = DEFAULT_LIMIT
    ids = list(model_ids)
    start, end = 0, len(ids)
    if query.get("after_id") in ids:
        start = ids.index(query["after_id"]) + 1
    if query.get("before_id") in ids:
        end = ids.index(query["before_id"])
        start = max(start, end - limit)
    page = ids[start : min(end, start + limit)]
    more = start + len(page) < end if "before_id" not in query else start > 0
    return {
        "data": [model_info(i) for i in page],
        "has_more": more,
        "first_id": page[0] if page else None,
        "last_id": page[-1] if page else None,
    }


class AnthropicModels:
    """The listing the anthropic SDK and Claude Code read: asked for with ``anthropic-version``."""

    def wants(self, headers: Headers, path: str) -> bool:
        return bool(headers.get("anthropic-version"))

    def page(self, models: Sequence[ModelEntry], query: Mapping[str, str]) -> dict[str, Any]:
        return model_page([m.id for m in models], query)

    def info(self, model: ModelEntry) -> dict[str, Any]:
        return model_info(model.id)


MODELS = AnthropicModels()
