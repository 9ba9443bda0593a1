"""A fake Azure OpenAI resource: FakeOpenAI's scripted answers at Azure's URLs, with what Azure
enforces and adds.

It serves the deployments API (``/openai/deployments/{deployment}/chat/completions`` and
``/embeddings``, ``/openai/responses``, ``/openai/models``, ``/openai/deployments``, each with
``?api-version=``) and the
v1 API (``/openai/v1/chat/completions``, ``/responses``, ``/embeddings``, ``/models``: the
deployment as ``model``, no dated ``api-version``). As Azure does, it answers:

- 401 without its ``api-key`` (or a Bearer token it issued itself: see below), in Azure's words;
- 404 ``Resource not found`` on a deployments path without ``api-version``, 400 ``API version not
  supported`` for a version it does not know;
- 404 ``DeploymentNotFound`` for a deployment it does not have (``deployments``: deployment name
  -> the model it runs, which its answers name);
- 400 for ``stream_options`` with an api-version before 2024-09-01 (which did not have it);
- content filter results on chat answers: a first stream chunk with no choices carrying
  ``prompt_filter_results``, ``content_filter_results`` on each choice, and, for a script with
  ``finish_reason="content_filter"``, a filtered category; :func:`content_filter_error` is the 400
  of a prompt the filter refused.

Entra ID tokens: it is also an App Service managed identity endpoint (``GET /msi/token``, the
``X-IDENTITY-HEADER`` secret): with ``IDENTITY_ENDPOINT`` = :attr:`FakeAzure.identity_endpoint`
and ``IDENTITY_HEADER`` = :attr:`FakeAzure.identity_header`, azure-identity's
``DefaultAzureCredential`` gets its tokens there, and the fake accepts those as Bearer tokens
until they expire.

Usage::

    fake = FakeAzure(deployments={"my-gpt4o": "gpt-4o"})
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(fake.serve)      # http://127.0.0.1:PORT
        fake.script(Script(text="Hi there"))
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import attrs

from proxycast.testing._server import RecordedRequest, Responder
from proxycast.testing.openai import FakeOpenAI, Script

if TYPE_CHECKING:
    from collections.abc import Mapping

API_VERSIONS = frozenset(
    (
        "2022-12-01",
        "2023-03-15-preview",
        "2024-02-01",
        "2024-06-01",
        "2024-10-21",
        "2024-12-01-preview",
        "2025-01-01-preview",
        "2025-03-01-preview",
        "2025-04-01-preview",
    )
)
"""The dated ``api-version``s it knows (Azure's GA and preview versions of the data plane)."""

LISTING_VERSIONS = frozenset(("2022-12-01", "2023-03-15-preview"))
"""The versions that still have ``GET /openai/deployments`` (the list of a resource's deployments)."""

V1_VERSIONS = frozenset(("preview", "latest"))
"""What the v1 API takes as ``api-version``, when one is given at all."""

SAFE = {
    category: {"filtered": False, "severity": "safe"}
    for category in ("hate", "self_harm", "sexual", "violence")
}
"""A content filter result that filtered nothing."""

FILTERED = {**SAFE, "violence": {"filtered": True, "severity": "high"}}
"""A content filter result that filtered the violence category."""

WRONG_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
BAD_TOKEN = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)
NO_DEPLOYMENT = (
    "The API deployment for this resource does not exist. If you created the deployment within "
    "the last 5 minutes, please wait a moment and try again."
)


def azure_error(code: str, message: str, **more: Any) -> dict[str, Any]:
    """Azure's error body."""
    return {"error": {"code": code, "message": message, **more}}


def content_filter_error() -> bytes:
    """The 400 body of a prompt Azure's content filter refused (``Script(status=400,
    error_body=content_filter_error())``)."""
    return json.dumps(
        azure_error(
            "content_filter",
            "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy. Please modify your prompt and retry. To learn more about our "
            "content filtering policies please read our documentation: "
            "https://go.microsoft.com/fwlink/?linkid=2198766",
            param="prompt",
            status=400,
            innererror={"code": "ResponsibleAIPolicyViolation", "content_filter_result": FILTERED},
        )
    ).encode()


