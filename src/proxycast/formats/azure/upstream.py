"""Azure OpenAI upstreams (``type = "azure"``): the OpenAI format at a deployment's URL.

Azure serves the OpenAI wire format (``formats/openai``) at other paths: the deployments API
(``{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...``, ``/embeddings``
likewise, and ``{endpoint}/openai/responses?api-version=...`` with the deployment as ``model``) and
the v1 API (``{endpoint}/openai/v1/chat/completions``, ``/responses``, ``/embeddings``: the
deployment as ``model``, no ``api-version``). Requests are written as for OpenAI, then
:meth:`AzureDeployments.placed` moves them to the deployment's URL, converted and forwarded ones
alike. A key goes in the ``api-key`` header; without keys, an Entra ID token (``entra.py``).
What Azure adds to OpenAI's answers (content filter results, a first stream chunk with no choices)
is read in ``outbound.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from proxycast.formats import sse
from proxycast.formats.auth import HeaderAuth
from proxycast.formats.azure import errors, outbound
from proxycast.formats.azure.entra import EntraAuth
from proxycast.formats.contracts import (
    EnvDefaults,
    Estimate,
    ModelsPage,
    UpstreamRequest,
    configured_url,
)
from proxycast.formats.json_spans import dumps_text, model_span
from proxycast.formats.openai import outbound as openai
from proxycast.formats.quota import Quota, openai_quota

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import httpx

    from proxycast.config import ProviderConfig
    from proxycast.errors import ErrorInfo
    from proxycast.formats import internal

V1 = "v1"
"""``api_version`` of the v1 API (``{endpoint}/openai/v1/...``)."""

VERSION_VARIABLE = "OPENAI_API_VERSION"
"""Where OpenAI's ``AzureOpenAI`` client (and proxycast, when a provider sets none) finds the
``api-version``."""

DEPLOYMENTS_VERSION = "2023-03-15-preview"
"""The ``api-version`` of ``GET /openai/deployments`` (newer versions of the data plane dropped
the route; this one still lists a resource's deployments, as the Azure SDKs list them)."""

STREAM_OPTIONS_SINCE = "2024-09-01"
"""The first dated api-version with ``stream_options`` (2024-09-01-preview; GA: 2024-10-21)."""

_SUFFIXES = ("/openai/v1", "/openai")
"""Endpoint forms users copy from the portal: the resource's root is what paths are built on."""


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def endpoint(provider: ProviderConfig) -> str:
    """The resource's endpoint (``https://NAME.openai.azure.com``), without ``/openai[/v1]``."""
    url = configured_url(provider, AzureUpstream.default_base_url)
    for suffix in _SUFFIXES:
        if url.endswith(suffix):
            return url.removesuffix(suffix)
    return url


def api_version(provider: ProviderConfig) -> str:
    """The provider's ``api_version``, else ``OPENAI_API_VERSION``; empty when neither is set."""
    return provider.api_version or os.environ.get(VERSION_VARIABLE, "")


class AzureUpstream:
    """The ``azure`` provider type, before it is bound to a provider (its settings checked, its
    models endpoint, its credentials); :meth:`bind` gives the format requests go through."""

    type = "azure"
    speaks = "openai"
    default_base_url = "https://NAME.openai.azure.com"
    settings = frozenset(("api_version", "deployments"))
    env = EnvDefaults(
        key_variables=("AZURE_OPENAI_API_KEY",),
        base_url_variable="AZURE_OPENAI_ENDPOINT",
        models=("gpt-*", "o1*", "o3*", "o4*", "text-embedding-*"),
    )
    headers: Mapping[str, str] = MappingProxyType({})

    def base_url(self, provider: ProviderConfig) -> str:
        return endpoint(provider)

    def problems(self, provider: ProviderConfig) -> Sequence[str]:
        found = []
        if not provider.base_url:
            found.append(
                "base_url is required: the resource's endpoint, https://NAME.openai.azure.com "
                "(in env-only mode: AZURE_OPENAI_ENDPOINT)"
            )
        if not api_version(provider):
            found.append(
                "api_version is required: the api-version of its deployments' URLs "
                '("2025-04-01-preview", say), or "v1" for the v1 API (or set '
                f"{VERSION_VARIABLE})"
            )
        for model, deployment in provider.deployments.items():
            if not deployment.strip() or "/" in deployment:
                found.append(f"deployments.{model}: {deployment!r} is not a deployment name")
        if not provider.api_keys and not _installed("azure.identity"):
            found.append(
                "api_keys is empty, so Entra ID tokens are used, which need azure-identity: "
                "pip install 'proxycast[azure]' (or give api_keys, AZURE_OPENAI_API_KEY in "
                "env-only mode)"
            )
        return found

    def bind(self, provider: ProviderConfig) -> AzureDeployments:
        return AzureDeployments(provider)

    def placed(self, request: UpstreamRequest) -> UpstreamRequest:
        return request  # only a bound format knows where its deployments are

    def owner(self, provider: str, url: str) -> str:
        return "azure"

    def credentials(self, provider: ProviderConfig) -> tuple[httpx.Auth, ...]:
        if provider.api_keys:
            return tuple(HeaderAuth("api-key", key) for key in provider.api_keys)
        return (EntraAuth(),)

    def request_from_internal(
        self, conversation: internal.Conversation, model: str
    ) -> UpstreamRequest:
        return openai.request_from_internal(conversation, model)

    def searches(self, conversation: internal.Conversation) -> bool:
        return openai.searches(conversation)

    def reply_to_internal(
        self, body: dict[str, Any], request: UpstreamRequest
    ) -> list[internal.Reply]:
        return [openai.response_to_internal(body, dict(request.tool_names), request.body)]

    def stream_decoder(self, request: UpstreamRequest) -> outbound.StreamDecoder:
        return outbound.StreamDecoder(dict(request.tool_names), request.body)

    def event_sizes(self, limit: int) -> sse.EventSizes:
        return sse.EventSizes(limit)

    def count_tokens(self, conversation: internal.Conversation, model: str) -> Estimate:
        # Azure has no count endpoint for chat models: estimated, as for OpenAI-compatible servers
        body = openai.request_from_internal(conversation, model).body
        return Estimate(openai.estimate_input(body))

    def error_info(self, status: int, headers: Mapping[str, str], body: Any) -> ErrorInfo | None:
        return errors.error_info(body)

    def quota(self, headers: Mapping[str, str]) -> Quota | None:
        return openai_quota(headers)  # Azure OpenAI sends OpenAI's headers

    def models_url(self, provider: ProviderConfig) -> str:
        """The resource's deployments (what a request can name; listed with the api-version
        that has the route, whatever ``api_version`` requests use), or the v1 API's models."""
        if api_version(provider) == V1:
            return endpoint(provider) + "/openai/v1/models"
        return f"{endpoint(provider)}/openai/deployments?api-version={DEPLOYMENTS_VERSION}"

    def models_page(self, body: Any) -> ModelsPage | None:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            return None
        return ModelsPage(tuple(m["id"] for m in data if isinstance(m, dict) and "id" in m))


class AzureDeployments(AzureUpstream):
    """The ``azure`` format bound to one provider: its endpoint, ``api_version`` and deployments.

    Every request is written as for OpenAI (``/chat/completions``, ``/responses``,
    ``/embeddings``, the model in the body) and :meth:`placed` here, on the way out: the client's
    model becomes its deployment (``deployments``, default the same name), in the body and, for
    the deployments API, in the path with the ``api-version``.
    """

    def __init__(self, provider: ProviderConfig) -> None:
        self.provider = provider.name
        self.version = api_version(provider)
        self.deployments: Mapping[str, str] = dict(provider.deployments)
        self._paths: dict[tuple[str, str], str] = {}
        self.stream_options = self.version == V1 or self.version[:10] >= STREAM_OPTIONS_SINCE
        """Whether its api-version takes ``stream_options`` (the usage of a stream)."""

    def __repr__(self) -> str:
        return f"<AzureDeployments {self.provider!r} api-version {self.version!r}>"

    def models_page(self, body: Any) -> ModelsPage | None:
        """Deployments listed under the client-facing name that maps to them, if one does."""
        page = super().models_page(body)
        if page is None:
            return None
        names = {deployment: model for model, deployment in self.deployments.items()}
        return ModelsPage(tuple(names.get(i, i) for i in page.ids), page.next_query)

    def deployment(self, model: str) -> str:
        """The deployment that serves the client-facing ``model``."""
        return self.deployments.get(model, model)

    def placed(self, request: UpstreamRequest) -> UpstreamRequest:
        body, raw = request.body, request.raw
        if raw is None:
            model = str(body.get("model", ""))
            deployment = self.deployment(model)
            if deployment != model:
                body = {**body, "model": deployment}
        else:  # a large body may come as pieces of the client's bytes: one piece here
            model, raw = self._renamed(raw if isinstance(raw, bytes) else b"".join(raw))
            deployment = self.deployment(model)
        if request.stream and not self.stream_options:
            body, raw = _without_stream_options(body, raw)
        return UpstreamRequest(
            path=self.path(request.path, deployment),
            body=body,
            raw=raw,
            stream=request.stream,
            headers=request.headers,
            tool_names=request.tool_names,
        )

    def _renamed(self, raw: bytes) -> tuple[str, bytes]:
        """The model a forwarded body names, and the body with its deployment's name instead.

        A scan of the bytes when ``"model"`` occurs once (then it is the top-level key: an
        unescaped quote cannot occur inside a JSON string), as the passthroughs find it; else the
        decoded text's top-level spans tell.
        """
        found = _MODEL.search(raw) if raw.count(b'"model"') == 1 else None
        if found is not None:
            value = json.loads(found.group(1))
            model = value if isinstance(value, str) else ""
            deployment = self.deployment(model)
            if deployment == model:
                return model, raw
            start, end = found.span(1)
            return model, raw[:start] + dumps_text(deployment).encode() + raw[end:]
        text = raw.decode("utf-8", "replace")
        start, end = model_span(text)
        value = json.loads(text[start:end])
        model = value if isinstance(value, str) else ""
        deployment = self.deployment(model)
        if deployment == model:
            return model, raw
        return model, (text[:start] + dumps_text(deployment) + text[end:]).encode()

    def path(self, path: str, deployment: str) -> str:
        """An OpenAI path (``/chat/completions``...) as Azure serves it for ``deployment``."""
        placed = self._paths.get((path, deployment))
        if placed is not None:
            return placed
        if self.version == V1:
            placed = "/openai/v1" + path
        elif path.startswith("/responses"):  # the Responses API takes the deployment in the body
            placed = f"/openai{path}?api-version={quote(self.version, safe='')}"
        else:
            placed = (
                f"/openai/deployments/{quote(deployment, safe='')}{path}"
                f"?api-version={quote(self.version, safe='')}"
            )
        if len(self._paths) > 256:  # one per deployment and operation; never grows without bound
            self._paths.clear()
        self._paths[path, deployment] = placed
        return placed


def _without_stream_options(
    body: Mapping[str, Any], raw: bytes | None
) -> tuple[Mapping[str, Any], bytes | None]:
    """The request without ``stream_options``, which versions before 2024-09-01 refuse (400
    ``Unrecognized request argument supplied: stream_options``); its stream's usage is then
    estimated, as for a server that reports none."""
    if raw is None:
        return {k: v for k, v in body.items() if k != "stream_options"}, None
    if b'"stream_options"' not in raw:
        return body, raw
    value = json.loads(raw)
    value.pop("stream_options", None)
    return body, dumps_text(value).encode()


_MODEL = re.compile(rb'"model"\s*:\s*("(?:[^"\\]|\\.)*")')
"""The top-level ``model`` of a forwarded body, when it occurs once (see ``_renamed``)."""


UPSTREAM = AzureUpstream()
