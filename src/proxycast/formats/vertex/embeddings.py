"""Embeddings on Vertex AI: Google's text embedding models through ``:predict`` (docs/mappings.md,
"Embeddings").

The request is ``{"instances": [{"content": TEXT}, ...], "parameters": {"outputDimensionality": N}}``
(a Gemini client's ``taskType`` as each instance's ``task_type``) at
``publishers/google/models/{model}:predict``; the answer, one prediction per instance, is
``{"predictions": [{"embeddings": {"values": [...], "statistics": {"token_count": n,
"truncated": false}}}]}``, whose token counts are the usage. The path is written from
``/publishers/`` on: the bound format (``VertexUpstream.placed``) puts the provider's project and
location before it, as it knows them and this converter does not.

``gemini-embedding-001`` takes one instance per request (Vertex refuses more with a 400): a batch
for it is refused here, naming the models that take up to 250.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from proxycast.errors import InvalidRequestError, UpstreamUnavailableError
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.embeddings import Embeddings, EmbedRequest

SINGLE_INSTANCE = ("gemini-embedding-",)
"""Model name prefixes Vertex serves one instance per request."""

MAX_INSTANCES = 250
"""Instances per ``:predict`` call on the other text embedding models."""


def predict_path(model: str) -> str:
    """``model``'s ``:predict`` below the project and location (``VertexUpstream.placed``)."""
    return f"/publishers/google/models/{quote(model, safe='@')}:predict"


def _one_at_a_time(model: str) -> bool:
    return model.startswith(SINGLE_INSTANCE)


class VertexEmbeddings:
    """Embeddings requests of every client to a ``vertex`` provider (Google's models)."""

    def request_from_internal(self, request: EmbedRequest, model: str) -> UpstreamRequest:
        count = len(request.inputs)
        if count > 1 and _one_at_a_time(model):
            raise InvalidRequestError(
                f"Invalid request: {model!r} on Vertex AI embeds one input per request and this "
                f"request has {count}: send one input at a time, or route batches to "
                "text-embedding-005 or text-multilingual-embedding-002 (up to "
                f"{MAX_INSTANCES} inputs).",
                param="input",
            )
        if count > MAX_INSTANCES:
            raise InvalidRequestError(
                f"Invalid request: Vertex AI embeds at most {MAX_INSTANCES} inputs per request "
                f"and this request has {count}: split it.",
                param="input",
            )
        task = {"task_type": request.task_type} if request.task_type else {}
        body: dict[str, Any] = {"instances": [{"content": text, **task} for text in request.inputs]}
        if request.dimensions is not None:
            body["parameters"] = {"outputDimensionality": request.dimensions}
        return UpstreamRequest(path=predict_path(model), body=body)

    def reply_to_internal(self, body: dict[str, Any], request: EmbedRequest) -> Embeddings:
        predictions = body.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(request.inputs):
            found = len(predictions) if isinstance(predictions, list) else "no"
            raise UpstreamUnavailableError(
                f"Vertex AI answered {found} predictions for {len(request.inputs)} inputs."
            )
        vectors = []
        tokens: int | None = 0
        for prediction in predictions:
            embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
            values = embeddings.get("values") if isinstance(embeddings, dict) else None
            if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
                raise UpstreamUnavailableError("Vertex AI answered a prediction without values.")
            vectors.append(tuple(float(v) for v in values))
            assert isinstance(embeddings, dict)
            statistics = embeddings.get("statistics")
            count = statistics.get("token_count") if isinstance(statistics, dict) else None
            if tokens is not None and isinstance(count, (int, float)):
                tokens += int(count)
            else:
                tokens = None  # one prediction without a count: the whole is estimated
        return Embeddings(vectors=tuple(vectors), input_tokens=tokens)


EMBEDDINGS = VertexEmbeddings()
