"""Gemini's error bodies (``{"error": {code, message, status}}``), read from Gemini upstreams."""

from __future__ import annotations

from typing import Any

from proxycast.errors import ErrorInfo

# Google's canonical status names -> HTTP status.
STATUS_BY_NAME = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def error_info(body: Any) -> ErrorInfo | None:
    """What a Gemini error body says; a prompt over the model's limit gets OpenAI's
    ``context_length_exceeded`` code, which clients of every dialect test for."""
    if isinstance(body, list) and body:  # some Google front ends wrap the error in a list
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    name = error.get("status") if isinstance(error.get("status"), str) else None
    message = error.get("message")
    if not isinstance(message, str):
        if name is None:
            return None
        message = f"Gemini error {name}"
    code = None
    if name in STATUS_BY_NAME and "token" in message and "exceed" in message:
        code = "context_length_exceeded"
    status = STATUS_BY_NAME.get(name or "")
    if status is None and isinstance(error.get("code"), int):
        status = error["code"]
    return ErrorInfo(message=message, type=name, code=code, status=status)
