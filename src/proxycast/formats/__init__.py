"""The registry: the only list of wire formats proxycast knows.

Each upstream format is a provider ``type`` of the configuration (with its default base URL and the
environment variables of env-only mode); each inbound dialect is an API clients speak, with its routes.
Nothing outside ``formats/`` names a format: the configuration, the routes and the exchange read these
two tables. ``docs/architecture.md`` says how to add to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxycast.formats.anthropic.inbound import DIALECT as ANTHROPIC_DIALECT
from proxycast.formats.anthropic.models import MODELS as ANTHROPIC_MODELS
from proxycast.formats.anthropic.upstream import UPSTREAM as ANTHROPIC
from proxycast.formats.azure.upstream import UPSTREAM as AZURE
from proxycast.formats.bedrock.embeddings import EMBEDDINGS as BEDROCK_EMBEDDINGS
from proxycast.formats.bedrock.upstream import UPSTREAM as BEDROCK
from proxycast.formats.gemini.embeddings import DIALECT_EMBEDDINGS as GEMINI_EMBEDDINGS_DIALECT
from proxycast.formats.gemini.embeddings import EMBEDDINGS as GEMINI_EMBEDDINGS
from proxycast.formats.gemini.inbound import DIALECT as GEMINI_DIALECT
from proxycast.formats.gemini.models import MODELS as GEMINI_MODELS
from proxycast.formats.gemini.upstream import UPSTREAM as GEMINI
from proxycast.formats.openai.embeddings import EMBEDDINGS as OPENAI_EMBEDDINGS
from proxycast.formats.openai.embeddings import UPSTREAM_EMBEDDINGS as OPENAI_UPSTREAM_EMBEDDINGS
from proxycast.formats.openai.inbound import DIALECT as OPENAI_DIALECT
from proxycast.formats.openai.models import MODELS as OPENAI_MODELS
from proxycast.formats.openai.upstream import UPSTREAM as OPENAI
from proxycast.formats.responses.inbound import DIALECT as RESPONSES_DIALECT
from proxycast.formats.vertex.embeddings import EMBEDDINGS as VERTEX_EMBEDDINGS
from proxycast.formats.vertex.upstream import UPSTREAM as VERTEX

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.formats.contracts import Headers, InboundDialect, ModelListing, UpstreamFormat
    from proxycast.formats.embeddings import EmbeddingsDialect, EmbeddingsUpstream

UPSTREAMS: Mapping[str, UpstreamFormat] = {
    upstream.type: upstream for upstream in (OPENAI, ANTHROPIC, GEMINI, AZURE, BEDROCK, VERTEX)
}
"""Provider ``type`` -> its format, in the order env-only mode adds providers."""

EMBEDDINGS: Mapping[str, EmbeddingsUpstream] = {
    OPENAI.type: OPENAI_UPSTREAM_EMBEDDINGS,
    GEMINI.type: GEMINI_EMBEDDINGS,
    AZURE.type: OPENAI_UPSTREAM_EMBEDDINGS,  # at its deployment's URL (AzureDeployments.placed)
    BEDROCK.type: BEDROCK_EMBEDDINGS,  # InvokeModel: Titan (one input), Cohere Embed (batches)
    VERTEX.type: VERTEX_EMBEDDINGS,  # :predict, under the project's path (VertexUpstream.placed)
}
"""Provider ``type`` -> how embeddings requests of another API's clients are converted for it (a
provider of the client's own format gets them forwarded; a type not here has no embeddings)."""

EMBEDDING_DIALECTS: Mapping[str, EmbeddingsDialect] = {
    OPENAI_DIALECT.name: OPENAI_EMBEDDINGS,
    GEMINI_DIALECT.name: GEMINI_EMBEDDINGS_DIALECT,
}
"""Dialect name -> how its embeddings route reads requests and writes answers."""

DIALECTS: tuple[InboundDialect, ...] = (
    ANTHROPIC_DIALECT,
    RESPONSES_DIALECT,
    GEMINI_DIALECT,
    OPENAI_DIALECT,
)
"""The inbound APIs; the first whose ``owns`` accepts a path renders the errors there (OpenAI's
dialect, last, owns every path)."""


MODEL_LISTINGS: tuple[ModelListing, ...] = (GEMINI_MODELS, ANTHROPIC_MODELS, OPENAI_MODELS)
"""The shapes of ``GET /v1/models``: the first that the request asks for answers (OpenAI's, last,
answers every request)."""


def model_listing(headers: Headers, path: str) -> ModelListing:
    """The Models API shape this request (to a models route at ``path``) asks for."""
    return next(listing for listing in MODEL_LISTINGS if listing.wants(headers, path))


def dialect_for(path: str) -> InboundDialect:
    """The dialect whose clients call ``path`` (the one that renders its errors)."""
    return next(d for d in DIALECTS if d.owns(path))
