"""``GET /health`` (no key: for load balancers and probes) and ``GET /metrics`` (a gateway key, like
every other route; Prometheus text summed over the workers)."""

from __future__ import annotations

from quart import Blueprint, Response, current_app

from proxycast.accounting.metrics import CONTENT_TYPE
from proxycast.errors import ProxycastError
from proxycast.http.quart import json_response

blueprint = Blueprint("admin", __name__)


@blueprint.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@blueprint.get("/metrics")
async def metrics() -> Response:
    accounts = current_app.extensions["proxycast_accounting"]
    if not accounts.config.server.metrics:
        raise ProxycastError(
            "Metrics are off in this gateway's configuration ([server] metrics = false).",
            status=404,
        )
    exchange = current_app.extensions["proxycast"]
    gauge = accounts.metrics.key_available
    for name, provider in exchange.providers.items():
        for label, seconds, _ in provider.pool.status():
            gauge.labels(name, label).set(0 if seconds > 0 else 1)
    return Response(accounts.metrics.exposition(), content_type=CONTENT_TYPE)
