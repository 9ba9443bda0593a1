"""The dashboard's JSON API (``/ui/api/…``, docs/dashboard.md): the numbers the pages show, for scripts
too. Every route takes a gateway key, like every other route (app.py authenticates ``/ui/api/``).

``[server].api_keys`` (the unnamed client) see everything. A named client sees its own usage and its
own live requests only; the providers and the configuration are refused to it (403, in the OpenAI
dialect's error shape, as every error on these routes).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint, Response, current_app, request

from proxycast.accounting.clients import UNNAMED
from proxycast.accounting.records import current_record
from proxycast.core.exchange import SSE_HEADERS
from proxycast.core.redact import without_userinfo
from proxycast.errors import (
    AuthenticationError,
    InvalidRequestError,
    LedgerUnavailableError,
    ProxycastError,
)
from proxycast.ledger import captures, report
from proxycast.ledger.store import GROUPS, SERIES_GROUPS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from proxycast.accounting.clients import Client
    from proxycast.accounting.records import Accounting
    from proxycast.core.exchange import Exchange
    from proxycast.ledger.store import Store
    from proxycast.upstream.keys import Left

blueprint = Blueprint("ui_api", __name__, url_prefix="/ui/api")

RANGES = {
    "1h": (3600, 60),
    "24h": (86400, 3600),
    "7d": (7 * 86400, 6 * 3600),
    "30d": (30 * 86400, 86400),
}
"""Overview range -> (seconds, seconds per bucket)."""
HEARTBEAT = 15.0
"""Seconds between keep-alive comments on a quiet live stream."""
CACHE_SECONDS = 5.0
"""How long an overview or usage answer is reused while this worker records no request."""
CACHE_ENTRIES = 64
"""The most answers kept (the oldest go first)."""
_NUMBERS = ("requests", "errors", "input_tokens", "output_tokens", "cost_usd")
_EXPORTED = (*_NUMBERS, "estimated")
"""The usage report's columns (``estimated``: requests whose usage proxycast estimated)."""
MAX_GROUPS = 10
"""The most groups an overview stacks: past it, the top ``MAX_GROUPS - 1`` and :data:`OTHER`."""
OTHER = "other"
"""The group the overview's smaller groups are summed into."""
BENCHED = frozenset({"key refused", "unreachable"})
"""Why a key sits out when it is benched rather than cooling (the key refused, the provider down)."""


def _who() -> Client:
    record = current_record()
    if record is None:  # every request has a record (app.py); never serve data without one
        raise AuthenticationError("No client for this request.")
    return record.client


def _admin_only() -> None:
    if _who().config is not None:
        raise ProxycastError(
            "This key belongs to a named client: it may see its own usage, not the gateway's "
            "providers or configuration (those need one of [server].api_keys).",
            status=403,
        )


def _own_rows() -> str | None:
    """The client whose rows the caller may see; None: all of them."""
    client = _who()
    if client.config is None:
        return None
    if client.name == UNNAMED:
        # The ledger knows clients by name, and this one's rows cannot be told from the unnamed
        # keys' (the configuration check refuses the name; a Config built in code may not be checked).
        raise ProxycastError(
            f"The client name {UNNAMED!r} is reserved for [server].api_keys: rename this client.",
            status=403,
        )
    return client.name


def _json(body: Any) -> Response:
    exchange: Exchange = current_app.extensions["proxycast"]
    # defence in depth: nothing here holds a secret, and the redactor makes sure of it
    text = exchange.redact(json.dumps(body))
    return Response(text, content_type="application/json")


async def _ledger() -> Store | None:
    """The ledger, once this worker's buffered rows are written (None: the ledger is off)."""
    accounts: Accounting = current_app.extensions["proxycast_accounting"]
    if accounts.ledger is None:
        return None
    await accounts.ledger.flush()  # the page shows the requests just made, not a second later
    return accounts.ledger.store


def _ledger_on() -> bool:
    accounts: Accounting = current_app.extensions["proxycast_accounting"]
    return accounts.ledger is not None


