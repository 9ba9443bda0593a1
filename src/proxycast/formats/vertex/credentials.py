"""Vertex AI's credentials: an OAuth access token (``Authorization: Bearer``), refreshed before it expires.

Where a token comes from, in order: the provider's ``api_keys`` (access tokens as they are, never
refreshed: ``gcloud auth print-access-token``); a JSON key file (``credentials_file``, else
``GOOGLE_APPLICATION_CREDENTIALS``, else gcloud's application default credentials file), either a
service account's (a JWT assertion signed with its private key, google-auth's signer, exchanged at the
file's ``token_uri``) or a user's (``gcloud auth application-default login``: its refresh token
exchanged there). The exchange is httpx's async client on the event loop, never google-auth's blocking
transport; one refresh is in flight at a time, and requests that find one in flight while the current
token is still valid go on with it (:class:`TokenAuth`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from proxycast.errors import UpstreamCredentialsError, UpstreamUnavailableError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from proxycast.config import ProviderConfig

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_SECONDS = 3600
"""The lifetime of a signed assertion (Google's maximum)."""
REFRESH_MARGIN = 300.0
"""A token is refreshed this many seconds before it expires (or halfway through a shorter life)."""
EXTRA = "pip install 'proxycast[gcp]'"


def monotonic() -> float:
    """The clock of token lifetimes (a module function, so that tests can move it on)."""
    return time.monotonic()


class CredentialsFileError(ValueError):
    """A credentials file that cannot be used (its message says why, never its secrets)."""


def adc_file(env: Mapping[str, str]) -> Path:
    """gcloud's application default credentials file (``gcloud auth application-default login``)."""
    config = env.get("CLOUDSDK_CONFIG")
    if config:
        return Path(config) / "application_default_credentials.json"
    if os.name == "nt":
        return Path(env.get("APPDATA", "")) / "gcloud" / "application_default_credentials.json"
    return Path.home() / ".config" / "gcloud" / "application_default_credentials.json"


def key_file(provider: ProviderConfig, env: Mapping[str, str]) -> tuple[Path, str] | None:
    """The JSON credentials file ``provider`` uses and the setting that names it; None when it uses
    tokens of its own (``api_keys``) or there is none."""
    if provider.api_keys:
        return None
    if provider.credentials_file:
        return Path(provider.credentials_file).expanduser(), "credentials_file"
    if env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return Path(env["GOOGLE_APPLICATION_CREDENTIALS"]), "GOOGLE_APPLICATION_CREDENTIALS"
    default = adc_file(env)
    if default.is_file():
        return default, "application default credentials"
    return None


def read_key_file(path: Path, named_by: str) -> dict[str, Any]:
    """The parsed file, checked for what its ``type`` needs."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CredentialsFileError(
            f"{named_by}: cannot read {str(path)!r} ({exc.strerror or exc})"
        ) from None
    except ValueError:
        raise CredentialsFileError(f"{named_by}: {str(path)!r} is not JSON") from None
    if not isinstance(info, dict):
        raise CredentialsFileError(f"{named_by}: {str(path)!r} is not a JSON object")
    kind = info.get("type")
    needed = {
        "service_account": ("client_email", "private_key"),
        "authorized_user": ("client_id", "client_secret", "refresh_token"),
    }.get(kind if isinstance(kind, str) else "")
    if needed is None:
        raise CredentialsFileError(
            f"{named_by}: {str(path)!r} has type {kind!r}; proxycast reads 'service_account' and "
            "'authorized_user' files (or give access tokens in api_keys)"
        )
    missing = [k for k in needed if not isinstance(info.get(k), str) or not info[k]]
    if missing:
        raise CredentialsFileError(f"{named_by}: {str(path)!r} lacks {', '.join(missing)}")
    return info


def signer(info: Mapping[str, Any]) -> Any:
    """google-auth's RS256 signer of a service account's key (the gcp extra, imported here only)."""
    try:
        from google.auth import crypt
    except ImportError:
        raise CredentialsFileError(f"a service account key needs google-auth: {EXTRA}") from None
    try:
        return crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]
    except ValueError:
        raise CredentialsFileError(
            "the service account's private_key cannot be read (not a PEM RSA key)"
        ) from None


@attrs.frozen
class Token:
    value: str = attrs.field(repr=False)
    lifetime: float
    """Seconds it is valid for, from when it was issued."""


@attrs.define(eq=False)
class ServiceAccount:
    """A service account's key: a signed JWT assertion exchanged for an access token."""

    email: str
    token_uri: str
    _signer: Any = attrs.field(repr=False)

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ServiceAccount:
        return cls(info["client_email"], info.get("token_uri") or GOOGLE_TOKEN_URI, signer(info))

    def form(self) -> dict[str, str]:
        from google.auth import jwt

        now = int(time.time())
        claims = {
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
        }
        assertion = jwt.encode(self._signer, claims)  # type: ignore[no-untyped-call]
        return {"grant_type": JWT_GRANT, "assertion": assertion.decode("ascii")}


@attrs.define(eq=False)
class AuthorizedUser:
    """A user's refresh token (``gcloud auth application-default login``)."""

    client_id: str
    token_uri: str
    _client_secret: str = attrs.field(repr=False)
    _refresh_token: str = attrs.field(repr=False)
    quota_project: str = ""
    """The file's ``quota_project_id``: a user's requests name the project billed for them
    (``x-goog-user-project``), which Vertex requires of user credentials."""

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> AuthorizedUser:
        quota = info.get("quota_project_id")
        return cls(
            info["client_id"],
            info.get("token_uri") or GOOGLE_TOKEN_URI,
            info["client_secret"],
            info["refresh_token"],
            quota if isinstance(quota, str) else "",
        )

    def form(self) -> dict[str, str]:
        return {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
        }


Source = ServiceAccount | AuthorizedUser


def source(info: Mapping[str, Any]) -> Source:
    if info["type"] == "service_account":
        return ServiceAccount.from_info(info)
    return AuthorizedUser.from_info(info)


async def exchange(grant: Source, provider: str) -> Token:
    """One token request at the grant's ``token_uri`` (OAuth 2.0's form POST)."""
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
            response = await client.post(grant.token_uri, data=grant.form())
    except httpx.HTTPError as exc:
        raise UpstreamUnavailableError(
            f"Provider {provider!r}: cannot get an access token from {grant.token_uri} "
            f"({type(exc).__name__})."
        ) from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    if response.status_code != 200 or not isinstance(body.get("access_token"), str):
        said = (
            body.get("error_description") or body.get("error") or f"status {response.status_code}"
        )
        error = UpstreamCredentialsError if response.status_code < 500 else UpstreamUnavailableError
        raise error(
            f"Provider {provider!r}: {grant.token_uri} refused to issue an access token "
            f"({str(said)[:200]}); check the provider's credentials."
        )
    lifetime = body.get("expires_in")
    return Token(body["access_token"], float(lifetime) if isinstance(lifetime, int) else 3600.0)


class TokenAuth(httpx.Auth):
    """``Authorization: Bearer`` with an access token from ``grant``, refreshed before it expires.

    One refresh runs at a time (a lock): a request that finds the token due for refresh starts it and
    waits; the others meanwhile go on with the current token while it is still valid, and wait for the
    refresh only once it has expired.
    """

    def __init__(self, grant: Source, provider: str) -> None:
        self._grant = grant
        self._provider = provider
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._lock = trio.Lock()
        self.refreshes = 0
        """Token requests made (for tests and diagnostics)."""

    def __repr__(self) -> str:
        return f"<TokenAuth {self._grant.token_uri}>"  # never the token

    async def token(self) -> str:
        """A valid access token, refreshed first if it is due."""
        now = monotonic()
        if self._token is not None and (
            now < self._refresh_at or (self._lock.locked() and now < self._expires_at)
        ):
            return self._token
        async with self._lock:
            now = monotonic()
            if self._token is not None and now < self._refresh_at:
                return self._token  # another request refreshed it while this one waited
            self.refreshes += 1
            fresh = await exchange(self._grant, self._provider)
            issued = monotonic()
            self._token = fresh.value
            self._expires_at = issued + fresh.lifetime
            self._refresh_at = issued + max(fresh.lifetime - REFRESH_MARGIN, fresh.lifetime / 2)
            return fresh.value

    def forget(self, token: str) -> None:
        """``token`` was refused (revoked, or expired early): the next request gets a fresh one."""
        if self._token == token:
            self._refresh_at = self._expires_at = 0.0

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The request with the token; once more with a fresh one if the token was refused (a 401:
        revoked or expired before its time, as google-auth's transports do)."""
        token = await self.token()
        request.headers["authorization"] = f"Bearer {token}"
        if isinstance(self._grant, AuthorizedUser) and self._grant.quota_project:
            request.headers["x-goog-user-project"] = self._grant.quota_project
        response = yield request
        if response.status_code == 401:
            self.forget(token)
            request.headers["authorization"] = f"Bearer {await self.token()}"
            yield request
