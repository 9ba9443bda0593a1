"""A fake Google Vertex AI (Gemini and Claude publishers) with its own OAuth token endpoint.

Like Vertex, it answers only requests carrying an access token it issued (``Authorization: Bearer``),
else 401 ``UNAUTHENTICATED`` in Google's error shape; a project it does not serve is 403
``PERMISSION_DENIED``, a location it does not serve 404 ``NOT_FOUND``. Its token endpoint (``/token``,
the ``token_uri`` of the key files it writes) issues a token only for a service account's JWT assertion
signed RS256 with the key it generated (checked with the public key, with its ``iss``, ``aud``,
``scope``, ``iat`` and ``exp`` claims), or for the refresh token of the user file it writes; tokens
live :attr:`FakeVertex.token_lifetime` seconds.

Under ``/v1/projects/{project}/locations/{location}/publishers/``: ``google/models/{m}:generateContent``,
``:streamGenerateContent?alt=sse`` and ``:countTokens`` (the request's fields at the top level) are
answered by a :class:`FakeGemini` (its rules, its scripts); ``anthropic/models/{m}:rawPredict``,
``:streamRawPredict`` and ``count-tokens:rawPredict`` by a :class:`FakeAnthropic`, after Vertex's own
rules: ``anthropic_version`` must be ``vertex-2023-10-16``, and ``model`` is refused in the body (it is
in the URL) except for count-tokens. ``google/models/{m}:predict`` embeds text with Google's embeddings
models (:data:`EMBEDDING_MODELS`: ``instances`` of ``content``, ``parameters.outputDimensionality``,
one instance for ``gemini-embedding-001``, token counts in each prediction's ``statistics``).
``GET /v1beta1/publishers/google/models`` lists :attr:`models`.

    fake = FakeVertex()
    base_url = await nursery.start(fake.serve)
    key_file = fake.service_account_file(tmp_path)     # token_uri: the fake's /token
    fake.script(GeminiScript(...), AnthropicScript(...))  # each to its publisher's fake
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import attrs
import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from proxycast.testing._server import FakeUpstream, RecordedRequest, Responder, fake_vector
from proxycast.testing.anthropic import AnthropicScript, FakeAnthropic
from proxycast.testing.gemini import FakeGemini, GeminiScript

if TYPE_CHECKING:
    from pathlib import Path

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ANTHROPIC_VERSION = "vertex-2023-10-16"
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
NO_QUOTA_PROJECT = (
    "Your application is authenticating by using local Application Default Credentials. The "
    "aiplatform.googleapis.com API requires a quota project, which is not set by default. To learn "
    "how to set your quota project, see "
    "https://cloud.google.com/docs/authentication/adc-troubleshooting/user-creds ."
)

VertexScript = GeminiScript | AnthropicScript


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _google_error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def _anthropic_error(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


@attrs.define(eq=False)
class _Issued:
    expires_at: float
    user: bool = False
    """Issued for a user's refresh token: requests must name a quota project."""