async def _read(read: Callable[[Store], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``read(store)`` in a thread (no rows when the ledger is off); a 503 when it is unreachable."""
    store = await _ledger()
    if store is None:
        return []
    try:
        return await trio.to_thread.run_sync(read, store, limiter=store.limiter)
    except LedgerUnavailableError as exc:
        raise ProxycastError(f"The usage ledger cannot be read now: {exc}", status=503) from None


async def _cached(
    key: tuple[Any, ...], read: Callable[[Store], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """``_read(read)``, or the rows read for the same ``key`` less than :data:`CACHE_SECONDS` ago
    while this worker recorded no request.

    Every open overview polls, and each read flushes the ledger's buffer and queries the store, which
    competes with the ledger's writer; the same question asked again within seconds gets the same
    rows. A request this worker finishes changes the ledger writer's count of rows recorded, which is
    part of the entry: the next read flushes and queries again, so a request just made is always
    shown (other workers' are, within their flush interval anyway).
    """
    accounts: Accounting = current_app.extensions["proxycast_accounting"]
    if accounts.ledger is None:
        return []
    answers: dict[tuple[Any, ...], tuple[float, int, list[dict[str, Any]]]]
    answers = current_app.extensions.setdefault("proxycast.ui_answers", {})
    now = time.monotonic()
    recorded = accounts.ledger.recorded  # before the read: a row recorded during it means stale
    hit = answers.get(key)
    if hit is not None and hit[0] > now and hit[1] == recorded:
        return hit[2]
    rows = await _read(read)
    for old in [k for k, (until, _, _) in answers.items() if until <= now]:
        del answers[old]
    while len(answers) >= CACHE_ENTRIES:  # many distinct questions at once (since=1m, 2m, ...)
        del answers[next(iter(answers))]
    answers[key] = (now + CACHE_SECONDS, recorded, rows)
    return rows


@blueprint.after_request
async def no_store(response: Response) -> Response:
    response.headers["cache-control"] = "no-store"
    return response


@blueprint.get("/me")
async def me() -> Response:
    """Who the key is: the client's name and whether it sees everything."""
    client = _who()
    return _json({"client": client.name, "admin": client.config is None})


@blueprint.get("/overview")
async def overview() -> Response:
    """Requests, errors, tokens and cost per time bucket, stacked by client, model or provider."""
    span = request.args.get("range", "24h")
    by = request.args.get("by", "model")
    if span not in RANGES:
        raise InvalidRequestError(f"range: expected one of {', '.join(RANGES)}", param="range")
    if by not in SERIES_GROUPS:
        raise InvalidRequestError(f"by: expected one of {', '.join(SERIES_GROUPS)}", param="by")
    seconds, bucket = RANGES[span]
    count = seconds // bucket
    now = time.time()
    # aligned buckets (UTC), the last one the current, partial one
    start = (math.floor(now / bucket) - count + 1) * bucket
    client = _own_rows()
    points = await _cached(
        ("overview", start, bucket, by, client),
        lambda store: store.series(start, bucket, by, client),
    )
    totals = {
        name: sum(p[name] for p in points)
        for name in ("requests", "errors", "input_tokens", "output_tokens")
    }
    totals["cost_usd"] = round(sum(p["cost_usd"] for p in points), 6)
    points = _top_groups(points)
    groups = sorted({p["group"] for p in points}, key=lambda g: (g == OTHER, g == "", g))
    return _json(
        {
            "range": span,
            "by": by,
            "start": start,
            "bucket_seconds": bucket,
            "buckets": count,
            "ledger": _ledger_on(),
            "groups": groups,
            "totals": totals,
            "points": points,
        }
    )


def _top_groups(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``points`` with at most :data:`MAX_GROUPS` groups: past that, the ``MAX_GROUPS - 1`` with the
    most requests over the range, and the rest summed, bucket by bucket, into :data:`OTHER`.

    A client may ask for any model name (an unknown one is recorded too), so without this a client could
    grow the chart's legend, and its payload, at will.
    """
    requests: dict[str, int] = {}
    for point in points:
        requests[point["group"]] = requests.get(point["group"], 0) + point["requests"]
    if len(requests) <= MAX_GROUPS:
        return points
    # a group that is really named "other" joins the rest: one name, one meaning
    ranked = sorted((g for g in requests if g != OTHER), key=lambda g: (-requests[g], g))
    kept = set(ranked[: MAX_GROUPS - 1])
    out = [p for p in points if p["group"] in kept]
    merged: dict[int, dict[str, Any]] = {}
    for point in points:
        if point["group"] in kept:
            continue
        into = merged.setdefault(
            point["bucket"],
            {"bucket": point["bucket"], "group": OTHER, **dict.fromkeys(_NUMBERS, 0)},
        )
        for name in _NUMBERS:
            into[name] += point[name]
    for point in merged.values():
        point["cost_usd"] = round(point["cost_usd"], 6)
    out += merged.values()
    out.sort(key=lambda p: (p["bucket"], p["group"]))
    return out


@blueprint.get("/usage")
async def usage_report() -> Response:
    """``proxycast usage --json``'s rows (the caller's own, for a named client), as JSON or CSV."""
    by = request.args.get("by", "client")
    since_text = request.args.get("since", "24h")
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequestError("format: expected json or csv", param="format")
    try:
        since = report.parse_since(since_text)
    except ValueError as exc:
        raise InvalidRequestError(str(exc).replace("--since", "since"), param="since") from None
    if by not in GROUPS:
        raise InvalidRequestError(f"by: expected one of {', '.join(GROUPS)}", param="by")
    client = _own_rows()
    rows = await _cached(
        ("usage", since_text, by, client), lambda store: store.report(since, by, client)
    )
    if fmt == "json":
        return _json(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([by, *_EXPORTED])
    for row in rows:
        key = _cell(row[by]) if by in ("model", "session") else row[by]
        writer.writerow([key, *(row.get(c, 0) for c in _EXPORTED)])
    exchange: Exchange = current_app.extensions["proxycast"]
    name = f"proxycast-usage-by-{by}.csv"
    return Response(
        exchange.redact(out.getvalue()),
        content_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """A model name a spreadsheet will not run as a formula (OWASP's CSV injection advice).

    Only the model and session columns are escaped: a client chooses the model it asks for (an unknown
    one too, and it is recorded) and names its session, while client names, providers and days come
    from the configuration and the clock, and stay exactly ``proxycast usage --json``'s (the unnamed
    client's ``-`` above all).
    """
    return "'" + text if text != "-" and text.startswith(_FORMULA) else text


@blueprint.get("/requests")
async def requests_list() -> Response:
    """The captured requests (``[capture]``) since ``since``, newest first (the caller's own, for a
    named client): ``proxycast requests list --json``'s rows."""
    since_text = request.args.get("since", "24h")
    try:
        since = report.parse_since(since_text)
    except ValueError as exc:
        raise InvalidRequestError(str(exc).replace("--since", "since"), param="since") from None
    client = _own_rows()
    rows = await _read(lambda store: store.captures(since, client, REQUESTS_LISTED))
    accounts: Accounting = current_app.extensions["proxycast_accounting"]
    return _json({"capture": accounts.capture is not None, "requests": rows})


REQUESTS_LISTED = 200
"""The most captured requests the Requests page lists."""


@blueprint.get("/requests/<path:request_id>")  # an id may hold "/" (base64)
async def requests_show(request_id: str) -> Response:
    """One captured request whole (``proxycast requests show ID --json``); 404 when there is none
    (or it is another client's)."""
    client = _own_rows()
    found = await _read(lambda store: [row] if (row := store.captured(request_id, client)) else [])
    if not found:
        raise ProxycastError(
            f"No captured request {request_id!r}: captures are kept for [capture] retention_days, "
            "and only when [capture] enabled = true.",
            status=404,
        )
    return _json(captures.details(found[0]))


@blueprint.get("/providers")
async def providers() -> Response:
    """Each provider key (``provider#N``): its state (this worker's view), the last failure this
    worker saw, its attempts and successes (every worker's, from the metrics), and what the
    upstream's rate-limit headers last said is left of it (this worker's view)."""
    _admin_only()
    exchange: Exchange = current_app.extensions["proxycast"]
    accounts: Accounting = current_app.extensions["proxycast_accounting"]
    counts = _attempt_counts(accounts)
    now = time.time()
    out = []
    for name, provider in exchange.providers.items():
        keys = []
        clock = provider.pool.clock()
        quotas = {label: (r, t) for label, r, t in provider.pool.quotas()}
        for label, seconds, reason in provider.pool.status():
            benched = reason.partition(" (")[0] in BENCHED  # "unreachable (connection refused)"
            state = "healthy" if seconds <= 0 else "benched" if benched else "cooling"
            attempts, successes = counts.get(label, (0, 0))
            failure = accounts.feed.last_failures.get(label)
            keys.append(
                {
                    "key": label,
                    "state": state,
                    "until": None if seconds <= 0 else now + seconds,
                    "seconds": round(seconds, 3),
                    "reason": reason if seconds > 0 else "",
                    "last_error": None if failure is None else failure.outcome,
                    "last_error_at": None if failure is None else failure.at,
                    "attempts": attempts,
                    "successes": successes,
                    "success_rate": None if not attempts else round(successes / attempts, 4),
                    "remaining": {
                        kind: _left(left, clock, now)
                        for kind, left in zip(("requests", "tokens"), quotas[label], strict=True)
                    },
                }
            )
        out.append({"provider": name, "type": provider.config.type, "keys": keys})
    return _json({"providers": out, "worker": os.getpid()})


def _left(left: Left | None, clock: float, now: float) -> dict[str, Any] | None:
    """One limit of a key: the count left now, the limit, when it resets (Unix time; None once
    reset or when not said); None when the upstream never said."""
    if left is None:
        return None
    pending = left.reset is not None and left.reset > clock
    return {
        "remaining": left.at(clock),
        "limit": left.limit,
        "reset_at": now + (left.reset - clock) if pending and left.reset is not None else None,
    }


def _attempt_counts(accounts: Accounting) -> dict[str, tuple[int, int]]:
    """``provider#N`` -> (attempts, successful attempts), from ``proxycast_upstream_attempts``."""
    counts: dict[str, tuple[int, int]] = {}
    for metric in accounts.metrics.collect():
        if metric.name != "proxycast_upstream_attempts":
            continue
        for sample in metric.samples:
            outcome = sample.labels.get("outcome", "")
            if not sample.name.endswith("_total") or outcome == "pending":
                continue
            attempts, successes = counts.get(sample.labels["key"], (0, 0))
            value = int(sample.value)
            counts[sample.labels["key"]] = (
                attempts + value,
                successes + (value if outcome.startswith("2") else 0),
            )
    return counts


@blueprint.get("/config")
async def configuration() -> Response:
    """The routing table, fallbacks, routing settings, clients and their limits; keys as labels."""
    _admin_only()
    exchange: Exchange = current_app.extensions["proxycast"]
    config = exchange.config
    server = config.server
    return _json(
        {
            "source": config.source,
            "server": {
                "host": server.host,
                "port": server.port,
                "workers": server.workers,
                "access_log": server.access_log,
                "cors_origins": list(server.cors_origins),
                "api_keys": len(server.api_keys),
            },
            "providers": [
                {
                    "name": p.name,
                    "type": p.type,
                    "base_url": without_userinfo(p.url),
                    "models": list(p.models),
                    "keys": [f"{p.name}#{i + 1}" for i in range(len(p.api_keys))],
                    "responses": p.responses,
                }
                for p in config.providers
            ],
            "aliases": dict(config.aliases),
            "fallbacks": {k: list(v) for k, v in config.fallbacks.items()},
            "routing": {
                "retries": config.routing.retries,
                "retry_on": list(config.routing.retry_on),
                "cooldown": config.routing.cooldown,
                "max_cooldown": config.routing.max_cooldown,
                "hedge_after": config.routing.hedge_after,
            },
            "clients": [
                {
                    "name": c.name,
                    "models": list(c.models),
                    "rpm": c.rpm,
                    "tpm": c.tpm,
                    "max_usd_per_day": c.max_usd_per_day,
                    "max_usd_per_month": c.max_usd_per_month,
                }
                for c in config.clients
            ],
            "prices": {
                pattern: {
                    "input": p.input,
                    "output": p.output,
                    "cache_read": p.cache_read,
                    "cache_write": p.cache_write,
                }
                for pattern, p in config.prices.items()
            },
            "ledger": {
                "url": without_userinfo(config.ledger.url),
                "retention_days": config.ledger.retention_days,
            },
        }
    )


@blueprint.get("/keys")
async def runtime_keys() -> Response:
    """The client keys made at run time (``proxycast keys``): settings, created, expires; never a
    key or its digest."""
    _admin_only()
    from proxycast.accounting import keystore

    accounts: Accounting = current_app.extensions["proxycast_accounting"]
    try:
        stored = await accounts.keys.list()
    except keystore.KeyProblemError as problem:
        raise ProxycastError(problem.message, status=problem.status) from None
    return _json({"keys": [keystore.public(k) for k in stored]})


@blueprint.delete("/keys/<name>")
async def revoke_runtime_key(name: str) -> Response:
    """Revoke a runtime key (in effect on every worker and instance within a second)."""
    _admin_only()
    from proxycast.accounting import keystore

    accounts: Accounting = current_app.extensions["proxycast_accounting"]
    try:
        await accounts.keys.call(keystore.revoke, accounts.keys.store, name)
    except keystore.KeyProblemError as problem:
        raise ProxycastError(problem.message, status=problem.status) from None
    return _json({"name": name, "revoked": True})


@blueprint.get("/live")
async def live() -> Response:
    """The live feed (SSE): an ``event: request`` per finished gateway request of this worker (a
    named client's own only)."""
    client = _who()
    accounts: Accounting = current_app.extensions["proxycast_accounting"]

    async def frames() -> AsyncIterator[bytes]:
        # the feed filters as it publishes: a client, not a name (no name can pass for another's)
        with accounts.feed.watch(None if client.config is None else client) as watcher:
            hello = json.dumps({"worker": os.getpid()})
            yield f"event: hello\ndata: {hello}\n\n".encode()
            told = 0
            while True:
                item: str | None = None
                with trio.move_on_after(HEARTBEAT):
                    try:
                        item = await watcher.receive.receive()
                    except trio.EndOfChannel:  # the server is shutting down
                        return
                if watcher.dropped > told:
                    told = watcher.dropped
                    yield f'event: dropped\ndata: {{"dropped": {told}}}\n\n'.encode()
                if item is None:
                    yield b": keep-alive\n\n"
                else:
                    yield f"event: request\ndata: {item}\n\n".encode()

    response = Response(frames(), content_type="text/event-stream", headers=SSE_HEADERS)
    response.timeout = None  # the stream lasts as long as the page watches
    return response
