"""The routes of every inbound dialect in the registry: read the body, let the dialect validate it,
hand it to the exchange."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from quart import Blueprint, Response, current_app, request

from proxycast import formats
from proxycast.http.body import parse_and_validate

if TYPE_CHECKING:
    from proxycast.core.exchange import Answer, Exchange
    from proxycast.formats.contracts import Headers, InboundDialect, InboundRequest, Operation


def current_exchange() -> Exchange:
    exchange: Exchange = current_app.extensions["proxycast"]
    return exchange


async def validated(
    dialect: InboundDialect, operation: Operation, raw: bytes, headers: Headers
) -> InboundRequest:
    """The request ``raw`` is, validated by its dialect (400 in the dialect when it is not valid)."""
    return await parse_and_validate(
        raw, lambda text, body, spans: dialect.read(text, body, spans, headers, operation)
    )


async def answer(
    exchange: Exchange, dialect: InboundDialect, operation: Operation, inbound: InboundRequest
) -> Answer:
    """The exchange's answer to a validated request."""
    if operation == "count_tokens":
        return await exchange.count_tokens(dialect, inbound)
    return await exchange.generate(dialect, inbound)


async def _handle(dialect: InboundDialect, operation: Operation) -> Response:
    # Reached only where proxycast.http.direct does not serve the route (an app mounted under a root
    # path): the same steps, with Quart's request.
    raw = await request.get_data(cache=False, as_text=False)
    assert isinstance(raw, bytes)  # as_text=False
    inbound = await validated(dialect, operation, raw, request.headers)
    return (await answer(current_exchange(), dialect, operation, inbound)).to_quart()


def blueprint() -> Blueprint:
    """A blueprint with the routes of every dialect of the registry."""
    routes = Blueprint("inbound", __name__)
    for dialect in formats.DIALECTS:
        for route in dialect.routes:
            routes.add_url_rule(
                route.path,
                endpoint=f"{dialect.name}_{route.operation}",
                view_func=partial(_handle, dialect, route.operation),
                methods=["POST"],
            )
    return routes
