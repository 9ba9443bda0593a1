"""Anthropic's error bodies: rendered for Anthropic clients, read from Anthropic upstreams."""

from __future__ import annotations

from typing import Any

from proxycast.errors import ErrorInfo, Kind, ProxycastError

_TYPE: dict[Kind, str] = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "api_error": "api_error",
    "overloaded": "overloaded_error",
    "timeout": "timeout_error",
}

# Anthropic error types -> the HTTP status Anthropic answers them with, for errors inside a stream.
STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
    "timeout_error": 504,
}


def status(error: ProxycastError) -> int:
    """The status an Anthropic client gets: Anthropic says 529 for overloaded."""
    return 529 if error.status == 503 else error.status


def error_body(error: ProxycastError) -> dict[str, Any]:
    """The error as Anthropic's ``{"type": "error", "error": {type, message}}``."""
    native = error.native[1] if error.native and error.native[0] == "anthropic" else None
    kind = "overloaded" if status(error) == 529 else error.kind
    return {"type": "error", "error": {"type": native or _TYPE[kind], "message": error.message}}


def error_info(body: Any) -> ErrorInfo | None:
    """What an Anthropic error body says; a too-long prompt gets OpenAI's ``context_length_exceeded``
    code, which clients of every dialect test for."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    message = error.get("message")
    if not isinstance(message, str):
        if kind is None:
            return None
        message = f"Anthropic error {kind}"
    code = None
    if kind == "invalid_request_error" and "prompt is too long" in message:
        code = "context_length_exceeded"
    return ErrorInfo(message=message, type=kind, code=code, status=STATUS_BY_TYPE.get(kind or ""))
