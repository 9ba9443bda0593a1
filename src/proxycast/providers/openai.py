"""Adapter for OpenAI-compatible upstreams (OpenAI, DeepSeek, vLLM, Ollama, ...)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from proxycast.providers._http import Upstream, UpstreamErrorInfo

if TYPE_CHECKING:
    import httpx


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class OpenAIUpstream(Upstream):
    """``POST {base_url}/chat/completions`` with ``Authorization: Bearer KEY``."""

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    dialect = "openai"

    def error_message(self, body: Any) -> UpstreamErrorInfo | None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return UpstreamErrorInfo(
                error["message"],
                *(_str_or_none(error.get(k)) for k in ("type", "param", "code")),
            )
        if isinstance(error, str):  # some servers: {"error": "...", ...}
            return UpstreamErrorInfo(error)
        return None

    async def chat(self, body: bytes | dict[str, Any]) -> httpx.Response:
        """Send a Chat Completions body (as it is, or serialised); the open response (caller closes it)."""
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        return await self.open(self.provider.url + "/chat/completions", data, {})
