"""What every request passes before its route, and how it is refused: one set of rules for the
router's routes (``proxycast.http.serving``) and the few Quart serves (the dashboard, ``/metrics``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from proxycast.accounting.records import current_record
from proxycast.core.answer import Answer
from proxycast.core.rules import ROUTE_HEADER
from proxycast.core.scope import request_resources
from proxycast.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProxycastError,
    RequestTooLargeError,
)
from proxycast.http import loopguard

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from proxycast.accounting.clients import Client, Directory
    from proxycast.accounting.records import Accounting
    from proxycast.config import Config
    from proxycast.core.exchange import Exchange
    from proxycast.formats.contracts import Headers, InboundDialect

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_AUTHENTICATED = ("/ui/api/", "/metrics", "/admin/")
"""Quart's routes that take a client key (every route of the router takes one)."""


class Gate:
    """The checks before a route (control characters, loops, authentication, the body's memory) and
    the error answer, in the dialect of the route's clients."""

    __slots__ = ("_accounts", "_config", "_exchange", "_hop_mark")

    def __init__(
        self, config: Config, exchange: Exchange, accounts: Accounting, hop_mark: str | None
    ) -> None:
        self._config = config
        self._exchange = exchange
        self._accounts = accounts
        self._hop_mark = hop_mark

    def check(
        self,
        headers: Headers,
        pairs: Iterable[tuple[str, str]],
        path: str,
        url: Callable[[], str],
        credential: str | None,
        authenticate: bool = True,
    ) -> None:
        """Let the request through to its route, or raise the error it gets.

        Args:
            headers: the request's headers, looked up by name.
            pairs: every header, repeated ones included.
            path: its path.
            url: the URL the gateway was called at (named in a loop's error).
            credential: the client key it presents (where its dialect's clients put it).
            authenticate: whether the route takes a client key (every API route does).
        """
        for name, value in pairs:
            # h11 lets control characters other than NUL, CR and LF through in header values (RFC
            # 9110 5.5 allows only HTAB, SP, visible characters and obs-text): no business in them.
            if _CONTROL.search(value):
                raise InvalidRequestError(
                    f"The request header {name.lower()!r} holds a control character."
                )
        if self._hop_mark is not None:
            loopguard.arrive(headers.get(loopguard.HOP_HEADER), self._hop_mark, url())
        if authenticate:
            self._accounts.authenticated(identify(credential, self._accounts.directory))
        self._reserve_body(headers)

    def _reserve_body(self, headers: Headers) -> None:
        # What a request's body may take is reserved before it is read (a chunked one may be up to
        # max_body_bytes), and given back when the request ends, however it ends.
        server = self._config.server
        length = headers.get("content-length")
        size = int(length) if length is not None and length.isdigit() else None
        if size is None and headers.get("transfer-encoding") is not None:
            size = server.max_body_bytes
        if not size or size > server.max_body_bytes:
            return  # nothing to hold, or a 413 anyway
        exchange, limit = self._exchange, server.max_inflight_body_bytes
        if exchange.inflight_body_bytes + size > limit:
            raise ProxycastError(
                f"The gateway holds as many request bodies as it may ({limit} bytes, "
                "server.max_inflight_body_bytes); retry shortly.",
                status=503,
                headers={"retry-after": "1"},
            )
        request_resources().callback(exchange.reserve_body(size))

    @staticmethod
    def protects(path: str) -> bool:
        """Whether a route Quart serves at ``path`` takes a client key."""
        return path.startswith(_AUTHENTICATED)

    def error_response(self, error: ProxycastError, dialect: InboundDialect) -> Answer:
        """The error in ``dialect``'s shape."""
        error.message = self._exchange.redact(error.message)
        record = current_record()
        if record is not None:  # accounting: the ledger row's error type
            record.error_type = error.kind
        status, body = dialect.render_error(error)  # it may add headers (x-should-retry: false)
        headers = {name.lower(): value for name, value in error.headers.items()}
        if record is not None and record.route:  # a rule routed it: its errors say so too
            headers[ROUTE_HEADER] = record.route
        return Answer(body, status, headers)

    def too_slow(self) -> ProxycastError:
        seconds = self._config.server.upstream_timeout
        return ProxycastError(
            f"The request body did not arrive within {seconds:g} seconds "
            "(server.upstream_timeout).",
            status=408,
        )

    def too_large(self) -> RequestTooLargeError:
        return RequestTooLargeError(
            f"The request body is larger than this gateway's limit of "
            f"{self._config.server.max_body_bytes} bytes (server.max_body_bytes)."
        )


def internal_error() -> ProxycastError:
    """What a client is told of a failure of proxycast's own (its log has the traceback)."""
    return ProxycastError("Internal error in proxycast; see its log.")


def identify(presented: str | None, directory: Directory) -> Client:
    """The client whose key ``presented`` is (a request's, or each response of a Responses
    WebSocket: a key revoked or expired since the handshake is refused too).

    Raises:
        AuthenticationError: no key, an unknown one, or an expired one (which says so).
    """
    if not presented:
        raise AuthenticationError(
            "Missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY' "
            "with one of this gateway's client keys."
        )
    client = directory.find(presented)  # constant time: every key's digest is compared
    if client is None:
        expired = directory.expired(presented)
        if expired is not None:
            raise AuthenticationError(
                f"This API key (client {expired.name!r}) has expired; ask the gateway's operator "
                "for a new one (proxycast keys rotate)."
            )
        raise AuthenticationError(
            "Incorrect API key: it is not one of this gateway's client keys "
            "(server.api_keys, [[clients]])."
        )
    return client
