"""The ledger in SQLite (WAL): the schema and its migrations, batched inserts, pruning, and the
aggregate queries of ``proxycast usage``.

Several worker processes append to one file: each insert batch is one short transaction, and WAL lets
readers (``proxycast usage``) run beside them. ``meta.schema_version`` says which migrations ran; a
newer proxycast applies the missing ones at start, in one ``BEGIN IMMEDIATE`` so that two workers
starting together do not both migrate.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import attrs

from proxycast.ledger.rows import COLUMNS, Row
from proxycast.state.sqlite import connect

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

MIGRATIONS: tuple[str, ...] = (
    # 1: the requests table, indexed by time (every query has a --since)
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL, request_id TEXT NOT NULL, client TEXT NOT NULL, api TEXT NOT NULL,
        model TEXT NOT NULL, provider TEXT NOT NULL, upstream_model TEXT NOT NULL,
        key TEXT NOT NULL, status INTEGER NOT NULL, error_type TEXT NOT NULL,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, duration REAL NOT NULL,
        ttft REAL, attempts TEXT NOT NULL, streamed INTEGER NOT NULL, disconnected INTEGER NOT NULL
    );
    CREATE INDEX requests_time ON requests (time);
    """,
    # 2: the usage report reads only the index (a covering index: no table lookups per row)
    """
    CREATE INDEX requests_report ON requests (time, client, model, provider, status,
                                               input_tokens, cache_read_tokens,
                                               cache_write_tokens, output_tokens, cost_usd);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"


def open_db(path: Path) -> sqlite3.Connection:
    """The ledger at ``path``, created or migrated to :data:`SCHEMA_VERSION`."""
    db = connect(path)
    migrate(db)
    return db


def schema_version(db: sqlite3.Connection) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def schema_version_readonly(db: sqlite3.Connection) -> int:
    """The schema version of a ledger opened read-only (0: not a ledger yet)."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations the file lacks (none when it is current)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(db)
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the ledger's schema version is {version}; this proxycast knows {SCHEMA_VERSION}"
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def insert(db: sqlite3.Connection, rows: Iterable[Row]) -> None:
    """Append rows in one transaction."""
    values = [attrs.astuple(row) for row in rows]
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(_INSERT, values)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def prune(db: sqlite3.Connection, before: float) -> int:
    """Delete the rows older than ``before``; how many went."""
    db.execute("BEGIN IMMEDIATE")
    try:
        count = db.execute("DELETE FROM requests WHERE time < ?", (before,)).rowcount
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return count


GROUPS = {
    "client": "client",
    "model": "model",
    "provider": "provider",
    "day": "date(time, 'unixepoch')",
}


def report(db: sqlite3.Connection, since: float, by: str) -> list[dict[str, Any]]:
    """Requests, errors, input tokens (cache reads and writes included: every prompt token) and
    output tokens and cost per ``by`` (a key of :data:`GROUPS`), over the rows since ``since``,
    largest cost first (by day: in date order)."""
    group = GROUPS[by]
    # (``key`` is a column: the provider key's label; the group is named ``grp``)
    order = "grp" if by == "day" else "spent DESC, grp"
    query = f"""
        SELECT {group} AS grp, COUNT(*), SUM(status >= 400),
               SUM(input_tokens + cache_read_tokens + cache_write_tokens),
               SUM(output_tokens), SUM(cost_usd) AS spent
        FROM requests INDEXED BY requests_report
        WHERE time >= ? GROUP BY grp ORDER BY {order}
    """
    out = []
    for key, requests, errors, input_tokens, output_tokens, cost_usd in db.execute(query, (since,)):
        out.append(
            {
                by: key,
                "requests": requests,
                "errors": errors or 0,
                "input_tokens": input_tokens or 0,
                "output_tokens": output_tokens or 0,
                "cost_usd": round(cost_usd or 0.0, 6),
            }
        )
    return out
