"""Entra ID tokens for Azure OpenAI: ``Authorization: Bearer`` from azure-identity's credential
chain (``DefaultAzureCredential``: environment, workload identity, managed identity, the Azure
CLI...), for providers without ``api_keys``.

azure-identity is the ``azure`` extra, imported when the first token is wanted. Its
``get_token`` blocks (it may call a token endpoint), so it runs in a worker thread, off the event
loop. A token is reused until five minutes before it expires; one refresh is in flight at a time:
requests that arrive meanwhile use the token still valid, or wait for the new one when there is
none.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import trio

from proxycast.errors import UpstreamCredentialsError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Generator

SCOPE = "https://cognitiveservices.azure.com/.default"
"""The scope of Azure OpenAI's (Cognitive Services') tokens."""

REFRESH_BEFORE = 300.0
"""Seconds before its expiry that a token is refreshed."""

EXTRA_MISSING = (
    "Azure provider without api_keys: Entra ID tokens need azure-identity, which is not "
    "installed: pip install 'proxycast[azure]' (or give the provider api_keys)."
)


class AccessToken(Protocol):
    """azure-core's ``AccessToken``: the token and its expiry (seconds since the epoch)."""

    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> int: ...


class TokenCredential(Protocol):
    """azure-core's ``TokenCredential`` (sync): what ``DefaultAzureCredential`` is."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...


def default_credential() -> TokenCredential:
    """azure-identity's ``DefaultAzureCredential`` (the error names the extra when it is missing)."""
    try:
        from azure.identity import DefaultAzureCredential  # the azure extra, when needed
    except ImportError:
        raise UpstreamCredentialsError(EXTRA_MISSING) from None
    credential: TokenCredential = DefaultAzureCredential()
    return credential


class EntraAuth(httpx.Auth):
    """``Authorization: Bearer`` with an Entra ID token of ``credential`` (made by ``factory``,
    azure-identity's ``DefaultAzureCredential`` by default, when the first token is wanted)."""

    def __init__(
        self,
        factory: Callable[[], TokenCredential] = default_credential,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._factory = factory
        self._credential: TokenCredential | None = None
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._refreshing = trio.Lock()
        self.refreshes = 0
        """Tokens obtained so far (each a call of the credential's ``get_token``)."""

    def __repr__(self) -> str:
        return "<EntraAuth>"  # never the token

    async def token(self) -> str:
        """A valid token: the one held while it is fresh (or while another task refreshes it and
        it has not expired), else a new one."""
        now = self._clock()
        if self._token is not None and now < self._expires - REFRESH_BEFORE:
            return self._token
        if self._token is not None and now < self._expires and self._refreshing.locked():
            return self._token  # still valid: no need to wait for the refresh in flight
        async with self._refreshing:
            now = self._clock()
            if self._token is None or now >= self._expires - REFRESH_BEFORE:
                await self._refresh()
            assert self._token is not None
            return self._token

    async def _refresh(self) -> None:
        if self._credential is None:
            self._credential = self._factory()
        credential = self._credential
        try:
            # abandon_on_cancel: a client that leaves does not wait for the token endpoint
            token = await trio.to_thread.run_sync(
                credential.get_token, SCOPE, abandon_on_cancel=True
            )
        except Exception as exc:  # azure-identity's ClientAuthenticationError, and the like
            # its message says which credentials of the chain it tried and why each failed
            raise UpstreamCredentialsError(
                f"No Entra ID token for Azure OpenAI ({type(exc).__name__}): {exc}"
            ) from None
        self._token = token.token
        self._expires = float(token.expires_on)
        self.refreshes += 1

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["authorization"] = f"Bearer {await self.token()}"
        yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("EntraAuth works with httpx's AsyncClient only")
        yield request  # pragma: no cover - makes this a generator
