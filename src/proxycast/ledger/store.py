"""What the writer and ``proxycast usage`` need of a ledger engine (:class:`Store`), whichever it
is: SQLite (:mod:`proxycast.ledger.sqlite`) or Postgres (:mod:`proxycast.ledger.postgres`).

A store's methods block (they do I/O): the writer calls them in a worker thread, at most
``store.limiter``'s number at once; ``proxycast usage`` calls ``report`` directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import trio

    from proxycast.ledger.rows import CaptureRow, Row

GROUPS = ("client", "model", "provider", "day", "session", "route")
"""What ``proxycast usage --by`` groups by (``day``: the UTC date)."""
SERIES_GROUPS = ("client", "model", "provider")
"""What a series may be stacked by."""


class Store(Protocol):
    """A ledger engine."""

    limiter: trio.CapacityLimiter
    """How many threads may use the store at once (its connections)."""

    def insert(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` in one transaction (all or none)."""

    def prune(self, before: float) -> int:
        """Delete the rows older than ``before``; how many went."""

    def report(self, since: float, by: str, client: str | None = None) -> list[dict[str, Any]]:
        """``proxycast usage``'s rows (see :func:`report_rows`), of one client's requests or all;
        empty when there is no ledger."""

    def series(
        self, since: float, bucket: float, by: str, client: str | None = None
    ) -> list[dict[str, Any]]:
        """Usage over time (the dashboard's charts): see :func:`series_rows`."""

    def insert_captures(self, rows: Sequence[CaptureRow]) -> None:
        """Append captured requests in one transaction."""

    def prune_captures(self, before: float) -> int:
        """Delete the captures older than ``before``; how many went."""

    def captures(
        self, since: float, client: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The captures since ``since`` (of one client's requests or all), newest first, without
        their bodies; empty when there is none."""

    def captured(self, request_id: str, client: str | None = None) -> dict[str, Any] | None:
        """The latest capture of the request ``request_id`` (of that client only, if given)."""

    def close(self) -> None: ...


def report_rows(groups: Iterable[Sequence[Any]], by: str) -> list[dict[str, Any]]:
    """The report's rows from an engine's aggregate ``(key, requests, errors, input tokens, output
    tokens, cost, estimated)`` per group (``estimated``: requests whose usage is proxycast's
    estimate, the upstream having reported none): largest cost first, then by key (by day: in date order).

    The order is set here rather than in SQL so that every engine gives the same one: Postgres sorts
    text by the database's collation, SQLite by code point, and a float sum's last bits depend on
    the order the engine added the rows in (so ties are broken on the rounded cost, as printed).
    """
    out = [
        {
            by: key,
            "requests": int(requests),
            "errors": int(errors or 0),
            "input_tokens": int(input_tokens or 0),
            "output_tokens": int(output_tokens or 0),
            "cost_usd": round(float(cost_usd or 0.0), 6),
            "estimated": int(estimated or 0),
        }
        for key, requests, errors, input_tokens, output_tokens, cost_usd, estimated in groups
    ]
    if by == "day":
        out.sort(key=lambda row: row[by])
    else:
        out.sort(key=lambda row: (-row["cost_usd"], row[by]))
    return out


def series_rows(slots: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """A series from an engine's aggregate ``(slot, group, requests, errors, input tokens, output
    tokens, cost)``, where slot ``i`` covers ``[since + i * bucket, since + (i + 1) * bucket)``; in
    slot, then group order."""
    out = [
        {
            "bucket": int(slot),
            "group": group,
            "requests": int(requests),
            "errors": int(errors or 0),
            "input_tokens": int(input_tokens or 0),
            "output_tokens": int(output_tokens or 0),
            "cost_usd": round(float(cost or 0.0), 6),
        }
        for slot, group, requests, errors, input_tokens, output_tokens, cost in slots
    ]
    out.sort(key=lambda row: (row["bucket"], row["group"]))
    return out
