"""The Models API in Gemini's shape (``GET /v1beta/models`` and ``/v1beta/models/{model}``, as
google-genai's ``models.list()`` / ``models.get()`` and the Gemini CLI read them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from proxycast.formats.contracts import Headers, ModelEntry

DEFAULT_PAGE = 50
MAX_PAGE = 1000
METHODS = (
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "embedContent",
    "batchEmbedContents",
)
"""What every model the gateway lists can be asked: it routes each to an upstream that serves it
(or answers a 400 naming the provider, for embeddings of a model that has none)."""


def model_info(model: ModelEntry) -> dict[str, Any]:
    """A ``Model``; the token limits are the upstream's to enforce, and not known here."""
    return {
        "name": f"models/{model.id}",
        "baseModelId": model.id,
        "version": "001",
        "displayName": model.id,
        "description": f"{model.id}, served by proxycast ({model.owner}).",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": list(METHODS),
    }


class GeminiModels:
    """The listing Google's clients read: on Gemini's own route, or on ``/v1/models`` when the
    request comes from Google's SDKs (their ``x-goog-api-key`` or ``x-goog-api-client``)."""

    def wants(self, headers: Headers, path: str) -> bool:
        return (
            path.startswith("/v1beta/")
            or headers.get("x-goog-api-key") is not None
            or headers.get("x-goog-api-client") is not None
        )

    def page(self, models: Sequence[ModelEntry], query: Mapping[str, str]) -> dict[str, Any]:
        try:
            size = min(max(int(query.get("pageSize", DEFAULT_PAGE)), 1), MAX_PAGE)
        except ValueError:
            size = DEFAULT_PAGE
        token = query.get("pageToken", "")
        start = int(token) if token.isdigit() else 0
        page = models[start : start + size]
        out: dict[str, Any] = {"models": [model_info(m) for m in page]}
        if start + size < len(models):
            out["nextPageToken"] = str(start + size)
        return out

    def info(self, model: ModelEntry) -> dict[str, Any]:
        return model_info(model)


MODELS = GeminiModels()