class FakeVertex(FakeUpstream[VertexScript]):
    """A fake Vertex AI; see the module docstring."""

    def __init__(
        self,
        *,
        project: str = "fake-project",
        location: str = "us-east5",
        tokens: tuple[str, ...] = (),
        gemini: FakeGemini | None = None,
        anthropic: FakeAnthropic | None = None,
    ) -> None:
        self.gemini = gemini or FakeGemini()
        self.anthropic = anthropic or FakeAnthropic()
        super().__init__(self.gemini.default)
        self.project = project
        self.location = location
        self.token_lifetime = 3600
        """Seconds each issued token is valid (short ones test the refresh)."""
        self.token_gate: trio.Event | None = None
        """When set, the token endpoint waits for this event before answering."""
        self.client_email = f"proxycast-test@{project}.iam.gserviceaccount.com"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._refresh_token = "1//fake-refresh-" + secrets.token_urlsafe(16)
        self._issued: dict[str, _Issued] = {t: _Issued(float("inf")) for t in tokens}

    # -- what a test hands to proxycast ---------------------------------------------------------

    @property
    def token_uri(self) -> str:
        return self.base_url + "/token"

    def service_account_info(self) -> dict[str, Any]:
        """A service account key file's content, its private key the fake's own."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": "fake-key-id",
            "private_key": pem.decode(),
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "token_uri": self.token_uri,
        }

    def service_account_file(self, directory: Path) -> Path:
        """Write the service account key file into ``directory``; its path."""
        path = directory / "service-account.json"
        path.write_text(json.dumps(self.service_account_info()))
        return path

    def user_file(self, directory: Path, *, quota_project: bool = True) -> Path:
        """Write an ``authorized_user`` file (``gcloud auth application-default login``'s), with
        the fake's project as its ``quota_project_id`` unless told otherwise."""
        path = directory / "application_default_credentials.json"
        info: dict[str, Any] = {
            "type": "authorized_user",
            "client_id": "fake-client.apps.googleusercontent.com",
            "client_secret": "fake-client-secret",
            "refresh_token": self._refresh_token,
            "token_uri": self.token_uri,
        }
        if quota_project:
            info["quota_project_id"] = self.project
        path.write_text(json.dumps(info))
        return path

    def issue_token(self, *, user: bool = False) -> str:
        """A token valid for :attr:`token_lifetime` (``gcloud auth print-access-token``'s)."""
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self._issued[token] = _Issued(trio.current_time() + self.token_lifetime, user)
        return token

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (the static ones of ``tokens`` too)."""
        for issued in self._issued.values():
            issued.expires_at = trio.current_time()

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.route == "/token"]

    def script(self, *scripts: VertexScript) -> None:
        """Queue each answer with its publisher's fake."""
        for script in scripts:
            if isinstance(script, AnthropicScript):
                self.anthropic.script(script)
            else:
                self.gemini.script(script)

    def clear_scripts(self) -> None:
        self.gemini.clear_scripts()
        self.anthropic.clear_scripts()

    # -- serving --------------------------------------------------------------------------------

    async def _handle(self, request: RecordedRequest, respond: Responder) -> None:
        if request.method == "HEAD" and request.route in ("", "/"):
            await respond.start(200, [("content-length", "0")])
            await respond.end()
            return
        if request.route == "/token":
            await self._token(request, respond)
            return
        issued = self._authorised(request)
        if issued is None:
            await respond.json(
                401,
                _google_error(401, "UNAUTHENTICATED", UNAUTHENTICATED),
                [("www-authenticate", 'Bearer realm="https://accounts.google.com/"')],
            )
            return
        if issued.user and not request.headers.get("x-goog-user-project"):
            await respond.json(403, _google_error(403, "PERMISSION_DENIED", NO_QUOTA_PROJECT))
            return
        if request.method == "GET" and request.route == "/v1beta1/publishers/google/models":
            await respond.json(200, self._models_page(parse_qs(request.query)))
            return
        await self._model_route(request, respond)

    def _authorised(self, request: RecordedRequest) -> _Issued | None:
        """The valid token the request carries; None when it carries none."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        issued = self._issued.get(token.strip()) if scheme.lower() == "bearer" else None
        if issued is None or trio.current_time() >= issued.expires_at:
            return None
        return issued

    async def _token(self, request: RecordedRequest, respond: Responder) -> None:
        if self.token_gate is not None:
            await self.token_gate.wait()
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if request.method != "POST":
            await respond.json(405, {"error": "invalid_request"})
            return
        grant = form.get("grant_type")
        if grant == JWT_GRANT:
            problem = self._assertion_problem(form.get("assertion", ""))
        elif grant == "refresh_token":
            good = form.get("refresh_token") == self._refresh_token
            problem = None if good else "Token has been expired or revoked."
        else:
            await respond.json(
                400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
            )
            return
        if problem is not None:
            await respond.json(400, {"error": "invalid_grant", "error_description": problem})
            return
        token = self.issue_token(user=grant == "refresh_token")
        await respond.json(
            200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    def _assertion_problem(self, assertion: str) -> str | None:
        """What Google's token endpoint would say of this assertion, or None when it is good."""
        try:
            head, payload, signature = assertion.split(".")
            header = json.loads(_b64decode(head))
            claims = json.loads(_b64decode(payload))
            self._key.public_key().verify(
                _b64decode(signature),
                f"{head}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return "Invalid JWT Signature."
        except ValueError:
            return "Invalid JWT: the assertion is not a signed JWT."
        if header.get("alg") != "RS256":
            return "Invalid JWT: alg must be RS256."
        wall = time.time()
        if claims.get("iss") != self.client_email:
            return "Invalid JWT: iss is not a service account of this project."
        if claims.get("aud") != self.token_uri:
            return "Invalid JWT: Failed audience check."
        if SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid JWT: the scope does not include cloud-platform."
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600:
            return "Invalid JWT: iat and exp must be integers at most an hour apart."
        if exp < wall or iat > wall + 60:
            return (
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe."
            )
        return None

    def _where(self, request: RecordedRequest) -> tuple[str, str, str, str, str] | None:
        """(project, location, publisher, model, method) of a model route; None for another path."""
        parts = request.route.split("/")
        # '', 'v1', 'projects', P, 'locations', L, 'publishers', PUB, 'models', 'M:method'
        if len(parts) != 10 or parts[1:3] != ["v1", "projects"] or parts[4] != "locations":
            return None
        if parts[6] != "publishers" or parts[8] != "models" or ":" not in parts[9]:
            return None
        model, _, method = parts[9].partition(":")
        return parts[3], parts[5], parts[7], model, method

    async def _model_route(self, request: RecordedRequest, respond: Responder) -> None:
        where = self._where(request)
        if where is None or request.method != "POST":
            await respond.json(
                404, _google_error(404, "NOT_FOUND", "The requested URL was not found.")
            )
            return
        project, location, publisher, model, method = where
        resource = f"projects/{project}/locations/{location}/publishers/{publisher}/models/{model}"
        if project != self.project:
            message = (
                "Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/{resource}' (or it may not exist)."
            )
            await respond.json(403, _google_error(403, "PERMISSION_DENIED", message))
            return
        if location != self.location or publisher not in ("google", "anthropic"):
            message = f"Publisher Model `{resource}` not found."
            await respond.json(404, _google_error(404, "NOT_FOUND", message))
            return
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            message = "Invalid JSON payload received. Expected an object."
            await respond.json(400, _google_error(400, "INVALID_ARGUMENT", message))
            return
        if publisher == "google":
            await self._gemini(request, respond, model, method, body)
        else:
            await self._claude(request, respond, model, method, body)

    async def _gemini(
        self,
        request: RecordedRequest,
        respond: Responder,
        model: str,
        method: str,
        body: dict[str, Any],
    ) -> None:
        if method == "predict":
            await self._predict(respond, model, body)
            return
        if method not in ("generateContent", "streamGenerateContent", "countTokens"):
            message = f"Method {method!r} is not served for Gemini models."
            await respond.json(404, _google_error(404, "NOT_FOUND", message))
            return
        if "generateContentRequest" in body:  # the Gemini API's countTokens shape, not Vertex's
            message = (
                'Invalid JSON payload received. Unknown name "generateContentRequest": '
                "Cannot find field."
            )
            await respond.json(400, _google_error(400, "INVALID_ARGUMENT", message))
            return
        for index, content in enumerate(body.get("contents") or ()):
            if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
                message = (
                    f"Please use a valid role: user, model. (contents[{index}] has "
                    f"{content.get('role') if isinstance(content, dict) else None!r})"
                )
                await respond.json(400, _google_error(400, "INVALID_ARGUMENT", message))
                return
        if method == "countTokens":
            body = {"generateContentRequest": body}
        path = f"/v1beta/models/{model}:{method}"
        if request.query:
            path += "?" + request.query
        await self.gemini._handle(_rewritten(request, path, body), respond)

    async def _predict(self, respond: Responder, model: str, body: dict[str, Any]) -> None:
        """``:predict`` on a text embeddings model, checked as Vertex checks it."""
        problem = predict_problem(model, body)
        if problem is not None:
            await respond.json(400, _google_error(400, "INVALID_ARGUMENT", problem))
            return
        size = (body.get("parameters") or {}).get("outputDimensionality") or _dimensions(model)
        predictions = [
            {
                "embeddings": {
                    "values": fake_vector(i["content"], size),
                    "statistics": {"token_count": fake_tokens(i["content"]), "truncated": False},
                }
            }
            for i in body["instances"]
        ]
        await respond.json(
            200,
            {
                "predictions": predictions,
                "metadata": {
                    "billableCharacterCount": sum(len(i["content"]) for i in body["instances"])
                },
            },
        )

    async def _claude(
        self,
        request: RecordedRequest,
        respond: Responder,
        model: str,
        method: str,
        body: dict[str, Any],
    ) -> None:
        if method not in ("rawPredict", "streamRawPredict"):
            message = f"Method {method!r} is not served for Claude models."
            await respond.json(404, _google_error(404, "NOT_FOUND", message))
            return
        if body.get("anthropic_version") != ANTHROPIC_VERSION:
            message = f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'"
            await respond.json(400, _anthropic_error(message))
            return
        body = {k: v for k, v in body.items() if k != "anthropic_version"}
        if model == "count-tokens":
            if not isinstance(body.get("model"), str):
                await respond.json(400, _anthropic_error("model: Field required"))
                return
            path = "/v1/messages/count_tokens"
        else:
            if "model" in body:
                await respond.json(400, _anthropic_error("model: Extra inputs are not permitted"))
                return
            if bool(body.get("stream")) != (method == "streamRawPredict"):
                message = "stream: streamRawPredict takes stream: true, rawPredict does not"
                await respond.json(400, _anthropic_error(message))
                return
            body["model"] = model
            path = "/v1/messages"
        await self.anthropic._handle(_rewritten(request, path, body), respond)

    def _models_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        size = int(query.get("pageSize", ["100"])[0])
        start = int(query.get("pageToken", ["0"])[0])
        page = self.models[start : start + size]
        out: dict[str, Any] = {
            "publisherModels": [
                {
                    "name": f"publishers/google/models/{m}",
                    "versionId": "001",
                    "openSourceCategory": "PROPRIETARY",
                    "launchStage": "GA",
                }
                for m in page
            ]
        }
        if start + size < len(self.models):
            out["nextPageToken"] = str(start + size)
        return out

    async def answer(
        self, script: VertexScript, request: RecordedRequest, respond: Responder
    ) -> None:
        raise NotImplementedError  # every route is answered by _handle


EMBEDDING_MODELS = {
    "gemini-embedding-001": 3072,
    "text-embedding-005": 768,
    "text-embedding-004": 768,
    "text-multilingual-embedding-002": 768,
}
"""Google's text embeddings models the fake serves at ``:predict``, with their full dimensions."""
_INSTANCE_FIELDS = {"content", "task_type", "title"}
TASK_TYPES = (
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
)
_PARAMETERS = {"outputDimensionality", "autoTruncate"}


def _dimensions(model: str) -> int:
    return EMBEDDING_MODELS[model]


def fake_tokens(text: str) -> int:
    """The fake's token count of an instance: a token a word (at least one)."""
    return max(1, len(text.split()))


def predict_problem(model: str, body: dict[str, Any]) -> str | None:
    """What Vertex refuses (400 ``INVALID_ARGUMENT``) in a text embeddings ``:predict``."""
    if model not in EMBEDDING_MODELS:
        if model.startswith("gemini"):
            return (
                "Gemini cannot be accessed through Vertex Predict/RawPredict API. Please follow "
                "https://cloud.google.com/vertex-ai/docs/generative-ai/start/quickstarts/"
                "quickstart-multimodal for Gemini usage."
            )
        return f"Publisher model {model} does not serve predictions."
    extra = sorted(set(body) - {"instances", "parameters"})
    if extra:
        return f'Invalid JSON payload received. Unknown name "{extra[0]}": Cannot find field.'
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        return "Invalid argument: instances must be a non-empty list."
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("content"), str):
            return f"instances[{index}]: content is required and must be a string."
        unknown = sorted(set(instance) - _INSTANCE_FIELDS)
        if unknown:
            return f"instances[{index}]: unknown field {unknown[0]!r}."
        if instance.get("task_type", "RETRIEVAL_QUERY") not in TASK_TYPES:
            return f"instances[{index}]: task_type {instance['task_type']!r} is not supported."
    if model.startswith("gemini-embedding") and len(instances) > 1:
        return (
            f"Unable to submit request because the model {model} supports only 1 instance per "
            f"request, but {len(instances)} were given."
        )
    if len(instances) > 250:
        return "Unable to submit request because at most 250 instances are allowed per request."
    parameters = body.get("parameters") or {}
    unknown = sorted(set(parameters) - _PARAMETERS) if isinstance(parameters, dict) else ["?"]
    if unknown:
        return f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'parameters'."
    size = parameters.get("outputDimensionality")
    if size is not None and (not isinstance(size, int) or not 0 < size <= _dimensions(model)):
        return (
            f"Value {size} for outputDimensionality is out of range: {model} supports 1 to "
            f"{_dimensions(model)}."
        )
    return None


def _rewritten(request: RecordedRequest, path: str, body: dict[str, Any]) -> RecordedRequest:
    """The request as the publisher's own API would have received it."""
    return RecordedRequest(
        method=request.method,
        path=path,
        headers=request.headers,
        body=json.dumps(body).encode(),
        received_at=request.received_at,
    )
