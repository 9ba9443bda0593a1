"""Vertex AI upstreams: Gemini (``publishers/google``) and Claude (``publishers/anthropic``) in one
Google Cloud project and location.

Requests go to ``{base_url}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/
{model}:{method}``: Gemini's body is the Gemini API's (``:generateContent``,
``:streamGenerateContent?alt=sse``, ``:countTokens`` with the request's fields at the top level); Claude's
is the Messages body without ``model`` (it is in the URL) and with ``anthropic_version:
"vertex-2023-10-16"`` (``:rawPredict``, ``:streamRawPredict``; tokens counted at
``count-tokens:rawPredict``), and its answers and streams are Anthropic's. The publisher follows from the
model's name (``claude-*``: Anthropic). The base URL is ``https://{location}-aiplatform.googleapis.com``
(``global``: ``https://aiplatform.googleapis.com``) unless the provider's ``base_url`` replaces it.
"""

from __future__ import annotations

import os
import re
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs

from proxycast.formats import sse
from proxycast.formats.anthropic import errors as anthropic_errors
from proxycast.formats.anthropic import outbound as anthropic
from proxycast.formats.auth import HeaderAuth
from proxycast.formats.contracts import (
    EnvDefaults,
    ModelsPage,
    OwnRequests,
    TokenCount,
    UpstreamRequest,
    configured_url,
)
from proxycast.formats.gemini import errors as gemini_errors
from proxycast.formats.gemini import outbound as gemini
from proxycast.formats.vertex import credentials as creds

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import httpx

    from proxycast.config import ProviderConfig
    from proxycast.errors import ErrorInfo
    from proxycast.formats import internal
    from proxycast.formats.contracts import EventSizes, StreamDecoder
    from proxycast.formats.quota import Quota

ANTHROPIC_VERSION = "vertex-2023-10-16"
DEFAULT_BASE_URL = "https://{location}-aiplatform.googleapis.com"
_COUNT_UNUSED = ("max_tokens", "stream", "stop_sequences", "temperature", "top_p", "metadata")


def publisher(model: str) -> str:
    """Who publishes ``model`` on Vertex: Anthropic for Claude, else Google."""
    return "anthropic" if model.startswith("claude") else "google"


def project_of(provider: ProviderConfig, env: Mapping[str, str]) -> str:
    """The provider's ``project``, else its service account's ``project_id``, else
    ``GOOGLE_CLOUD_PROJECT``; empty when none says."""
    if provider.project:
        return provider.project
    found = creds.key_file(provider, env)
    if found is not None:
        try:
            project = creds.read_key_file(*found).get("project_id")
        except creds.CredentialsFileError:
            project = None
        if isinstance(project, str) and project:
            return project
    return env.get("GOOGLE_CLOUD_PROJECT", "")


def location_of(provider: ProviderConfig, env: Mapping[str, str]) -> str:
    return provider.location or env.get("GOOGLE_CLOUD_LOCATION", "")


def _is_claude(request: UpstreamRequest) -> bool:
    return "/publishers/anthropic/" in request.path


def _total_tokens(body: dict[str, Any]) -> int:
    count = body.get("totalTokens")
    return count if isinstance(count, int) else 0


def _input_tokens(body: dict[str, Any]) -> int:
    count = body.get("input_tokens")
    return count if isinstance(count, int) else 0


