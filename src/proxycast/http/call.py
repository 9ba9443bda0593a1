"""One request to a route, as its handler sees it."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from hypercorn.typing import (
        ASGIReceiveCallable,
        ASGISendCallable,
        HTTPScope,
        WebsocketScope,
    )

    from proxycast.http.router import Route


class Call:
    """A request matched to a route: its headers (names in lower case, the first of a repeated
    one), the path's parameters, the query's, its body (empty for a method without one) and the
    client key it presented (authentication has checked it)."""

    __slots__ = (
        "body",
        "credential",
        "headers",
        "params",
        "query",
        "receive",
        "route",
        "scope",
        "send",
    )

    def __init__(
        self,
        scope: HTTPScope | WebsocketScope,
        route: Route,
        params: dict[str, str],
        headers: dict[str, str],
        query: dict[str, str],
        credential: str | None,
    ) -> None:
        self.scope = scope
        self.route = route
        self.params = params
        self.headers = headers
        self.query = query
        self.credential = credential
        self.body = b""
        self.receive: ASGIReceiveCallable | None = None
        """A WebSocket route's connection (None for HTTP): its handler accepts and serves it."""
        self.send: ASGISendCallable | None = None

    @property
    def path(self) -> str:
        """The path within the app, as routed."""
        return app_path(self.scope)


def app_path(scope: HTTPScope | WebsocketScope) -> str:
    """A request's path within the app (without the root path it is mounted at)."""
    path = scope["path"]
    root = scope.get("root_path")
    if root and path.startswith(root):
        return path[len(root) :]
    return path


def parse_query(raw: bytes) -> dict[str, str]:
    """A query string's parameters (the first of a repeated one)."""
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        query.setdefault(name, value)
    return query
