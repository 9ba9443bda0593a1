"""Errors that proxycast reports to its clients.

Every error a client can see is a :class:`ProxycastError`. It carries an HTTP status, a neutral
``kind`` and a message; each inbound dialect renders it in its own shape (``render_error`` of
``proxycast.formats.openai.inbound`` and ``.anthropic.inbound``)::

    ProxycastError                    500 api_error
    ├── InvalidRequestError           400 invalid_request (bad JSON, a field missing or mistyped)
    │   ├── RequestTooLargeError      413 request_too_large
    │   └── ModelNotFoundError        404 not_found (no route for the model)
    ├── AuthenticationError           401 authentication (the client's gateway key)
    ├── RouteNotFoundError            404 not_found (no such URL)
    ├── MethodNotAllowedError         405 invalid_request
    └── UpstreamError                 an upstream failed; status as the upstream said, or:
        ├── UpstreamUnavailableError  502 api_error (reset, bad answer)
        │   ├── UpstreamConnectError  502 (the provider cannot be reached)
        │   └── UpstreamCredentialsError 502 (the provider refused proxycast's key)
        └── UpstreamTimeoutError      504 timeout
    RateLimitedError                  429 rate_limit (over a client's limit; every key resting after
                                          the upstream's own 429s)
    UpstreamsRestingError             503 overloaded (every key resting after other failures)
"""

from __future__ import annotations

from typing import Literal

import attrs
import httpx

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

Outcome = Literal["reachable", "unauthorised", "wrong path", "unreachable", "unexpected answer"]
"""What a provider's models endpoint answered a check (``proxycast check --online``)."""


class ProxycastError(Exception):
    """The root of every error a client may see.

    Args:
        message: what went wrong and, where the client can fix it, what to change.
        status: the HTTP status; the class default when omitted.
        kind: the neutral error kind; derived from the status when omitted.
        param: the request field at fault, if any (OpenAI's ``param``).
        code: a machine-readable code (OpenAI's ``code``), if any.
        headers: response headers to pass on (``retry-after``).
        native: ``(format type, error type)``: the upstream's own error type, kept when the client
            speaks the upstream's format.
    """

    status: int = 500
    kind: Kind = "api_error"

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
        if status is not None:
            self.status = status
            self.kind = kind or kind_for_status(status)
        elif kind is not None:
            self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.native = native


class InvalidRequestError(ProxycastError):
    status = 400
    kind: Kind = "invalid_request"


class RequestTooLargeError(InvalidRequestError):
    status = 413
    kind: Kind = "request_too_large"


class ModelNotFoundError(InvalidRequestError):
    status = 404
    kind: Kind = "not_found"


class AuthenticationError(ProxycastError):
    status = 401
    kind: Kind = "authentication"


class RouteNotFoundError(ProxycastError):
    status = 404
    kind: Kind = "not_found"


class MethodNotAllowedError(ProxycastError):
    status = 405
    kind: Kind = "invalid_request"


class UpstreamError(ProxycastError):
    """An upstream answered with an error, or could not be used."""


class UpstreamUnavailableError(UpstreamError):
    status = 502
    kind: Kind = "api_error"


class UpstreamConnectError(UpstreamUnavailableError):
    """The provider could not be reached at all (it is benched, not just the key)."""


class UpstreamCredentialsError(UpstreamUnavailableError):
    """The provider refused the key proxycast presented (401/403): the key is benched."""


class UpstreamTimeoutError(UpstreamError):
    status = 504
    kind: Kind = "timeout"


class RateLimitedError(ProxycastError):
    """A client's limit, or every key and target that could serve the request resting after the
    upstream's own rate limits."""

    status = 429
    kind: Kind = "rate_limit"


class UpstreamsRestingError(ProxycastError):
    """Every key and target that could serve the request is resting after failures other than a
    rate limit (server errors, redirects, refused keys, no connection): the service is unavailable,
    not the client too fast."""

    status = 503
    kind: Kind = "overloaded"


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
    """The neutral kind of an HTTP error status (docs/mappings.md, "Errors")."""
    if status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    return "invalid_request" if 400 <= status < 500 else "api_error"


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """What an upstream's error body says, read once by its format (``error_info``)."""

    message: str
    type: str | None = None
    """The upstream's own error type (kept for clients of the same format)."""
    param: str | None = None
    code: str | None = None
    status: int | None = None
    """The HTTP status the body implies (for errors that arrive inside a 200 stream)."""


def upstream_error(
    format_type: str, info: ErrorInfo, status: int, headers: dict[str, str] | None = None
) -> UpstreamError:
    """The error for an upstream's failure: its status (Anthropic's 529 "overloaded" is a 503, the
    neutral status for it), its message and, for clients of its own format, its error type."""
    if status == 529:
        status = 503
    return UpstreamError(
        info.message,
        status=status,
        kind=kind_for_status(status),
        param=info.param,
        code=info.code,
        headers=headers,
        native=(format_type, info.type) if info.type else None,
    )


# Errors that do not reach a client as such: the configuration, the ledger, binding, parsing, the
# models catalog and the upstream transport.


class BindError(OSError):
    """The listening address could not be bound (in use, or not an address of this machine)."""


class BodyTooLargeError(httpx.TransportError):
    """An upstream body (or one of its stream events) is larger than proxycast accepts."""


class ConfigError(Exception):
    """An invalid configuration: names the source, the key and what is wrong."""


class LedgerUnavailableError(Exception):
    """The ledger cannot be read or written now (its message names it, without a password)."""


class LoopDetectedError(ProxycastError):
    status = 508


class ModelsEndpointError(Exception):
    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome: Outcome = outcome
        self.detail = detail


class NotAnObjectError(ValueError):
    pass


class RejectedJSONError(ValueError):
    """Valid to Python's parser, but not JSON a gateway can pass on: the message says why."""


class ResponseNotFoundError(ProxycastError):
    status = 404
    kind = "not_found"


class ShuttingDownError(ProxycastError):
    status = 503
