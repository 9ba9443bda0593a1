"""The router: every API route of every inbound dialect, HTTP and WebSocket, in one table.

A route is a method and a path pattern whose ``{name}`` segments are parameters (``{name:path}``
takes the rest of the path, slashes included: a model called ``provider/model``). The table is built
once from the registry (each dialect declares its routes, ``InboundDialect.routes``) and the
handlers of the operations they name. Matching tries the static paths first (one dictionary look-up:
the model routes every agent loop calls), then the patterns in order. A path that matches with another
method gives the methods it has, so the answer is a 405 naming them rather than a 404.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from proxycast.core.answer import Answer
    from proxycast.formats.contracts import InboundDialect, InboundRoute
    from proxycast.http.call import Call

    Handler = Callable[[Call], Awaitable[Answer]]

WEBSOCKET = "WEBSOCKET"
"""The method of a WebSocket route (an upgraded ``GET``)."""

_PARAMETER = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:path)?}")


def compile_path(pattern: str) -> re.Pattern[str] | None:
    """The regular expression of a path pattern; None for a path without parameters."""
    if "{" not in pattern:
        return None
    expression, end = "^", 0
    for match in _PARAMETER.finditer(pattern):
        expression += re.escape(pattern[end : match.start()])
        segment = ".+" if match.group(2) else "[^/]+"
        expression += f"(?P<{match.group(1)}>{segment})"
        end = match.end()
    return re.compile(expression + re.escape(pattern[end:]) + "$")


class Route:
    """One route: what it answers (method and path), who answers (the handler) and whose errors
    they are (the dialect renders them)."""

    __slots__ = ("declared", "dialect", "handler", "method", "path", "regex")

    def __init__(
        self,
        *,
        method: str,
        path: str,
        handler: Handler,
        dialect: InboundDialect,
        declared: InboundRoute,
    ) -> None:
        self.method = method
        self.path = path
        self.handler = handler
        self.dialect = dialect
        self.declared = declared
        """The route as its dialect declared it (its operation, where its stream flag comes from)."""
        self.regex = compile_path(path)

    def __repr__(self) -> str:
        return f"<Route {self.method} {self.path}>"


@attrs.frozen
class Mismatch:
    """No route for this method at this path: ``allowed`` lists the methods the path has (empty: no
    route at all, a 404)."""

    allowed: tuple[str, ...]


class Router:
    """The table of routes, and the paths it owns (every other is the application's: ``/ui``,
    ``/health``, ``/metrics``)."""

    __slots__ = ("_patterns", "_prefixes", "_static")

    def __init__(self, routes: Iterable[Route]) -> None:
        self._static: dict[str, dict[str, Route]] = {}
        self._patterns: list[Route] = []
        prefixes: set[str] = set()
        for route in routes:
            if route.regex is None:
                self._static.setdefault(route.path, {})[route.method] = route
            else:
                self._patterns.append(route)
            prefixes.add("/" + route.path.split("/")[1])
        self._prefixes = tuple(sorted(prefixes))

    @classmethod
    def from_registry(
        cls, dialects: Iterable[InboundDialect], handlers: Mapping[str, Handler]
    ) -> Router:
        """The routes every dialect declares, each answered by the handler of its operation."""
        return cls(
            Route(
                method=declared.method,
                path=declared.path,
                handler=handlers[declared.operation],
                dialect=dialect,
                declared=declared,
            )
            for dialect in dialects
            for declared in dialect.routes
        )

    def owns(self, path: str) -> bool:
        """Whether ``path`` is the router's to answer (a 404 from it when no route matches): it is
        under the first segment of one of its routes (``/v1``, ``/v1beta``)."""
        for prefix in self._prefixes:
            if path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/"):
                return True
        return False

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | Mismatch:
        """The route for ``method`` at ``path`` and its parameters, or what the path allows."""
        static = self._static.get(path)
        if static is not None:
            route = static.get(method) or (static.get("GET") if method == "HEAD" else None)
            if route is not None:
                return route, {}
        allowed: list[str] = list(static or ())
        for route in self._patterns:
            found = route.regex.match(path) if route.regex is not None else None
            if found is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, found.groupdict()
            allowed.append(route.method)
        return Mismatch(tuple(dict.fromkeys(allowed)))

    def routes(self) -> list[Route]:
        """Every route, static ones first."""
        return [r for methods in self._static.values() for r in methods.values()] + list(
            self._patterns
        )
