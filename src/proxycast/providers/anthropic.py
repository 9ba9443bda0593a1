"""Adapter for Anthropic's Messages API (``POST {base_url}/v1/messages``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from proxycast.providers._http import Upstream, UpstreamErrorInfo

if TYPE_CHECKING:
    import httpx

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicUpstream(Upstream):
    """Sends ``x-api-key`` and ``anthropic-version``; reads Anthropic's error bodies."""

    dialect = "anthropic"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    def error_message(self, body: Any) -> UpstreamErrorInfo | None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            kind = error.get("type") if isinstance(error.get("type"), str) else None
            code = None
            if kind == "invalid_request_error" and "prompt is too long" in error["message"]:
                code = "context_length_exceeded"
            return UpstreamErrorInfo(error["message"], type=kind, code=code)
        return None

    async def messages(
        self, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """Send a Messages request (a body to serialise, or one to forward as it is); the open
        response (the caller closes it). ``headers``: the client's ``anthropic-*`` headers."""
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        return await self.open(self.provider.url + "/v1/messages", data, headers or {})

    async def count_tokens(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Forward a count_tokens request; the open response (the caller closes it)."""
        return await self.open(self.provider.url + "/v1/messages/count_tokens", body, headers)
