"""OpenAI-compatible upstreams (OpenAI, DeepSeek, vLLM, Ollama, ...): ``{base_url}/chat/completions``
with ``Authorization: Bearer KEY``."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from proxycast.formats import sse
from proxycast.formats.auth import HeaderAuth
from proxycast.formats.contracts import (
    EnvDefaults,
    Estimate,
    ModelsPage,
    Unconfigured,
    UpstreamRequest,
)
from proxycast.formats.openai import errors, outbound
from proxycast.formats.quota import Quota, openai_quota

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.config import ProviderConfig
    from proxycast.errors import ErrorInfo
    from proxycast.formats import internal


estimate_tokens = outbound.estimate_input


class OpenAIUpstream(Unconfigured):
    """The ``openai`` provider type."""

    type = "openai"
    default_base_url = "https://api.openai.com/v1"
    env = EnvDefaults(
        key_variables=("OPENAI_API_KEY",),
        base_url_variable="OPENAI_BASE_URL",
        models=("gpt-*", "o1*", "o3*", "o4*", "chatgpt-*"),
    )
    headers: Mapping[str, str] = MappingProxyType({})

    def owner(self, provider: str, url: str) -> str:
        return "openai" if url.startswith("https://api.openai.com") else provider

    def credentials(self, provider: ProviderConfig) -> tuple[HeaderAuth, ...]:
        return tuple(HeaderAuth("authorization", f"Bearer {key}") for key in provider.api_keys)

    def request_from_internal(
        self, conversation: internal.Conversation, model: str
    ) -> UpstreamRequest:
        return outbound.request_from_internal(conversation, model)

    def searches(self, conversation: internal.Conversation) -> bool:
        return outbound.searches(conversation)

    def reply_to_internal(
        self, body: dict[str, Any], request: UpstreamRequest
    ) -> list[internal.Reply]:
        return [outbound.response_to_internal(body, dict(request.tool_names), request.body)]

    def stream_decoder(self, request: UpstreamRequest) -> outbound.StreamDecoder:
        return outbound.StreamDecoder(dict(request.tool_names), request.body)

    def event_sizes(self, limit: int) -> sse.EventSizes:
        return sse.EventSizes(limit)

    def count_tokens(self, conversation: internal.Conversation, model: str) -> Estimate:
        # OpenAI-compatible servers have no count endpoint: estimate from the text the model would read.
        return Estimate(estimate_tokens(outbound.request_from_internal(conversation, model).body))

    def error_info(self, status: int, headers: Mapping[str, str], body: Any) -> ErrorInfo | None:
        return errors.error_info(body)

    def quota(self, headers: Mapping[str, str]) -> Quota | None:
        return openai_quota(headers)

    def models_url(self, provider: ProviderConfig) -> str:
        return provider.url + "/models"

    def models_page(self, body: Any) -> ModelsPage | None:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            return None
        return ModelsPage(tuple(m["id"] for m in data if isinstance(m, dict) and "id" in m))


UPSTREAM = OpenAIUpstream()
