"""Anthropic upstreams: ``{base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version``."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from proxycast.formats import sse
from proxycast.formats.anthropic import errors, outbound
from proxycast.formats.auth import HeaderAuth
from proxycast.formats.contracts import (
    EnvDefaults,
    ModelsPage,
    TokenCount,
    Unconfigured,
    UpstreamRequest,
)
from proxycast.formats.quota import Quota, anthropic_quota

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.config import ProviderConfig
    from proxycast.errors import ErrorInfo
    from proxycast.formats import internal

ANTHROPIC_VERSION = "2023-06-01"


def _input_tokens(body: dict[str, Any]) -> int:
    count = body.get("input_tokens")
    return count if isinstance(count, int) else 0


class AnthropicUpstream(Unconfigured):
    """The ``anthropic`` provider type."""

    type = "anthropic"
    default_base_url = "https://api.anthropic.com"
    env = EnvDefaults(
        key_variables=("ANTHROPIC_API_KEY",),
        base_url_variable="ANTHROPIC_BASE_URL",
        models=("claude-*",),
    )
    headers: Mapping[str, str] = MappingProxyType({"anthropic-version": ANTHROPIC_VERSION})

    def owner(self, provider: str, url: str) -> str:
        return "anthropic"

    def credentials(self, provider: ProviderConfig) -> tuple[HeaderAuth, ...]:
        return tuple(HeaderAuth("x-api-key", key) for key in provider.api_keys)

    def request_from_internal(
        self, conversation: internal.Conversation, model: str
    ) -> UpstreamRequest:
        return outbound.request_from_internal(conversation, model)

    def searches(self, conversation: internal.Conversation) -> bool:
        return conversation.params.web_search is not None

    def reply_to_internal(
        self, body: dict[str, Any], request: UpstreamRequest
    ) -> list[internal.Reply]:
        return [outbound.response_to_internal(body, request)]

    def stream_decoder(self, request: UpstreamRequest) -> outbound.StreamDecoder:
        return outbound.StreamDecoder(request)

    def event_sizes(self, limit: int) -> sse.EventSizes:
        return sse.EventSizes(limit)

    def count_tokens(self, conversation: internal.Conversation, model: str) -> TokenCount:
        body = dict(outbound.request_from_internal(conversation, model).body)
        for unused in (
            "max_tokens",
            "stream",
            "stop_sequences",
            "temperature",
            "top_p",
            "metadata",
            "service_tier",
        ):
            body.pop(unused, None)
        request = UpstreamRequest(path="/v1/messages/count_tokens", body=body)
        return TokenCount(request, _input_tokens)

    def error_info(self, status: int, headers: Mapping[str, str], body: Any) -> ErrorInfo | None:
        return errors.error_info(body)

    def models_url(self, provider: ProviderConfig) -> str:
        return provider.url + "/v1/models?limit=1000"

    def quota(self, headers: Mapping[str, str]) -> Quota | None:
        return anthropic_quota(headers)

    def models_page(self, body: Any) -> ModelsPage | None:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            return None
        ids = tuple(m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str))
        last = body.get("last_id")
        more = body.get("has_more") is True and isinstance(last, str)
        return ModelsPage(ids, f"after_id={quote(last)}" if more else None)


UPSTREAM = AnthropicUpstream()
