"""OpenAI's error bodies: rendered for OpenAI clients, read from OpenAI-compatible upstreams."""

from __future__ import annotations

from typing import Any

from proxycast.errors import ErrorInfo, Kind, ProxycastError

# OpenAI's SDKs pick the exception class by status alone; ``type`` and ``code`` inform.

_TYPE: dict[Kind, str] = {
    "invalid_request": "invalid_request_error",
    "authentication": "invalid_request_error",
    "permission": "permission_error",
    "not_found": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "api_error": "server_error",
    "overloaded": "server_error",
    "timeout": "timeout_error",
}

_CODE: dict[Kind, str] = {
    "authentication": "invalid_api_key",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_exceeded",
}


def error_body(error: ProxycastError) -> dict[str, Any]:
    """The error as OpenAI's ``{"error": {message, type, param, code}}``."""
    native = error.native[1] if error.native and error.native[0] == "openai" else None
    return {
        "error": {
            "message": error.message,
            "type": native or _TYPE[error.kind],
            "param": error.param,
            "code": error.code if native else error.code or _CODE.get(error.kind),
        }
    }


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def error_info(body: Any) -> ErrorInfo | None:
    """What an OpenAI-shaped error body says (``{"error": {message, type, param, code}}``)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return ErrorInfo(
            message=error["message"],
            type=_str_or_none(error.get("type")),
            param=_str_or_none(error.get("param")),
            code=_str_or_none(error.get("code")),
            status=error["code"] if isinstance(error.get("code"), int) else None,
        )
    if isinstance(error, str):  # some servers: {"error": "...", ...}
        return ErrorInfo(message=error)
    return None