_DEPLOYMENT_PATH = re.compile(r"/openai/deployments/([^/]+)/(chat/completions|embeddings)")


def filtered_completion(body: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` as Azure answers it: the prompt's filter results, and each choice's
    (a choice that ended with ``content_filter`` marks the category filtered)."""
    body = {**body, "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}]}
    choices = []
    for choice in body.get("choices") or ():
        filtered = choice.get("finish_reason") == "content_filter"
        choices.append({**choice, "content_filter_results": FILTERED if filtered else SAFE})
    body["choices"] = choices
    return body


OPENING_CHUNK: dict[str, Any] = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}],
}
"""The first event of Azure's streams: the prompt's filter results, no choices, no id or model."""


def filtered_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion.chunk`` as Azure streams it: each choice with its filter results (empty
    on the role and finish chunks, filtered on a ``content_filter`` finish)."""
    choices = []
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if choice.get("finish_reason") == "content_filter":
            results: dict[str, Any] = FILTERED
        elif delta.get("content") or delta.get("tool_calls"):
            results = SAFE
        else:
            results = {}
        choices.append({**choice, "content_filter_results": results})
    return {**chunk, "choices": choices}


@attrs.define(eq=False)
class _Filtered(Responder):
    """The responder of a chat answer, adding Azure's content filter results to what FakeOpenAI
    writes (see the module docstring)."""

    inner: Responder | None = None
    _opened: bool = False

    async def json(self, status: int, body: Any, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        if isinstance(body, dict) and body.get("object") == "chat.completion":
            body = filtered_completion(body)
        await super().json(status, body, headers)

    async def send(self, data: bytes) -> None:
        if not data.startswith(b"data: {"):
            await super().send(data)
            return
        chunk = json.loads(data[6:])
        if chunk.get("object") != "chat.completion.chunk":
            await super().send(data)
            return
        if not self._opened:
            self._opened = True
            await super().send(b"data: " + json.dumps(OPENING_CHUNK).encode() + b"\n\n")
        await super().send(b"data: " + json.dumps(filtered_chunk(chunk)).encode() + b"\n\n")

    async def drop(self) -> None:
        if self.inner is not None:
            self.inner.dropped = True
        await super().drop()


class FakeAzure(FakeOpenAI):
    """A scriptable Azure OpenAI resource; see the module docstring.

    Args:
        deployments: deployment name -> the model it runs; None: any name is a deployment of the
            model of that name.
        api_key: the key it takes in ``api-key``.
        token_seconds: the lifetime of the Entra ID tokens it issues.
    """

    url_suffix = ""

    def __init__(
        self,
        default: Script | None = None,
        *,
        deployments: Mapping[str, str] | None = None,
        api_key: str = "azure-test-key",
        token_seconds: float = 3600.0,
    ) -> None:
        super().__init__(default)
        self.deployments = None if deployments is None else dict(deployments)
        self.api_key = api_key
        self.token_seconds = token_seconds
        self.identity_header = "fake-identity-" + secrets.token_hex(8)
        """The managed identity endpoint's secret (``IDENTITY_HEADER``)."""
        self.tokens: dict[str, float] = {}
        """The Entra ID tokens it issued -> when each expires (seconds since the epoch)."""
        self.models = ("gpt-4o-2024-08-06", "gpt-4.1-2025-04-14", "text-embedding-3-small")

    @property
    def identity_endpoint(self) -> str:
        """Its managed identity token endpoint (``IDENTITY_ENDPOINT``)."""
        return self.base_url + "/msi/token"

    async def _handle(self, request: RecordedRequest, respond: Responder) -> None:
        if request.route == "/msi/token":
            await self._token(request, respond)
            return
        refused = self._unauthorised(request)
        if refused is not None:
            await respond.json(401, azure_error("401", refused))
            return
        query = parse_qs(request.query)
        version = query.get("api-version", [None])[0]
        route = request.route
        v1 = route.startswith("/openai/v1/")
        if v1:
            if version is not None and version not in V1_VERSIONS:
                await respond.json(400, azure_error("BadRequest", "API version not supported"))
                return
            operation = route.removeprefix("/openai/v1/")
        else:
            if version is None or not route.startswith("/openai/"):
                await respond.json(404, azure_error("404", "Resource not found"))
                return
            if version not in API_VERSIONS:
                await respond.json(400, azure_error("BadRequest", "API version not supported"))
                return
            operation = route.removeprefix("/openai/")
        if request.method == "GET" and operation == "models":
            await respond.json(200, self._models())
            return
        if request.method == "GET" and operation == "deployments" and not v1:
            if version not in LISTING_VERSIONS:  # later versions dropped the route
                await respond.json(404, azure_error("404", "Resource not found"))
                return
            await respond.json(200, self._deployments())
            return
        body = json.loads(request.body or b"{}") if request.method == "POST" else {}
        deployment = body.get("model") if isinstance(body, dict) else None
        found = None if v1 else _DEPLOYMENT_PATH.fullmatch(route)
        if found is not None:
            deployment, operation = found.group(1), found.group(2)
        if (
            request.method != "POST"
            or operation not in ("chat/completions", "embeddings", "responses")
            or (operation != "responses" and not v1 and found is None)
        ):
            await respond.json(404, azure_error("404", "Resource not found"))
            return
        model = self._model(deployment)
        if model is None:
            await respond.json(404, azure_error("DeploymentNotFound", NO_DEPLOYMENT))
            return
        if "stream_options" in body and not v1 and str(version) < "2024-09-01":
            error = {
                "message": "Unrecognized request argument supplied: stream_options",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
            await respond.json(400, {"error": error})
            return
        body["model"] = model  # answers name the model the deployment runs, as Azure's do
        rewritten = attrs.evolve(request, path="/v1/" + operation, body=json.dumps(body).encode())
        filtered = _Filtered(respond._stream, respond._conn, head=respond.head, inner=respond)
        await super()._handle(rewritten, filtered)

    def _model(self, deployment: object) -> str | None:
        if not isinstance(deployment, str) or not deployment:
            return None
        if self.deployments is None:
            return deployment
        return self.deployments.get(deployment)

    def _unauthorised(self, request: RecordedRequest) -> str | None:
        """Why the request's credential is refused (Azure's message); None when it is not."""
        key = request.headers.get("api-key")
        if key is not None:
            return None if secrets.compare_digest(key, self.api_key) else WRONG_KEY
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expires = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires is None or expires <= time.time():
            return BAD_TOKEN if scheme else WRONG_KEY
        return None

    async def _token(self, request: RecordedRequest, respond: Responder) -> None:
        """App Service's managed identity endpoint (api-version 2019-08-01)."""
        query = parse_qs(request.query)
        if request.headers.get("x-identity-header") != self.identity_header:
            await respond.json(401, {"statusCode": 401, "message": "Unauthorized request"})
            return
        resource = query.get("resource", [""])[0]
        if resource != "https://cognitiveservices.azure.com":
            await respond.json(400, {"statusCode": 400, "message": f"bad resource {resource}"})
            return
        token = "fake-entra-" + secrets.token_hex(16)
        expires = int(time.time() + self.token_seconds)
        self.tokens[token] = expires
        await respond.json(
            200,
            {
                "access_token": token,
                "expires_on": str(expires),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": "00000000-0000-0000-0000-000000000000",
            },
        )

    def _models(self) -> dict[str, Any]:
        data = [
            {
                "id": model,
                "object": "model",
                "status": "succeeded",
                "created_at": 1720000000,
                "capabilities": {
                    "chat_completion": "embedding" not in model,
                    "embeddings": "embedding" in model,
                },
                "lifecycle_status": "generally-available",
            }
            for model in self.models
        ]
        return {"object": "list", "data": data}

    def _deployments(self) -> dict[str, Any]:
        deployments = self.deployments
        if deployments is None:
            deployments = {model: model for model in self.models}
        data = [
            {
                "scale_settings": {"scale_type": "standard"},
                "model": model,
                "owner": "organization-owner",
                "id": name,
                "status": "succeeded",
                "created_at": 1720000000,
                "updated_at": 1720000000,
                "object": "deployment",
            }
            for name, model in deployments.items()
        ]
        return {"object": "list", "data": data}
