"""Embeddings: the internal request and answer, and what an upstream format that converts them does.

``POST /v1/embeddings`` (OpenAI's shape, ``api/embeddings.py``) is forwarded as it is to
OpenAI-compatible providers; for other formats it goes through this small internal model (the hub of
embeddings: inputs in, vectors out), like chat goes through ``hub``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from proxycast.formats.contracts import UpstreamRequest


@attrs.frozen(kw_only=True)
class EmbedRequest:
    inputs: tuple[str, ...]
    dimensions: int | None = None


@attrs.frozen(kw_only=True)
class Embeddings:
    vectors: tuple[tuple[float, ...], ...]
    """One per input, in order."""
    input_tokens: int | None = None
    """As the upstream counted them; None when it does not say."""


class EmbeddingsUpstream(Protocol):
    """An upstream format that converts embeddings requests."""

    def request_from_internal(self, request: EmbedRequest, model: str) -> UpstreamRequest: ...

    def reply_to_internal(self, body: dict[str, Any], request: EmbedRequest) -> Embeddings:
        """The vectors of an answer (raises ``UpstreamUnavailableError`` for a malformed one)."""
        ...
