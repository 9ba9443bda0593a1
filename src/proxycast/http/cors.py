"""CORS for browser apps: ``[server] cors_origins`` lists the origins whose pages may call the gateway.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from a listed origin is
answered 204 without a key: browsers never send credentials with a preflight (Fetch standard, "CORS
protocol"). Answers to a listed origin carry ``Access-Control-Allow-Origin`` and expose the headers
clients read (``retry-after``, ``x-should-retry``, ...). Other origins get nothing extra, and their
preflights are treated as any other request (401 without a key). ``"*"`` lists every origin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from quart import Response, request

if TYPE_CHECKING:
    from quart_trio import QuartTrio

PREFLIGHT_MAX_AGE = "600"
ALLOWED_METHODS = "GET, POST, HEAD, OPTIONS"
EXPOSED_HEADERS = (
    "retry-after, retry-after-ms, x-should-retry, x-proxycast-token-count, request-id, x-request-id"
)


def _allowed(origin: str | None, origins: tuple[str, ...]) -> str | None:
    if origin is None:
        return None
    return origin if ("*" in origins or origin in origins) else None


class _Headers(Protocol):
    """An answer's headers: werkzeug's, or an :class:`~proxycast.core.exchange.Answer`'s dict."""

    def get(self, key: str, /) -> str | None: ...

    def __setitem__(self, key: str, value: str, /) -> None: ...


def mark(headers: _Headers, origin: str | None, origins: tuple[str, ...]) -> None:
    """Add the CORS headers of an answer to a request from ``origin`` (None: it sent no ``Origin``)
    to its ``headers``; nothing when ``origins`` is empty."""
    if not origins:
        return
    allowed = _allowed(origin, origins)
    if allowed is not None:
        headers["access-control-allow-origin"] = allowed
        headers["access-control-expose-headers"] = EXPOSED_HEADERS
    vary = headers.get("vary")
    if not vary:
        headers["vary"] = "origin"
    elif "origin" not in (v.strip().lower() for v in vary.split(",")):
        headers["vary"] = f"{vary}, origin"


def install(app: QuartTrio, origins: tuple[str, ...]) -> None:
    """Answer preflights and add the CORS headers for ``origins`` (nothing when it is empty).

    Call before the app's other ``before_request`` functions: a preflight is answered before
    authentication.
    """
    if not origins:
        return

    @app.before_request
    async def preflight() -> Response | None:
        if request.method != "OPTIONS" or "access-control-request-method" not in request.headers:
            return None
        origin = _allowed(request.headers.get("origin"), origins)
        if origin is None:
            return None
        response = Response("", status=204)
        response.headers["access-control-allow-methods"] = ALLOWED_METHODS
        asked = request.headers.get("access-control-request-headers")
        if asked:
            response.headers["access-control-allow-headers"] = asked
        response.headers["access-control-max-age"] = PREFLIGHT_MAX_AGE
        return response

    @app.after_request
    async def allow_origin(response: Response) -> Response:
        mark(response.headers, request.headers.get("origin"), origins)
        return response
