"""Embeddings on Bedrock: InvokeModel (``/model/{id}/invoke``) with the model family's own body
(docs/mappings.md, "Embeddings").

- Amazon Titan Text Embeddings (``amazon.titan-embed-text-v2:0``, ``-v1``): ``{"inputText": TEXT,
  "dimensions": N, "normalize": true}`` -> ``{"embedding": [...], "inputTextTokenCount": n}``. One
  text per call, so a batch is refused with a 400 that names the fix (one input at a time, or a
  Cohere model); v1 takes no ``dimensions``; v2 takes 256, 512 or 1024 (Bedrock says so itself).
- Cohere Embed (``cohere.embed-english-v3``, ``-multilingual-v3``, ``cohere.embed-v4:0``):
  ``{"texts": [...], "input_type": "search_document"}`` (a Gemini client's ``taskType`` mapped:
  :data:`INPUT_TYPES`) -> ``{"embeddings": [[...], ...]}`` (v4:
  ``embedding_types: ["float"]`` and ``output_dimension``, answered as ``{"embeddings": {"float":
  [[...]]}}``); up to 96 texts a call. Its answer does not count tokens: they are estimated.

Exchanges of one request per client request (``Exchange.embed``) are what the contract allows: a
batch goes to a model that takes one.
"""

from __future__ import annotations

from typing import Any

from proxycast.errors import InvalidRequestError, UpstreamUnavailableError
from proxycast.formats.bedrock.converse import base_model, model_path
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.embeddings import Embeddings, EmbedRequest

COHERE_MAX_TEXTS = 96
BATCH_MODEL = "cohere.embed-english-v3"
"""The model a refused batch is pointed at."""


INPUT_TYPES = {
    "RETRIEVAL_QUERY": "search_query",
    "CODE_RETRIEVAL_QUERY": "search_query",
    "QUESTION_ANSWERING": "search_query",
    "FACT_VERIFICATION": "search_query",
    "RETRIEVAL_DOCUMENT": "search_document",
    "CLASSIFICATION": "classification",
    "CLUSTERING": "clustering",
}
"""Gemini's task types as Cohere's ``input_type``; any other (and none) is ``search_document``:
what OpenAI's clients, which say nothing, embed most (documents to index)."""


def _family(model: str) -> str:
    base = base_model(model)
    if base.startswith("amazon.titan-embed-text"):
        return "titan"
    if base.startswith("cohere.embed"):
        return "cohere"
    raise InvalidRequestError(
        f"Invalid request: {model!r} is not a Bedrock text embeddings model proxycast can call: "
        "use amazon.titan-embed-text-v2:0 (one input per request) or a Cohere Embed model "
        f"({BATCH_MODEL}, cohere.embed-multilingual-v3, cohere.embed-v4:0) for batches.",
        param="model",
    )


def _titan(request: EmbedRequest, model: str) -> dict[str, Any]:
    if len(request.inputs) > 1:
        raise InvalidRequestError(
            f"Invalid request: {model!r} embeds one input per request on Bedrock and this request "
            f"has {len(request.inputs)}: send one input at a time, or route batches to a Cohere "
            f"Embed model ({BATCH_MODEL}: up to {COHERE_MAX_TEXTS} inputs).",
            param="input",
        )
    body: dict[str, Any] = {"inputText": request.inputs[0]}
    if "titan-embed-text-v1" in model:
        if request.dimensions is not None:
            raise InvalidRequestError(
                f"Invalid request: {model!r} has no 'dimensions' (always 1536): remove it, or use "
                "amazon.titan-embed-text-v2:0 (256, 512 or 1024).",
                param="dimensions",
            )
        return body
    body["normalize"] = True  # as OpenAI's and Vertex's vectors are
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def _cohere(request: EmbedRequest, model: str) -> dict[str, Any]:
    if len(request.inputs) > COHERE_MAX_TEXTS:
        raise InvalidRequestError(
            f"Invalid request: Cohere Embed on Bedrock takes at most {COHERE_MAX_TEXTS} inputs per "
            f"request and this request has {len(request.inputs)}: split it.",
            param="input",
        )
    input_type = INPUT_TYPES.get(request.task_type or "", "search_document")
    body: dict[str, Any] = {"texts": list(request.inputs), "input_type": input_type}
    if "-v3" in model:
        if request.dimensions is not None:
            raise InvalidRequestError(
                f"Invalid request: {model!r} has no 'dimensions' (always 1024): remove it, or use "
                "cohere.embed-v4:0 (256, 512, 1024 or 1536).",
                param="dimensions",
            )
        return body
    body["embedding_types"] = ["float"]
    if request.dimensions is not None:
        body["output_dimension"] = request.dimensions
    return body


def _vector(values: Any) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise UpstreamUnavailableError("Bedrock answered an embedding without its values.")
    return tuple(float(v) for v in values)


class BedrockEmbeddings:
    """Embeddings requests of every client to a ``bedrock`` provider."""

    def request_from_internal(self, request: EmbedRequest, model: str) -> UpstreamRequest:
        family = _family(model)
        body = _titan(request, model) if family == "titan" else _cohere(request, model)
        return UpstreamRequest(path=model_path(model, "invoke"), body=body)

    def reply_to_internal(self, body: dict[str, Any], request: EmbedRequest) -> Embeddings:
        if "embedding" in body:  # Titan
            tokens = body.get("inputTextTokenCount")
            return Embeddings(
                vectors=(_vector(body["embedding"]),),
                input_tokens=tokens if isinstance(tokens, int) else None,
            )
        found = body.get("embeddings")
        if isinstance(found, dict):  # Cohere's embeddings_by_type
            found = found.get("float")
        if not isinstance(found, list) or len(found) != len(request.inputs):
            count = len(found) if isinstance(found, list) else "no"
            raise UpstreamUnavailableError(
                f"Bedrock answered {count} embeddings for {len(request.inputs)} inputs."
            )
        return Embeddings(vectors=tuple(_vector(v) for v in found))


EMBEDDINGS = BedrockEmbeddings()
