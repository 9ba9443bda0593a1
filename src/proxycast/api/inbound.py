"""The routes of every inbound dialect in the registry: read the body, let the dialect validate it,
hand it to the exchange."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from quart import Blueprint, Response, current_app, request

from proxycast import formats
from proxycast.api._common import parse_and_validate

if TYPE_CHECKING:
    from proxycast.exchange import Exchange
    from proxycast.formats.contracts import InboundDialect, Operation


def current_exchange() -> Exchange:
    exchange: Exchange = current_app.extensions["proxycast"]
    return exchange


async def _handle(dialect: InboundDialect, operation: Operation) -> Response:
    raw = await request.get_data(cache=False, as_text=False)
    assert isinstance(raw, bytes)  # as_text=False
    headers = request.headers
    inbound = await parse_and_validate(
        raw, lambda text, body, spans: dialect.read(text, body, spans, headers, operation)
    )
    exchange = current_exchange()
    if operation == "count_tokens":
        return await exchange.count_tokens(dialect, inbound)
    return await exchange.generate(dialect, inbound)


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
