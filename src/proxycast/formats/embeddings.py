"""Embeddings: the internal request and answer, and what an upstream format that converts them does.

``POST /v1/embeddings`` (OpenAI's shape) is forwarded as it is to OpenAI-compatible providers; for
other formats it goes through this small internal model (inputs in, vectors out), as chat goes through
``formats.internal``. The exchange (``Exchange.embed``) runs it like every model call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.formats.contracts import UpstreamRequest


@attrs.frozen(kw_only=True)
class EmbedRequest:
    inputs: tuple[str, ...]
    dimensions: int | None = None
    task_type: str | None = None
    """Gemini's ``taskType`` (``RETRIEVAL_QUERY``...), for upstreams that take one (Vertex's
    ``task_type``, Cohere's ``input_type``); None when the client gave none."""


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


class EmbeddingsDialect(Protocol):
    """An embeddings API clients speak (OpenAI's ``/v1/embeddings``)."""

    @property
    def native_type(self) -> str:
        """The upstream format spoken the same way: requests to it are forwarded, not converted."""
        ...

    def client_model(self, body: dict[str, Any], params: Mapping[str, str]) -> str:
        """The model the client asked for: in its body, or its route's path (``params``)."""
        ...

    def read(self, body: dict[str, Any], provider: str) -> EmbedRequest:
        """The request as the internal model, to convert it for ``provider`` (400 naming the field
        it cannot carry)."""
        ...

    def forward(
        self, text: str, spans: Mapping[str, tuple[int, int]], model: str
    ) -> UpstreamRequest:
        """The client's own bytes for an upstream of :attr:`native_type`, the model renamed."""
        ...

    def forwarded_reply(
        self, data: bytes, client_model: str, provider: str
    ) -> tuple[bytes, int | None]:
        """A forwarded answer with the client's model name, and the input tokens it reports."""
        ...

    def reply_from_internal(
        self, embeddings: Embeddings, request: EmbedRequest, client_model: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        """The answer in the client's shape (``body`` is its request: the encoding it asked for),
        and the input tokens it reports (counted upstream, or estimated)."""
        ...
