"""What the dashboard reads of the ledger: usage over time (the overview's charts) and the usage
report (the CSV export, the rows of ``proxycast usage --json``).

Everything that knows the ledger is SQLite is in this module's two functions, so that another ledger
store swaps them. They block (a read of the file): call them in a thread.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from proxycast.ledger import report
from proxycast.ledger import sqlite as ledger_sqlite

if TYPE_CHECKING:
    from pathlib import Path

GROUPS = ("client", "model", "provider")
"""What the overview's series may be stacked by."""


def series(
    path: Path, since: float, bucket: float, by: str, client: str | None
) -> list[dict[str, Any]]:
    """Per time bucket and group: requests, errors, input and output tokens, cost.

    Args:
        path: the ledger's file (no file yet: no rows).
        since: Unix seconds; bucket ``i`` covers ``[since + i * bucket, since + (i + 1) * bucket)``.
        bucket: seconds per bucket.
        by: one of :data:`GROUPS`.
        client: only this client's rows; None: every client's.
    """
    if by not in GROUPS:
        raise ValueError(f"by: expected one of {', '.join(GROUPS)}")
    where, params = _where(since, client)
    query = f"""
        SELECT CAST((time - ?) / ? AS INTEGER) AS slot, {by}, COUNT(*), SUM(status >= 400),
               SUM(input_tokens + cache_read_tokens + cache_write_tokens), SUM(output_tokens),
               SUM(cost_usd)
        FROM requests INDEXED BY requests_report
        WHERE {where} GROUP BY slot, {by} ORDER BY slot, {by}
    """
    rows = _read(path, query, (since, bucket, *params))
    return [
        {
            "bucket": slot,
            "group": group,
            "requests": requests,
            "errors": errors or 0,
            "input_tokens": input_tokens or 0,
            "output_tokens": output_tokens or 0,
            "cost_usd": round(cost or 0.0, 6),
        }
        for slot, group, requests, errors, input_tokens, output_tokens, cost in rows
    ]


def usage(path: Path, since: float, by: str, client: str | None) -> list[dict[str, Any]]:
    """The rows of ``proxycast usage --since … --by … --json``, of one client's requests or all.

    Raises:
        ValueError: ``by`` is not one of the report's groupings.
    """
    if by not in ledger_sqlite.GROUPS:
        raise ValueError(f"by: expected one of {', '.join(ledger_sqlite.GROUPS)}")
    if client is None:
        return report.usage(path, since, by)  # the very rows the command prints
    group = ledger_sqlite.GROUPS[by]
    order = "grp" if by == "day" else "spent DESC, grp"
    where, params = _where(since, client)
    query = f"""
        SELECT {group} AS grp, COUNT(*), SUM(status >= 400),
               SUM(input_tokens + cache_read_tokens + cache_write_tokens),
               SUM(output_tokens), SUM(cost_usd) AS spent
        FROM requests INDEXED BY requests_report
        WHERE {where} GROUP BY grp ORDER BY {order}
    """
    return [
        {
            by: key,
            "requests": requests,
            "errors": errors or 0,
            "input_tokens": input_tokens or 0,
            "output_tokens": output_tokens or 0,
            "cost_usd": round(cost or 0.0, 6),
        }
        for key, requests, errors, input_tokens, output_tokens, cost in _read(path, query, params)
    ]


def _where(since: float, client: str | None) -> tuple[str, tuple[Any, ...]]:
    if client is None:
        return "time >= ?", (since,)
    return "time >= ? AND client = ?", (since, client)


def _read(path: Path, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if ledger_sqlite.schema_version_readonly(db) == 0:
            return []
        return db.execute(query, params).fetchall()
    finally:
        db.close()
