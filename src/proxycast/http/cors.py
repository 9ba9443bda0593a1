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

from proxycast.core.answer import Answer

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from proxycast.formats.contracts import Headers

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


def preflight(method: str, headers: Headers, origins: tuple[str, ...]) -> Answer | None:
    """The answer to a preflight from an allowed origin (before authentication: browsers send no
    key with one); None for any other request."""
    if not origins or method != "OPTIONS":
        return None
    asked_method = headers.get("access-control-request-method")
    if asked_method is None or _allowed(headers.get("origin"), origins) is None:
        return None
    answer = Answer(b"", 204)
    del answer.headers["content-type"]
    answer.headers["access-control-allow-methods"] = ALLOWED_METHODS
    asked = headers.get("access-control-request-headers")
    if asked:
        answer.headers["access-control-allow-headers"] = asked
    answer.headers["access-control-max-age"] = PREFLIGHT_MAX_AGE
    return answer


def install(app: QuartTrio, origins: tuple[str, ...]) -> None:
    """Answer preflights and add the CORS headers for ``origins`` (nothing when it is empty).

    Call before the app's other ``before_request`` functions: a preflight is answered before
    authentication.
    """
    if not origins:
        return

    @app.before_request
    async def answer_preflight() -> Response | None:
        answer = preflight(request.method, request.headers, origins)
        if answer is None:
            return None
        return Response(answer.body, status=answer.status, headers=answer.headers)

    @app.after_request
    async def allow_origin(response: Response) -> Response:
        mark(response.headers, request.headers.get("origin"), origins)
        return response
