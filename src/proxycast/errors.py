"""Errors that proxycast reports to its clients.

Every error a client can see is a :class:`ProxycastError`. It carries an HTTP status, a neutral
``kind`` and a message; each inbound API renders it in its own dialect (``render_openai``,
``render_anthropic``)::

    ProxycastError                    500 api_error
    ├── InvalidRequestError           400 invalid_request (bad JSON, a field missing or mistyped)
    │   ├── RequestTooLargeError      413 request_too_large
    │   └── ModelNotFoundError        404 not_found (no route for the model)
    ├── AuthenticationError           401 authentication (the client's gateway key)
    ├── RouteNotFoundError            404 not_found (no such URL)
    ├── MethodNotAllowedError         405 invalid_request
    └── UpstreamError                 an upstream failed; status as the upstream said, or:
        ├── UpstreamUnavailableError  502 api_error (connection refused, reset, bad answer)
        └── UpstreamTimeoutError      504 timeout
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

Kind = Literal[
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "request_too_large",
    "rate_limit",
    "api_error",
    "overloaded",
    "timeout",
]


class ProxycastError(Exception):
    """The root of every error a client may see.

    Args:
        message: what went wrong and, where the client can fix it, what to change.
        status: the HTTP status; the class default when omitted.
        kind: the neutral error kind; derived from the status when omitted.
        param: the request field at fault, if any (OpenAI's ``param``).
        code: a machine-readable code (OpenAI's ``code``), if any.
        headers: response headers to pass on (``retry-after``).
        native: ``(dialect, type)``: the upstream's own error type, kept when the client speaks
            the upstream's dialect.
    """

    status: ClassVar[int] = 500
    kind: ClassVar[Kind] = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        kind: Kind | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        native: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status if status is not None else self.status
        self.error_kind: Kind = kind or (
            kind_for_status(self.status_code) if status is not None else self.kind
        )
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.native = native


class InvalidRequestError(ProxycastError):
    status = 400
    kind: ClassVar[Kind] = "invalid_request"


class RequestTooLargeError(InvalidRequestError):
    status = 413
    kind: ClassVar[Kind] = "request_too_large"


class ModelNotFoundError(InvalidRequestError):
    status = 404
    kind: ClassVar[Kind] = "not_found"


class AuthenticationError(ProxycastError):
    status = 401
    kind: ClassVar[Kind] = "authentication"


class RouteNotFoundError(ProxycastError):
    status = 404
    kind: ClassVar[Kind] = "not_found"


class MethodNotAllowedError(ProxycastError):
    status = 405
    kind: ClassVar[Kind] = "invalid_request"


class UpstreamError(ProxycastError):
    """An upstream answered with an error, or could not be used."""


class UpstreamUnavailableError(UpstreamError):
    status = 502
    kind: ClassVar[Kind] = "api_error"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    kind: ClassVar[Kind] = "timeout"


_KIND_BY_STATUS: dict[int, Kind] = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    413: "request_too_large",
    429: "rate_limit",
    503: "overloaded",
    504: "timeout",
    529: "overloaded",
}


def kind_for_status(status: int) -> Kind:
    """The neutral kind of an HTTP error status (PROTOCOLS.md 5.2)."""
    if status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    return "invalid_request" if 400 <= status < 500 else "api_error"


# OpenAI's `type` for each kind; OpenAI's SDKs pick the exception class by status alone.
_OPENAI_TYPE: dict[Kind, str] = {
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

_OPENAI_CODE: dict[Kind, str] = {
    "authentication": "invalid_api_key",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_exceeded",
}


def openai_error_body(error: ProxycastError) -> dict[str, Any]:
    """The error as OpenAI's ``{"error": {message, type, param, code}}``."""
    native = error.native[1] if error.native and error.native[0] == "openai" else None
    return {
        "error": {
            "message": error.message,
            "type": native or _OPENAI_TYPE[error.error_kind],
            "param": error.param,
            "code": error.code if native else error.code or _OPENAI_CODE.get(error.error_kind),
        }
    }


def render_openai(error: ProxycastError) -> bytes:
    """The OpenAI error body, serialised."""
    return json.dumps(openai_error_body(error)).encode()


_ANTHROPIC_TYPE: dict[Kind, str] = {
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


def anthropic_status(error: ProxycastError) -> int:
    """The status an Anthropic client gets: Anthropic says 529 for overloaded (PROTOCOLS.md 5.2)."""
    return 529 if error.status_code == 503 else error.status_code


def anthropic_error_body(error: ProxycastError) -> dict[str, Any]:
    """The error as Anthropic's ``{"type": "error", "error": {type, message}}``."""
    native = error.native[1] if error.native and error.native[0] == "anthropic" else None
    kind = "overloaded" if anthropic_status(error) == 529 else error.error_kind
    return {
        "type": "error",
        "error": {"type": native or _ANTHROPIC_TYPE[kind], "message": error.message},
    }


def render_anthropic(error: ProxycastError) -> bytes:
    """The Anthropic error body, serialised."""
    return json.dumps(anthropic_error_body(error)).encode()
