"""The Models API in OpenAI's shape (``GET /v1/models`` and ``/v1/models/{id}``): every client that does
not ask for another shape."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from proxycast.formats.contracts import Headers, ModelEntry

_STARTED = int(time.time())
"""``created``: OpenAI's is the model's release; a gateway knows only when it started."""


class OpenAIModels:
    def wants(self, headers: Headers, path: str) -> bool:
        return True  # the default listing

    def page(self, models: Sequence[ModelEntry], query: Mapping[str, str]) -> dict[str, Any]:
        return {"object": "list", "data": [self.info(m) for m in models]}

    def info(self, model: ModelEntry) -> dict[str, Any]:
        return {"id": model.id, "object": "model", "created": _STARTED, "owned_by": model.owner}


MODELS = OpenAIModels()
