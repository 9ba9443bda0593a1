"""Bedrock's errors: an answer's status with ``x-amzn-errortype`` and a ``{"message": ...}`` body, and
the ``exception`` frames that end an event stream (throttling, a model's stream error...)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from proxycast.errors import ErrorInfo, UpstreamError, UpstreamUnavailableError, upstream_error

if TYPE_CHECKING:
    from collections.abc import Mapping

STATUS_BY_EXCEPTION = {
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "ServiceUnavailableException": 503,
    "InternalServerException": 500,
    "ModelStreamErrorException": 424,
    "ModelErrorException": 424,
    "ModelTimeoutException": 408,
    "ValidationException": 400,
    "ServiceQuotaExceededException": 400,
    "ResourceNotFoundException": 404,
    "AccessDeniedException": 403,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "ExpiredTokenException": 403,
}
"""Each exception's HTTP status (botocore's bedrock-runtime model): ModelNotReady is a 429 AWS's
SDKs retry, as proxycast retries 429s."""


def exception_name(value: str) -> str:
    """``ThrottlingException`` from ``x-amzn-errortype``'s ``ThrottlingException:http://...`` or an
    event stream's ``throttlingException``."""
    name = value.partition(":")[0].strip()
    return name[:1].upper() + name[1:]


def _message(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for key in ("message", "Message"):
        if isinstance(body.get(key), str):
            return str(body[key])
    return None


def error_info(status: int, headers: Mapping[str, str], body: Any) -> ErrorInfo | None:
    """What an error answer says: its exception (``x-amzn-errortype``, else the body's
    ``__type``) and its message."""
    kind = headers.get("x-amzn-errortype") or (
        body.get("__type") if isinstance(body, dict) else None
    )
    message = _message(body)
    if message is None and not kind:
        return None
    name = exception_name(str(kind)) if kind else None
    code = None
    if message and name == "ValidationException" and "too long" in message.lower():
        code = "context_length_exceeded"  # "Input is too long for requested model."
    return ErrorInfo(
        message=message or f"Bedrock answered {status} ({name})",
        type=name,
        code=code,
        status=STATUS_BY_EXCEPTION.get(name or ""),
    )


def stream_exception(event_type: str, payload: bytes) -> UpstreamError:
    """The error an ``exception`` (or ``error``) frame of a 200 stream reports, with the status
    the same exception has as an answer (a throttling exception is a 429)."""
    name = exception_name(event_type) or "InternalServerException"
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    message = _message(body) or f"Bedrock reported {name} mid-stream."
    status = STATUS_BY_EXCEPTION.get(name, 500)
    return upstream_error("bedrock", ErrorInfo(message=message, type=name), status)


def corrupt(detail: str) -> UpstreamUnavailableError:
    """A stream that cannot be framed (a CRC mismatch): a 502, the upstream's fault."""
    return UpstreamUnavailableError(f"Bedrock sent a corrupt event stream: {detail}.")
