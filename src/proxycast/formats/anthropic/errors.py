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


RETRYABLE = frozenset({408, 409, 429})
"""The 4xx statuses Anthropic's SDKs retry (with every 5xx)."""


def mark_not_retryable(error: ProxycastError) -> None:
    """Add ``x-should-retry: false`` to an error that retrying cannot fix, as Anthropic's API does:
    the SDKs (and Claude Code) otherwise retry a 401, say, for minutes before giving up."""
    code = status(error)
    if 400 <= code < 500 and code not in RETRYABLE:
        error.headers.setdefault("x-should-retry", "false")


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
