"""``GET /health`` (no key: for load balancers and probes), ``GET /metrics`` (a gateway key, like
every other route; Prometheus text summed over the workers) and ``/admin/keys`` (the client keys
made at run time: ``[server].api_keys`` only)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from quart import Blueprint, Response, current_app, request

from proxycast.accounting import keystore
from proxycast.accounting.keystore import KeyProblemError
from proxycast.accounting.metrics import CONTENT_TYPE
from proxycast.accounting.records import current_record
from proxycast.errors import InvalidRequestError, ProxycastError
from proxycast.http.quart import json_response

if TYPE_CHECKING:
    from proxycast.accounting.keystore import RuntimeKeys
    from proxycast.accounting.records import Accounting

blueprint = Blueprint("admin", __name__)


@blueprint.get("/health")
async def health() -> Response:
    """``ok``, or ``degraded`` with the reason while the overload manager sheds requests (still a
    200: the worker is alive and serves what it admits; a probe that restarts it would lose every
    request in flight)."""
    overload = current_app.extensions.get("proxycast.overload")
    if overload is not None and overload.state:
        return json_response({"status": "degraded", "reason": overload.reason})
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


# --- client keys made at run time (docs/limits-and-usage.md) -------------------------------------


def _keys() -> RuntimeKeys:
    """The worker's runtime keys, for one of ``[server].api_keys`` only (403 to a named client)."""
    record = current_record()
    if record is None or record.client.config is not None:
        raise ProxycastError(
            "Managing client keys needs one of the gateway's [server].api_keys; this key belongs "
            "to a named client.",
            status=403,
        )
    accounts: Accounting = current_app.extensions["proxycast_accounting"]
    return accounts.keys


def _refused(problem: KeyProblemError) -> ProxycastError:
    if problem.status == 400:
        return InvalidRequestError(problem.message)
    return ProxycastError(problem.message, status=problem.status)


@blueprint.post("/admin/keys")
async def create_key() -> Response:
    """``{"name": ..., "models": [...], "rpm": N, ...}`` -> 201 ``{"name": ..., "key": ...}`` (the
    only time the key is shown)."""
    keys = _keys()
    accounts: Accounting = current_app.extensions["proxycast_accounting"]
    body = await request.get_data()
    try:
        fields = json.loads(body or b"null")
    except (ValueError, RecursionError):  # bytes that are no UTF-8; arrays in arrays in ...
        raise InvalidRequestError("The request body is not valid JSON.") from None
    if not isinstance(fields, dict):
        raise InvalidRequestError(
            'The request body must be a JSON object: {"name": "...", "models": [...], "rpm": N, ...}.'
        )
    try:
        wanted = keystore.spec(fields, accounts.config.clients, time.time())
        made, secret = await keys.call(keystore.create, keys.store, wanted)
    except KeyProblemError as problem:
        raise _refused(problem) from None
    return json_response({**keystore.public(made), "key": secret}, status=201)


@blueprint.get("/admin/keys")
async def list_keys() -> Response:
    keys = _keys()
    try:
        stored = await keys.list()
    except KeyProblemError as problem:
        raise _refused(problem) from None
    return json_response({"keys": [keystore.public(k) for k in stored]})


@blueprint.delete("/admin/keys/<name>")
async def revoke_key(name: str) -> Response:
    keys = _keys()
    try:
        await keys.call(keystore.revoke, keys.store, name)
    except KeyProblemError as problem:
        raise _refused(problem) from None
    return json_response({"name": name, "revoked": True})


@blueprint.post("/admin/keys/<name>/rotate")
async def rotate_key(name: str) -> Response:
    """A new key for ``name`` (its settings kept); the old one stops working."""
    keys = _keys()
    try:
        made, secret = await keys.call(keystore.rotate, keys.store, name)
    except KeyProblemError as problem:
        raise _refused(problem) from None
    return json_response({**keystore.public(made), "key": secret})
