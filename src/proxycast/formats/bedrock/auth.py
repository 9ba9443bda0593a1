"""Bedrock's credentials: AWS Signature Version 4 with botocore's signer, from the standard credential
chain, or a Bedrock API key (``Authorization: Bearer``).

botocore is imported only here and only when a request is signed (the ``proxycast[aws]`` extra). Its
credential chain is synchronous and may do I/O (the shared files, a container's or an instance's
metadata endpoint, an SSO cache), so it runs in a worker thread, once per credential, and so do the
refreshes of temporary credentials; the signature itself is a few HMACs, computed on the event loop
over the request's exact bytes for the host actually called.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import httpx
import trio

from proxycast.errors import UpstreamCredentialsError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Generator, Mapping

SERVICE = "bedrock"
"""The signing name of both the runtime and the control plane (botocore's service models)."""
EXTRA = "pip install 'proxycast[aws]'"
SIGNED = ("host", "content-type")
"""The request headers signed besides ``x-amz-date`` and ``x-amz-security-token``: what no hop
between the gateway and AWS may change (a proxy or httpx itself may add others)."""


def missing_botocore() -> str | None:
    """What to install when botocore is missing (None: it is installed)."""
    try:
        import botocore  # noqa: F401
    except ImportError:
        return f"signing requests to Bedrock (SigV4) needs botocore: {EXTRA}"
    return None


def load_credentials(profile: str) -> Any:
    """The credentials the standard chain finds (botocore's ``Credentials``, or
    ``RefreshableCredentials``), for ``profile`` (else ``AWS_PROFILE``, else the default); None when
    it finds none. Synchronous, and may do I/O: call it off the event loop."""
    import botocore.exceptions
    import botocore.session

    session = botocore.session.Session(profile=profile or None)
    try:
        return session.get_credentials()
    except botocore.exceptions.ProfileNotFound as exc:
        raise UpstreamCredentialsError(
            f"Bedrock: {exc}; check the provider's profile or AWS_PROFILE."
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise UpstreamCredentialsError(f"Bedrock: the AWS credential chain failed: {exc}") from None


def sign(request: httpx.Request, credentials: Any, region: str) -> None:
    """Add SigV4's ``Authorization``, ``X-Amz-Date`` (and ``X-Amz-Security-Token``) to ``request``,
    signing its exact body, method, URL (path and query as sent) and :data:`SIGNED` headers."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    headers = {name: request.headers[name] for name in SIGNED if name in request.headers}
    headers.setdefault("host", request.url.netloc.decode("ascii"))
    signed = AWSRequest(
        method=request.method, url=str(request.url), data=request.content, headers=headers
    )
    SigV4Auth(credentials, SERVICE, region).add_auth(signed)
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        value = signed.headers.get(name)
        if value is not None:
            request.headers[name] = value


class SigV4(httpx.Auth):
    """Requests signed with the AWS credential chain's credentials (:func:`load_credentials`),
    loaded on first use in a thread and kept; temporary ones are refreshed (in a thread, one
    refresh at a time) when botocore says they are due, and frozen for each signature."""

    requires_request_body = True

    def __init__(
        self, region: str, profile: str = "", loader: Callable[[str], Any] = load_credentials
    ) -> None:
        self._region = region
        self._profile = profile
        self._loader = loader
        self._credentials: Any = None
        self._lock: trio.Lock | None = None

    def __repr__(self) -> str:
        return f"<SigV4 {SERVICE} {self._region}>"  # never the keys

    async def _frozen(self) -> Any:
        if self._lock is None:
            self._lock = trio.Lock()
        if self._credentials is None:
            async with self._lock:
                if self._credentials is None:
                    problem = missing_botocore()
                    if problem:
                        raise UpstreamCredentialsError(f"Bedrock: {problem}.")
                    found = await trio.to_thread.run_sync(self._loader, self._profile)
                    if found is None:
                        raise UpstreamCredentialsError(f"Bedrock: {NO_CREDENTIALS}.")
                    self._credentials = found
        credentials = self._credentials
        due = getattr(credentials, "refresh_needed", None)
        if due is not None and due():
            async with self._lock:  # one refresh in flight; the others wait for it
                return await trio.to_thread.run_sync(credentials.get_frozen_credentials)
        return credentials.get_frozen_credentials()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()  # the exact bytes signed (httpx's own flows read it like this)
        sign(request, await self._frozen(), self._region)
        yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("SigV4 signs requests of an async client only")


NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), "
    "AWS_PROFILE or the provider's profile (the shared ~/.aws files), or use a Bedrock API key "
    "(AWS_BEARER_TOKEN_BEDROCK or the provider's api_keys)"
)


def chain_problem(profile: str, env: Mapping[str, str] = os.environ) -> str | None:
    """What ``proxycast check`` says about the credential chain, looked at without any network
    call: botocore missing, a profile that does not exist, or no credentials at all where no
    metadata endpoint could supply them (``AWS_EC2_METADATA_DISABLED``, no container endpoint)."""
    problem = missing_botocore()
    if problem:
        return problem
    import botocore.exceptions
    import botocore.session

    session = botocore.session.Session(profile=profile or None)
    try:
        resolver = session.get_component("credential_provider")
        found = None
        for provider in resolver.providers:
            if provider.METHOD in ("iam-role", "container-role"):
                continue  # network endpoints: never asked by a check
            found = provider.load()
            if found is not None:
                break
    except botocore.exceptions.ProfileNotFound as exc:
        return (
            f"{exc}: set the provider's profile or AWS_PROFILE to one of the shared files' profiles"
        )
    except botocore.exceptions.BotoCoreError:
        return None  # a source that failed to load is for the first request to report
    if found is not None:
        return None
    metadata = env.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true"
    container = any(
        env.get(v)
        for v in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
    )
    return None if metadata or container else NO_CREDENTIALS
