"""Bedrock upstreams: ``{base_url}/model/{modelId}/converse`` (``/converse-stream``) for every model,
or, with ``api = "invoke"``, ``/invoke`` (``/invoke-with-response-stream``) for Anthropic models;
signed with SigV4 or a Bedrock API key; models listed from the control plane
(``bedrock.{region}.amazonaws.com``: ListFoundationModels, then ListInferenceProfiles)."""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from proxycast.formats.auth import HeaderAuth
from proxycast.formats.bedrock import auth, converse, errors, eventstream, invoke
from proxycast.formats.contracts import (
    EnvDefaults,
    ModelsPage,
    OwnRequests,
    TokenCount,
    UpstreamRequest,
    configured_url,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import httpx

    from proxycast.config import ProviderConfig
    from proxycast.errors import ErrorInfo
    from proxycast.formats import internal
    from proxycast.formats.quota import Quota

APIS = ("converse", "invoke")
PROFILES_PAGE = "inference-profiles?maxResults=1000"
"""The second listing, relative to the first (``.../foundation-models``)."""


def region(provider: ProviderConfig, env: Mapping[str, str] = os.environ) -> str:
    """The provider's region, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` ("" when none)."""
    return provider.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""


def api_keys(provider: ProviderConfig, env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The provider's Bedrock API keys, else ``AWS_BEARER_TOKEN_BEDROCK``'s (as AWS's SDKs read it)."""
    if provider.api_keys:
        return provider.api_keys
    token = env.get("AWS_BEARER_TOKEN_BEDROCK", "")
    return (token,) if token else ()


def _count(body: dict[str, Any]) -> int:
    count = body.get("inputTokens")
    return count if isinstance(count, int) else 0


class BedrockUpstream(OwnRequests):  # every client is converted for it
    """The ``bedrock`` provider type (``api``: which API Anthropic models go through)."""

    type = "bedrock"
    default_base_url = "https://bedrock-runtime.{region}.amazonaws.com"
    env = EnvDefaults(
        key_variables=("AWS_BEARER_TOKEN_BEDROCK",),
        # the region too: keys alone in the environment (for another tool) must not add a provider
        # that stops proxycast from starting
        chain_variables=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"),
        base_url_variable="AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
        models=(
            "anthropic.*",
            "us.anthropic.*",
            "eu.anthropic.*",
            "apac.anthropic.*",
            "global.anthropic.*",
            "amazon.*",
            "us.amazon.*",
            "meta.*",
            "us.meta.*",
            "mistral.*",
            "cohere.*",
            "ai21.*",
            "deepseek.*",
            "us.deepseek.*",
        ),
    )
    settings = frozenset({"api", "region", "profile"})
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(self, api: str = "converse") -> None:
        self.api = api

    def base_url(self, provider: ProviderConfig) -> str:
        where = region(provider)
        default = (
            self.default_base_url.replace("{region}", where) if where else self.default_base_url
        )
        return configured_url(provider, default)

    def problems(self, provider: ProviderConfig) -> Sequence[str]:
        found: list[str] = []
        if provider.api and provider.api not in APIS:
            found.append(f"api: {provider.api!r} is not one of {', '.join(APIS)}")
        keys = api_keys(provider)
        signed = not keys
        if not region(provider) and (signed or not provider.base_url):
            found.append(
                "no AWS region: set the provider's region, or AWS_REGION / AWS_DEFAULT_REGION"
            )
        if signed:
            problem = auth.chain_problem(provider.profile)
            if problem:
                found.append(problem)
        return found

    def bind(self, provider: ProviderConfig) -> BedrockUpstream:
        return BedrockUpstream(provider.api or "converse")

    def owner(self, provider: str, url: str) -> str:
        return "bedrock"

    def credentials(self, provider: ProviderConfig) -> tuple[httpx.Auth, ...]:
        keys = api_keys(provider)
        if keys:
            return tuple(HeaderAuth("authorization", f"Bearer {key}") for key in keys)
        return (auth.SigV4(region(provider), provider.profile),)

    def _invoked(self, model: str) -> bool:
        return self.api == "invoke" and converse.is_claude(model)

    def request_from_internal(
        self, conversation: internal.Conversation, model: str
    ) -> UpstreamRequest:
        if self._invoked(model):
            return invoke.request_from_internal(conversation, model)
        return converse.request_from_internal(conversation, model)

    def searches(self, conversation: internal.Conversation) -> bool:
        return False

    def reply_to_internal(
        self, body: dict[str, Any], request: UpstreamRequest
    ) -> list[internal.Reply]:
        if request.path.endswith("/invoke"):
            return [invoke.response_to_internal(body, request)]
        return [converse.response_to_internal(body, request)]

    def stream_decoder(self, request: UpstreamRequest) -> converse.FrameStream:
        if request.path.endswith("/invoke-with-response-stream"):
            return invoke.StreamDecoder(request)
        return converse.StreamDecoder(request)

    def event_sizes(self, limit: int) -> eventstream.FrameSizes:
        return eventstream.FrameSizes(limit)

    def count_tokens(self, conversation: internal.Conversation, model: str) -> TokenCount:
        path = converse.model_path(converse.base_model(model), "count-tokens")
        if self._invoked(model):
            body = invoke.count_body(invoke.request_from_internal(conversation, model))
        else:
            sent = converse.body_from_internal(conversation, model)
            body = {
                "input": {
                    "converse": {
                        k: v for k, v in sent.items() if k in ("messages", "system", "toolConfig")
                    }
                }
            }
        return TokenCount(UpstreamRequest(path=path, body=body), _count)

    def error_info(self, status: int, headers: Mapping[str, str], body: Any) -> ErrorInfo | None:
        return errors.error_info(status, headers, body)

    def models_url(self, provider: ProviderConfig) -> str:
        """The control plane's ListFoundationModels: ``bedrock.{region}`` beside
        ``bedrock-runtime.{region}`` (a base_url naming ``bedrock-runtime`` gets the same change;
        another base_url, a proxy's or a fake's, serves both)."""
        return (
            self.base_url(provider).replace("bedrock-runtime", "bedrock", 1) + "/foundation-models"
        )

    def quota(self, headers: Mapping[str, str]) -> Quota | None:
        return None

    def models_page(self, body: Any) -> ModelsPage | None:
        if not isinstance(body, dict):
            return None
        if isinstance(body.get("modelSummaries"), list):
            ids = tuple(
                m["modelId"]
                for m in body["modelSummaries"]
                if isinstance(m, dict) and isinstance(m.get("modelId"), str) and _serves_text(m)
            )
            return ModelsPage(ids, next_url=PROFILES_PAGE)
        if isinstance(body.get("inferenceProfileSummaries"), list):
            ids = tuple(
                p["inferenceProfileId"]
                for p in body["inferenceProfileSummaries"]
                if isinstance(p, dict)
                and isinstance(p.get("inferenceProfileId"), str)
                and p.get("status", "ACTIVE") == "ACTIVE"
            )
            token = body.get("nextToken")
            following = (
                f"{PROFILES_PAGE}&nextToken={quote(token, safe='')}"
                if isinstance(token, str) and token
                else None
            )
            return ModelsPage(ids, next_url=following)
        return None


def _serves_text(model: dict[str, Any]) -> bool:
    """A foundation model that answers text and is called by its own id (on demand): not an
    embeddings or image model, and not one reached only through an inference profile."""
    outputs = model.get("outputModalities") or ["TEXT"]
    kinds = model.get("inferenceTypesSupported") or ["ON_DEMAND"]
    return "TEXT" in outputs and "ON_DEMAND" in kinds


UPSTREAM = BedrockUpstream()
