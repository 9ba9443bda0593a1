"""Embeddings to Gemini: one input to ``:embedContent``, several to ``:batchEmbedContents``
(docs/mappings.md, "Embeddings")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxycast.errors import UpstreamUnavailableError
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.embeddings import Embeddings
from proxycast.formats.gemini.outbound import path

if TYPE_CHECKING:
    from proxycast.formats.embeddings import EmbedRequest


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
