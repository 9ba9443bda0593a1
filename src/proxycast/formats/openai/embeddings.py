"""OpenAI's ``/v1/embeddings`` for clients: the request read into the internal model (when it is
converted; forwarded, only its model is read), the answer written back (docs/mappings.md,
"Embeddings")."""

from __future__ import annotations

import base64
import math
import struct
from typing import TYPE_CHECKING, Any

from proxycast.errors import InvalidRequestError, UpstreamUnavailableError
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.embeddings import Embeddings, EmbedRequest
from proxycast.formats.json_spans import replace_value
from proxycast.formats.passthrough import read_forwarded
from proxycast.formats.required import envelope

if TYPE_CHECKING:
    from collections.abc import Mapping


def read(body: dict[str, Any], provider: str) -> EmbedRequest:
    """The request as inputs of text; a 400 naming the field otherwise (token arrays are OpenAI's
    own tokens: another provider cannot read them)."""
    raw = body.get("input")
    inputs = raw if isinstance(raw, list) else [raw]
    if not inputs or raw is None:
        raise InvalidRequestError(
            "Invalid request: 'input' is required (a string or a list of strings).", param="input"
        )
    for index, item in enumerate(inputs):
        if not isinstance(item, str):
            where = "input" if not isinstance(raw, list) else f"input[{index}]"
            raise InvalidRequestError(
                f"Invalid request: '{where}' must be a string: provider {provider!r} embeds text, "
                "not OpenAI token arrays.",
                param=where,
            )
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
        raise InvalidRequestError(
            "Invalid request: 'dimensions' must be a positive integer.", param="dimensions"
        )
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequestError(
            "Invalid request: 'encoding_format' must be 'float' or 'base64'.",
            param="encoding_format",
        )
    return EmbedRequest(inputs=tuple(str(i) for i in inputs), dimensions=dimensions)


def check_input(raw: Any) -> None:
    """Refuse on every path an ``input`` no upstream accepts: OpenAI's is a string, or a non-empty
    list of strings, of token ids, or of lists of token ids (formats/required.py: a known field of
    the wrong JSON type is never forwarded)."""
    if isinstance(raw, str):
        return
    if isinstance(raw, list) and raw:
        if all(isinstance(i, str) for i in raw) or all(_tokens(i) for i in raw):
            return
        if all(isinstance(i, list) and i and all(_tokens(t) for t in i) for i in raw):
            return
    raise InvalidRequestError(
        "Invalid request: 'input' is required: a string, or a non-empty list of strings, of token "
        "ids, or of lists of token ids.",
        param="input",
    )


def _tokens(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def estimate_tokens(request: EmbedRequest) -> int:
    """About four characters a token (an estimate, said to be one)."""
    return sum(math.ceil(len(text) / 4) for text in request.inputs)


def reply_from_internal(
    embeddings: Embeddings, request: EmbedRequest, model: str, encoding: str
) -> dict[str, Any]:
    """OpenAI's ``list`` of ``embedding`` objects; ``base64``: little-endian float32, as OpenAI."""
    data = []
    for index, vector in enumerate(embeddings.vectors):
        value: Any = list(vector)
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = embeddings.input_tokens
    if tokens is None:
        tokens = estimate_tokens(request)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class OpenAIEmbeddings:
    """``POST /v1/embeddings`` as OpenAI's SDKs speak it."""

    native_type = "openai"

    def client_model(self, body: dict[str, Any], params: Mapping[str, str]) -> str:
        model = envelope(body)[0]
        check_input(body.get("input"))
        return model

    def read(self, body: dict[str, Any], provider: str) -> EmbedRequest:
        return read(body, provider)

    def forward(
        self, text: str, spans: Mapping[str, tuple[int, int]], model: str
    ) -> UpstreamRequest:
        text = replace_value(text, spans["model"], model)
        return UpstreamRequest(path="/embeddings", raw=text.encode(), stream=False)

    def forwarded_reply(
        self, data: bytes, client_model: str, provider: str
    ) -> tuple[bytes, int | None]:
        data, reply = read_forwarded(data, client_model, provider)
        usage = reply.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return data, tokens if isinstance(tokens, int) else None

    def reply_from_internal(
        self, embeddings: Embeddings, request: EmbedRequest, client_model: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        out = reply_from_internal(
            embeddings, request, client_model, body.get("encoding_format") or "float"
        )
        return out, out["usage"]["prompt_tokens"]


EMBEDDINGS = OpenAIEmbeddings()


class OpenAIEmbeddingsUpstream:
    """Embeddings of another API's clients (Gemini's ``:embedContent``) to an OpenAI-compatible
    upstream: the internal request as ``POST /embeddings``, its vectors read back."""

    def request_from_internal(self, request: EmbedRequest, model: str) -> UpstreamRequest:
        body: dict[str, Any] = {
            "model": model,
            "input": list(request.inputs),
            "encoding_format": "float",
        }
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        return UpstreamRequest(path="/embeddings", body=body)

    def reply_to_internal(self, body: dict[str, Any], request: EmbedRequest) -> Embeddings:
        data = body.get("data")
        if not isinstance(data, list) or len(data) != len(request.inputs):
            raise UpstreamUnavailableError(
                f"The upstream answered {len(data) if isinstance(data, list) else 'no'} embeddings "
                f"for {len(request.inputs)} inputs."
            )
        ordered = sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
        vectors = []
        for item in ordered:
            values = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(values, list):
                raise UpstreamUnavailableError("The upstream answered an embedding without values.")
            vectors.append(tuple(float(v) for v in values))
        usage = body.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return Embeddings(
            vectors=tuple(vectors), input_tokens=tokens if isinstance(tokens, int) else None
        )


UPSTREAM_EMBEDDINGS = OpenAIEmbeddingsUpstream()
