"""Asking a provider which models it serves: its own models endpoint (OpenAI ``/models``, Anthropic
``/v1/models``, Gemini ``/v1beta/models``), page by page, with one of its keys.

Used by the model catalog (``catalog.py``: ``/v1/models`` and ``proxycast models``) and by
``proxycast check --online``, which reports per key whether the provider is reachable, rejects the
key, or is not where its ``base_url`` says (a 404 there usually means a missing ``/v1``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import attrs
import httpx

from proxycast import formats
from proxycast.errors import ModelsEndpointError, Outcome, ProxycastError
from proxycast.upstream.hints import wrong_path_hint
from proxycast.upstream.provider import mapped_errors

if TYPE_CHECKING:
    from proxycast.config import ProviderConfig, ServerConfig

MAX_PAGES = 20
_BODY_LIMIT = 8 * 1024 * 1024


@attrs.frozen
class Probe:
    """What one key of one provider got from the models endpoint."""

    provider: str
    key_index: int
    outcome: Outcome
    detail: str
    models: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.provider}#{self.key_index}"


async def fetch_models(
    client: httpx.AsyncClient, provider: ProviderConfig, server: ServerConfig, index: int = 0
) -> tuple[str, ...]:
    """Every model id the provider's models endpoint lists, with its credential number ``index``
    (none when it has none).

    Raises:
        ModelsEndpointError: with the outcome (unauthorised, wrong path, unreachable...).
    """
    upstream = formats.UPSTREAMS[provider.type]
    credentials = upstream.credentials(provider)
    auth = credentials[index] if credentials else None
    first = upstream.models_url(provider)
    url = first
    ids: list[str] = []
    for _ in range(MAX_PAGES):
        try:
            with mapped_errors(provider, server):
                response = await client.get(
                    url,
                    headers={"accept-encoding": "identity", **upstream.headers},
                    auth=auth or httpx.USE_CLIENT_DEFAULT,
                )
        except ProxycastError as exc:
            raise ModelsEndpointError("unreachable", exc.message) from None
        data = response.content[:_BODY_LIMIT]
        where = f"GET {httpx.URL(url).path}"
        if response.status_code in (401, 403):
            raise ModelsEndpointError(
                "unauthorised", f"{where} answered {response.status_code}: the key was rejected"
            )
        if response.status_code == 404:
            raise ModelsEndpointError(
                "wrong path", f"{where} answered 404.{wrong_path_hint(provider, data)}"
            )
        if response.status_code != 200:
            raise ModelsEndpointError(
                "unexpected answer", f"{where} answered {response.status_code}"
            )
        try:
            page = upstream.models_page(json.loads(data))
        except ValueError:
            page = None
        if page is None:
            raise ModelsEndpointError(
                "unexpected answer", f"{where} answered 200 with a body that is not a models list"
            )
        ids += page.ids
        if page.next_url is not None:
            url = str(httpx.URL(url).join(page.next_url))
        elif page.next_query is None:
            break
        else:
            url = first + ("&" if "?" in first else "?") + page.next_query
    return tuple(dict.fromkeys(ids))


async def probe(
    client: httpx.AsyncClient, provider: ProviderConfig, server: ServerConfig, index: int
) -> Probe:
    """Call the provider's models endpoint with its key number ``index`` (0 when it has none)."""
    try:
        models = await fetch_models(client, provider, server, index)
    except ModelsEndpointError as exc:
        return Probe(provider.name, index, exc.outcome, exc.detail)
    return Probe(provider.name, index, "reachable", f"{len(models)} models listed", models)
