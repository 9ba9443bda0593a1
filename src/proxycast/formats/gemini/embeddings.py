"""Embeddings to Gemini upstreams (one input to ``:embedContent``, several to ``:batchEmbedContents``)
and from Gemini API clients (docs/mappings.md, "Embeddings")."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from proxycast.errors import InvalidRequestError, UpstreamUnavailableError
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.embeddings import Embeddings, EmbedRequest
from proxycast.formats.gemini.outbound import path
from proxycast.formats.json_spans import dumps_text

if TYPE_CHECKING:
    from collections.abc import Mapping


def _content(text: str, request: EmbedRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
    if request.dimensions is not None:
        out["outputDimensionality"] = request.dimensions
    return out


def _values(item: Any) -> tuple[float, ...]:
    values = item.get("values") if isinstance(item, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise UpstreamUnavailableError("Gemini answered an embedding without its values.")
    return tuple(float(v) for v in values)


class GeminiEmbeddings:
    def request_from_internal(self, request: EmbedRequest, model: str) -> UpstreamRequest:
        if len(request.inputs) == 1:
            return UpstreamRequest(
                path=path(model, "embedContent"), body=_content(request.inputs[0], request)
            )
        requests = [{"model": f"models/{model}", **_content(t, request)} for t in request.inputs]
        return UpstreamRequest(path=path(model, "batchEmbedContents"), body={"requests": requests})

    def reply_to_internal(self, body: dict[str, Any], request: EmbedRequest) -> Embeddings:
        vectors: tuple[tuple[float, ...], ...]
        if "embedding" in body:
            vectors = (_values(body["embedding"]),)
        else:
            items = body.get("embeddings")
            if not isinstance(items, list):
                raise UpstreamUnavailableError("Gemini answered without embeddings.")
            vectors = tuple(_values(item) for item in items)
        if len(vectors) != len(request.inputs):
            raise UpstreamUnavailableError(
                f"Gemini answered {len(vectors)} embeddings for {len(request.inputs)} inputs."
            )
        return Embeddings(vectors=vectors)


EMBEDDINGS = GeminiEmbeddings()


def _texts(content: Any, where: str) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        raise InvalidRequestError(
            f"Invalid value at '{where}': a content with parts is required.", param=where
        )
    texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if len(texts) != len(parts):
        raise InvalidRequestError(
            f"Invalid value at '{where}.parts': only text parts can be embedded through this "
            "gateway's other upstreams.",
            param=f"{where}.parts",
        )
    return "".join(texts)


class GeminiEmbeddingsDialect:
    """``:embedContent`` and ``:batchEmbedContents`` as Gemini API clients send them: forwarded to
    Gemini upstreams, converted for the others (docs/mappings.md, "Embeddings")."""

    native_type = "gemini"

    def client_model(self, body: dict[str, Any], params: Mapping[str, str]) -> str:
        return params["model"].removeprefix("models/")

    def read(self, body: dict[str, Any], provider: str) -> EmbedRequest:
        if isinstance(body.get("requests"), list):
            items = body["requests"]
            texts = [
                _texts(r.get("content") if isinstance(r, dict) else None, f"requests[{i}].content")
                for i, r in enumerate(items)
            ]
            first = items[0] if items and isinstance(items[0], dict) else {}
        else:
            texts, first = [_texts(body.get("content"), "content")], body
        if not texts:
            raise InvalidRequestError(
                "Invalid value at 'requests': nothing to embed.", param="requests"
            )
        dimensions = first.get("outputDimensionality")
        if dimensions is not None and (
            not isinstance(dimensions, int)
            or isinstance(dimensions, bool)
            or not 0 < dimensions <= 65536
        ):
            raise InvalidRequestError(
                "Invalid value at 'outputDimensionality': a positive integer is required.",
                param="outputDimensionality",
            )
        task_type = first.get("taskType", first.get("task_type"))
        if task_type is not None and not isinstance(task_type, str):
            raise InvalidRequestError(
                "Invalid value at 'taskType': a task type name is required (RETRIEVAL_QUERY, "
                "RETRIEVAL_DOCUMENT, SEMANTIC_SIMILARITY...).",
                param="taskType",
            )
        return EmbedRequest(inputs=tuple(texts), dimensions=dimensions, task_type=task_type)

    def forward(
        self, text: str, spans: Mapping[str, tuple[int, int]], model: str
    ) -> UpstreamRequest:
        if "requests" not in spans:
            return UpstreamRequest(path=path(model, "embedContent"), raw=text.encode())
        body = json.loads(text)  # each request names the model, which must be the path's
        if not isinstance(body.get("requests"), list):
            raise InvalidRequestError(
                "Invalid value at 'requests': a list of requests is required.", param="requests"
            )
        for item in body["requests"]:
            if isinstance(item, dict):
                item["model"] = f"models/{model}"
        return UpstreamRequest(
            path=path(model, "batchEmbedContents"), raw=dumps_text(body).encode()
        )

    def forwarded_reply(
        self, data: bytes, client_model: str, provider: str
    ) -> tuple[bytes, int | None]:
        return data, None  # Gemini's embeddings say nothing of tokens

    def reply_from_internal(
        self, embeddings: Embeddings, request: EmbedRequest, client_model: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        vectors = [{"values": list(v)} for v in embeddings.vectors]
        tokens = embeddings.input_tokens
        if tokens is None:
            tokens = sum(-(-len(t) // 4) for t in request.inputs)
        if isinstance(body.get("requests"), list):
            return {"embeddings": vectors}, tokens
        return {"embedding": vectors[0]}, tokens


DIALECT_EMBEDDINGS = GeminiEmbeddingsDialect()
