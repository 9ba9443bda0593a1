"""The Responses API's errors: an HTTP error is OpenAI's ``{"error": {message, type, param, code}}``;
inside a stream, a failure is a ``response.failed`` event whose ``response.error`` has a ``code`` and a
``message`` (what Codex and the SDKs read)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxycast.formats.openai.errors import error_body

if TYPE_CHECKING:
    from proxycast.errors import Kind, ProxycastError

__all__ = ("error_body", "stream_error")

_CODE: dict[Kind, str] = {
    "invalid_request": "invalid_prompt",
    "authentication": "invalid_api_key",
    "permission": "permission_denied",
    "not_found": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_exceeded",
    "api_error": "server_error",
    "overloaded": "server_is_overloaded",
    "timeout": "server_error",
}


def stream_error(error: ProxycastError) -> dict[str, Any]:
    """``response.error`` of a failed response: the error's own code (``context_length_exceeded``,
    say) where it has one, else one of the API's codes for its kind."""
    return {"code": error.code or _CODE[error.kind], "message": error.message}
