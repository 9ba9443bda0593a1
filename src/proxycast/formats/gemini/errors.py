"""Gemini's error bodies (``{"error": {code, message, status}}``): read from Gemini upstreams, rendered
for Gemini API clients."""

from __future__ import annotations

from typing import Any

from proxycast.errors import ErrorInfo, ProxycastError

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


NAME_BY_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""The canonical status name Google's APIs give with each HTTP status (``google.rpc.Code``)."""


def error_body(error: ProxycastError) -> dict[str, Any]:
    """The error as Google's ``{"error": {code, message, status}}``; a 429 carries its retry delay
    as ``google.rpc.RetryInfo`` (the Gemini CLI and the SDKs wait that long before retrying)."""
    code = error.status
    native = error.native[1] if error.native and error.native[0] == "gemini" else None
    name = (
        native or NAME_BY_STATUS.get(code) or ("INTERNAL" if code >= 500 else "FAILED_PRECONDITION")
    )
    body: dict[str, Any] = {"code": code, "message": error.message, "status": name}
    retry = error.headers.get("retry-after") or error.headers.get("Retry-After")
    if code == 429 and retry is not None and retry.isdigit():
        body["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry}s"}
        ]
    return {"error": body}
