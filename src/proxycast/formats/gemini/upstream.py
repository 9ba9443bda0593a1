"""Gemini upstreams: ``{base_url}/v1beta/models/{model}:generateContent`` (or
``:streamGenerateContent?alt=sse``) with ``x-goog-api-key``."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from proxycast.formats import sse
from proxycast.formats.auth import HeaderAuth
from proxycast.formats.contracts import (
    EnvDefaults,
    ModelsPage,
    TokenCount,
    Unconfigured,
    UpstreamRequest,
)
from proxycast.formats.gemini import errors, outbound

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.config import ProviderConfig
    from proxycast.errors import ErrorInfo
    from proxycast.formats import internal


def _total_tokens(body: dict[str, Any]) -> int:
    count = body.get("totalTokens")
    return count if isinstance(count, int) else 0


class GeminiUpstream(Unconfigured):
    """The ``gemini`` provider type."""

    type = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    env = EnvDefaults(
        key_variables=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        base_url_variable="GEMINI_BASE_URL",
        models=("gemini-*", "gemma-*"),
    )
    headers: Mapping[str, str] = MappingProxyType({})

    def owner(self, provider: str, url: str) -> str:
        return "google"

    def credentials(self, provider: ProviderConfig) -> tuple[HeaderAuth, ...]:
        return tuple(HeaderAuth("x-goog-api-key", key) for key in provider.api_keys)

    def request_from_internal(
        self, conversation: internal.Conversation, model: str
    ) -> UpstreamRequest:
        return outbound.request_from_internal(conversation, model)

    def searches(self, conversation: internal.Conversation) -> bool:
        return outbound.searches(conversation)

    def reply_to_internal(
        self, body: dict[str, Any], request: UpstreamRequest
    ) -> list[internal.Reply]:
        return outbound.response_to_internal(body)

    def stream_decoder(self, request: UpstreamRequest) -> outbound.StreamDecoder:
        return outbound.StreamDecoder()

    def event_sizes(self, limit: int) -> sse.EventSizes:
        return sse.EventSizes(limit)

    def count_tokens(self, conversation: internal.Conversation, model: str) -> TokenCount:
        """``:countTokens`` with the generateContent request it would count (its generation settings
        left out: countTokens does not take them)."""
        body = dict(outbound.request_from_internal(conversation, model).body)
        body.pop("generationConfig", None)
        request = UpstreamRequest(
            path=outbound.path(model, "countTokens"),
            body={"generateContentRequest": {"model": f"models/{model}", **body}},
        )
        return TokenCount(request, _total_tokens)

    def error_info(self, status: int, headers: Mapping[str, str], body: Any) -> ErrorInfo | None:
        return errors.error_info(body)

    def models_url(self, provider: ProviderConfig) -> str:
        return provider.url + "/v1beta/models?pageSize=1000"

    def models_page(self, body: Any) -> ModelsPage | None:
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            return None
        ids = tuple(
            m["name"].removeprefix("models/")
            for m in models
            if isinstance(m, dict) and isinstance(m.get("name"), str)
        )
        token = body.get("nextPageToken")
        return ModelsPage(ids, f"pageToken={quote(token)}" if isinstance(token, str) else None)


UPSTREAM = GeminiUpstream()
