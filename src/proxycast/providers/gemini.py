"""Adapter for Gemini's ``generateContent`` API (``x-goog-api-key``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from proxycast.codecs.gemini import STATUS_BY_NAME
from proxycast.providers._http import Upstream, UpstreamErrorInfo

if TYPE_CHECKING:
    import httpx


class GeminiUpstream(Upstream):
    """``POST {base_url}/v1beta/models/{model}:generateContent`` or ``:streamGenerateContent?alt=sse``."""

    dialect = "gemini"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": key} if key else {}

    def error_message(self, body: Any) -> UpstreamErrorInfo | None:
        if isinstance(body, list) and body:  # some Google front ends wrap the error in a list
            body = body[0]
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            status = error.get("status") if isinstance(error.get("status"), str) else None
            code = None
            if (
                status in STATUS_BY_NAME
                and "token" in error["message"]
                and "exceed" in error["message"]
            ):
                code = "context_length_exceeded"
            return UpstreamErrorInfo(error["message"], type=status, code=code)
        return None

    async def count_tokens(self, model: str, body: dict[str, Any]) -> httpx.Response:
        """``:countTokens`` for a generateContent body; the open response (the caller closes it)."""
        url = f"{self.provider.url}/v1beta/models/{quote(model, safe='')}:countTokens"
        request = {"generateContentRequest": {"model": f"models/{model}", **body}}
        return await self.open(url, json.dumps(request, ensure_ascii=False).encode(), {})

    async def generate(self, model: str, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """Send a generateContent request; the open response (the caller closes it)."""
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        url = f"{self.provider.url}/v1beta/models/{quote(model, safe='')}:{method}"
        return await self.open(url, json.dumps(body, ensure_ascii=False).encode(), {})