class VertexUpstream(OwnRequests):  # every client is converted for it
    """The ``vertex`` provider type; :meth:`bind` gives the one of a project and location."""

    type = "vertex"
    default_base_url = DEFAULT_BASE_URL
    settings = frozenset({"project", "location", "credentials_file"})
    env = EnvDefaults(
        key_variables=(),
        chain_variables=("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_LOCATION"),
        base_url_variable="VERTEX_BASE_URL",
        models=("gemini-*", "claude-*"),
    )
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(self, project: str = "", location: str = "") -> None:
        self.project = project
        self.location = location

    def __repr__(self) -> str:
        return f"<VertexUpstream {self.project!r} {self.location!r}>"

    # -- configuration --------------------------------------------------------------------------

    def base_url(self, provider: ProviderConfig) -> str:
        location = location_of(provider, os.environ) or "{location}"
        host = "aiplatform.googleapis.com"
        default = f"https://{host}" if location == "global" else f"https://{location}-{host}"
        return configured_url(provider, default)

    def problems(self, provider: ProviderConfig) -> Sequence[str]:
        env = os.environ
        found: list[str] = []
        key = creds.key_file(provider, env)
        if key is not None:
            try:
                info = creds.read_key_file(*key)
                if info["type"] == "service_account":
                    creds.signer(info)
            except creds.CredentialsFileError as exc:
                found.append(str(exc))
        elif not provider.api_keys:
            found.append(
                "no Google Cloud credentials: set credentials_file (a service account's JSON key) "
                "or GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, "
                "or give access tokens in api_keys"
            )
        if not project_of(provider, env):
            found.append(
                "no Google Cloud project: set project, or GOOGLE_CLOUD_PROJECT (or use a service "
                "account key, whose project_id is taken)"
            )
        location = location_of(provider, env)
        if not location:
            found.append(
                "no Vertex AI location: set location (us-east5, europe-west1, global...), "
                "or GOOGLE_CLOUD_LOCATION"
            )
        elif not re.fullmatch(r"[a-z][a-z0-9-]*", location):
            found.append(
                f"location: {location!r} is not a Vertex AI location (us-east5, europe-west1, "
                "global...)"
            )
        return found

    def placed(self, request: UpstreamRequest) -> UpstreamRequest:
        """Requests written from ``/publishers/`` on (embeddings: ``formats/vertex/embeddings``,
        which does not know the provider) under this provider's project and location; the others
        are written for it already."""
        if not request.path.startswith("/publishers/"):
            return request
        where = (
            f"/v1/projects/{quote(self.project, safe='')}/locations/{quote(self.location, safe='')}"
        )
        return attrs.evolve(request, path=where + request.path)

    def bind(self, provider: ProviderConfig) -> VertexUpstream:
        return VertexUpstream(project_of(provider, os.environ), location_of(provider, os.environ))

    def owner(self, provider: str, url: str) -> str:
        return "google"

    def credentials(self, provider: ProviderConfig) -> Sequence[httpx.Auth]:
        """Access tokens of ``api_keys`` as they are, else one token refreshed from the key file."""
        if provider.api_keys:
            return tuple(HeaderAuth("authorization", f"Bearer {k}") for k in provider.api_keys)
        found = creds.key_file(provider, os.environ)
        if found is None:
            return ()
        info = creds.read_key_file(*found)
        return (creds.TokenAuth(creds.source(info), provider.name),)

    # -- requests and answers -------------------------------------------------------------------

    def path(self, model: str, method: str, owner: str | None = None) -> str:
        """The URL path of ``model``'s ``method`` (``generateContent``, ``rawPredict``...), under
        its publisher (``owner``, else the model's)."""
        return (
            f"/v1/projects/{quote(self.project, safe='')}/locations/"
            f"{quote(self.location, safe='')}/publishers/{owner or publisher(model)}/models/"
            f"{quote(model, safe='@')}:{method}"
        )

    def request_from_internal(
        self, conversation: internal.Conversation, model: str
    ) -> UpstreamRequest:
        if publisher(model) == "anthropic":
            request = anthropic.request_from_internal(conversation, model)
            body = {k: v for k, v in request.body.items() if k != "model"}
            body["anthropic_version"] = ANTHROPIC_VERSION
            method = "streamRawPredict" if request.stream else "rawPredict"
            return attrs.evolve(request, path=self.path(model, method), body=body)
        request = gemini.request_from_internal(conversation, model)
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        return attrs.evolve(request, path=self.path(model, method))

    def searches(self, conversation: internal.Conversation) -> bool:
        # the format does not know the model here; Gemini's rule is the stricter one
        return gemini.searches(conversation)

    def reply_to_internal(
        self, body: dict[str, Any], request: UpstreamRequest
    ) -> list[internal.Reply]:
        if _is_claude(request):
            return [anthropic.response_to_internal(body, request)]
        return gemini.response_to_internal(body)

    def stream_decoder(self, request: UpstreamRequest) -> StreamDecoder:
        if _is_claude(request):
            return anthropic.StreamDecoder(request)
        return gemini.StreamDecoder()

    def event_sizes(self, limit: int) -> EventSizes:
        return sse.EventSizes(limit)

    def count_tokens(self, conversation: internal.Conversation, model: str) -> TokenCount:
        """Gemini: ``:countTokens`` with the request's contents, system and tools; Claude:
        ``count-tokens:rawPredict`` with the Messages body and its model."""
        if publisher(model) == "anthropic":
            body = dict(anthropic.request_from_internal(conversation, model).body)
            for unused in _COUNT_UNUSED:
                body.pop(unused, None)
            body["anthropic_version"] = ANTHROPIC_VERSION
            path = self.path("count-tokens", "rawPredict", "anthropic")
            return TokenCount(UpstreamRequest(path=path, body=body), _input_tokens)
        body = dict(gemini.request_from_internal(conversation, model).body)
        body.pop("generationConfig", None)
        return TokenCount(
            UpstreamRequest(path=self.path(model, "countTokens"), body=body), _total_tokens
        )

    def error_info(self, status: int, headers: Mapping[str, str], body: Any) -> ErrorInfo | None:
        """Claude's own errors come in Anthropic's shape; Vertex's (quota, a model not found, a
        Gemini error) in Google's."""
        if isinstance(body, dict) and body.get("type") == "error":
            return anthropic_errors.error_info(body)
        return gemini_errors.error_info(body)

    # -- models ---------------------------------------------------------------------------------

    def models_url(self, provider: ProviderConfig) -> str:
        """Model Garden's list of Google's publisher models (``v1beta1``; Claude's models are
        enabled per project in Model Garden and are not listed there)."""
        return provider.url + "/v1beta1/publishers/google/models?pageSize=1000"

    def quota(self, headers: Mapping[str, str]) -> Quota | None:
        return None

    def models_page(self, body: Any) -> ModelsPage | None:
        models = body.get("publisherModels") if isinstance(body, dict) else None
        if not isinstance(models, list):
            return None if not isinstance(body, dict) or body else ModelsPage(())
        ids = tuple(
            m["name"].rpartition("/")[2]
            for m in models
            if isinstance(m, dict) and isinstance(m.get("name"), str)
        )
        token = body.get("nextPageToken")
        more = isinstance(token, str) and token
        return ModelsPage(ids, f"pageToken={quote(token)}" if more else None)


UPSTREAM = VertexUpstream()
