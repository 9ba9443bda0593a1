"""Adapter for OpenAI-compatible upstreams (OpenAI, DeepSeek, vLLM, Ollama, ...)."""

from __future__ import annotations

from typing import Any

import httpx

from proxycast.providers._http import Upstream


class OpenAIUpstream(Upstream):
    """``POST {base_url}/chat/completions`` with ``Authorization: Bearer KEY``."""

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def error_message(self, body: Any) -> tuple[str, str | None, str | None] | None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            param, code = error.get("param"), error.get("code")
            return (
                error["message"],
                param if isinstance(param, str) else None,
                code if isinstance(code, str) else None,
            )
        if isinstance(error, str):  # vLLM and some others: {"error": "...", ...}
            return error, None, None
        return None

    async def chat(self, body: bytes) -> httpx.Response:
        """Send a Chat Completions body as it is; the open response (caller closes it)."""
        return await self.open(self.provider.url + "/chat/completions", body, {})
