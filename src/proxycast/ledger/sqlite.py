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

import trio

from proxycast.errors import LedgerUnavailableError
from proxycast.ledger.rows import (
    CAPTURE_COLUMNS,
    COLUMNS,
    CaptureRow,
    Row,
    capture_values,
    stored_values,
)
from proxycast.ledger.store import SERIES_GROUPS, report_rows, series_rows
from proxycast.state.sqlite import connect

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
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
    # 3: whether the usage is an estimate (the upstream reported none), in the report's index too
    """
    ALTER TABLE requests ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
    DROP INDEX requests_report;
    CREATE INDEX requests_report ON requests (time, client, model, provider, status,
                                               input_tokens, cache_read_tokens,
                                               cache_write_tokens, output_tokens, cost_usd,
                                               estimated);
    """,
    # 4: the rule that routed a request (``[[routes]]``) and the session it belongs to
    """
    ALTER TABLE requests ADD COLUMN route TEXT NOT NULL DEFAULT '';
    ALTER TABLE requests ADD COLUMN session TEXT NOT NULL DEFAULT '';
    """,
    # 5: captured requests (``[capture]``), with their own retention, found by the request's id
    """
    CREATE TABLE captures (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL, request_id TEXT NOT NULL, client TEXT NOT NULL, api TEXT NOT NULL,
        model TEXT NOT NULL, status INTEGER NOT NULL, data TEXT NOT NULL
    );
    CREATE INDEX captures_time ON captures (time);
    CREATE INDEX captures_request ON captures (request_id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT_CAPTURE = (
    f"INSERT INTO captures ({', '.join(CAPTURE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in CAPTURE_COLUMNS)})"
)
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
    _append(db, _INSERT, [stored_values(row) for row in rows])


def insert_captures(db: sqlite3.Connection, rows: Iterable[CaptureRow]) -> None:
    """Append captures in one transaction."""
    _append(db, _INSERT_CAPTURE, [capture_values(row) for row in rows])


def _append(db: sqlite3.Connection, statement: str, values: list[tuple[object, ...]]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(statement, values)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def captures(
    db: sqlite3.Connection, since: float, client: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The captures since ``since`` (of ``client`` only, if given), newest first, without their
    bodies."""
    if not _has_captures(db):
        return []
    where, params = _where(since, client)
    query = f"""
        SELECT time, request_id, client, api, model, status FROM captures
        WHERE {where} ORDER BY time DESC, id DESC LIMIT ?
    """
    return [dict(zip(LISTED, row, strict=True)) for row in db.execute(query, (*params, limit))]


def captured(
    db: sqlite3.Connection, request_id: str, client: str | None = None
) -> dict[str, Any] | None:
    """The latest capture of ``request_id`` (of ``client`` only, if given), bodies included."""
    if not _has_captures(db):
        return None
    query = f"SELECT {', '.join(CAPTURE_COLUMNS)} FROM captures WHERE request_id = ?"
    params: tuple[Any, ...] = (request_id,)
    if client is not None:
        query, params = query + " AND client = ?", (*params, client)
    row = db.execute(query + " ORDER BY id DESC LIMIT 1", params).fetchone()
    return None if row is None else dict(zip(CAPTURE_COLUMNS, row, strict=True))


def _has_captures(db: sqlite3.Connection) -> bool:
    """Whether the file has the captures table (a ledger read before migration 5: none yet)."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'captures'"
    return db.execute(query).fetchone() is not None


LISTED = ("time", "request_id", "client", "api", "model", "status")
"""The columns of a listed capture."""


def prune(db: sqlite3.Connection, before: float, table: str = "requests") -> int:
    """Delete the rows (of ``requests`` or ``captures``) older than ``before``; how many went."""
    assert table in ("requests", "captures")
    db.execute("BEGIN IMMEDIATE")
    try:
        count = db.execute(f"DELETE FROM {table} WHERE time < ?", (before,)).rowcount
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
    "session": "session",
    "route": "route",
}


def report(
    db: sqlite3.Connection, since: float, by: str, client: str | None = None
) -> list[dict[str, Any]]:
    """Requests, errors, input tokens (cache reads and writes included: every prompt token) and
    output tokens and cost per ``by`` (a key of :data:`GROUPS`), over the rows since ``since`` (of
    ``client`` only, if given), largest cost first (by day: in date order;
    :func:`~proxycast.ledger.store.report_rows`)."""
    group = GROUPS[by]
    where, params = _where(since, client)
    # (``key`` is a column: the provider key's label; the group is named ``grp``)
    query = f"""
        SELECT {group} AS grp, COUNT(*), SUM(status >= 400),
               SUM(input_tokens + cache_read_tokens + cache_write_tokens),
               SUM(output_tokens), SUM(cost_usd), SUM(estimated)
        FROM requests INDEXED BY requests_report
        WHERE {where} GROUP BY grp
    """
    return report_rows(db.execute(query, params), by)


def series(
    db: sqlite3.Connection, since: float, bucket: float, by: str, client: str | None = None
) -> list[dict[str, Any]]:
    """Usage per time slot and ``by`` (:func:`~proxycast.ledger.store.series_rows`)."""
    if by not in SERIES_GROUPS:
        raise ValueError(f"by: expected one of {', '.join(SERIES_GROUPS)}")
    where, params = _where(since, client)
    query = f"""
        SELECT CAST((time - ?) / ? AS INTEGER) AS slot, {by}, COUNT(*), SUM(status >= 400),
               SUM(input_tokens + cache_read_tokens + cache_write_tokens), SUM(output_tokens),
               SUM(cost_usd)
        FROM requests INDEXED BY requests_report
        WHERE {where} GROUP BY slot, {by}
    """
    return series_rows(db.execute(query, (since, bucket, *params)))


def _where(since: float, client: str | None) -> tuple[str, tuple[Any, ...]]:
    if client is None:
        return "time >= ?", (since,)
    return "time >= ? AND client = ?", (since, client)


def row_of(values: Sequence[Any]) -> Row:
    """A row read back (``SELECT`` of :data:`COLUMNS`): SQLite keeps the flags as 0 and 1."""
    row = dict(zip(COLUMNS, values, strict=True))
    for flag in ("streamed", "disconnected", "estimated"):
        row[flag] = bool(row[flag])
    return Row(**row)


class SQLiteStore:
    """The ledger in one SQLite file (:class:`~proxycast.ledger.store.Store`).

    Args:
        path: the file.
        create: create or migrate it now (the writer); False opens it read-only when read
            (``proxycast usage``: a missing file is an empty ledger).
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.limiter = trio.CapacityLimiter(1)  # one connection
        self._db = open_db(path) if create else None

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}>"

    def _writable(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = open_db(self.path)
        return self._db

    def insert(self, rows: Sequence[Row]) -> None:
        insert(self._writable(), rows)

    def prune(self, before: float) -> int:
        return prune(self._writable(), before)

    def insert_captures(self, rows: Sequence[CaptureRow]) -> None:
        insert_captures(self._writable(), rows)

    def prune_captures(self, before: float) -> int:
        return prune(self._writable(), before, "captures")

    def captures(
        self, since: float, client: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return self._read(lambda db: captures(db, since, client, limit))

    def captured(self, request_id: str, client: str | None = None) -> dict[str, Any] | None:
        found = self._read(lambda db: [row] if (row := captured(db, request_id, client)) else [])
        return found[0] if found else None

    def report(self, since: float, by: str, client: str | None = None) -> list[dict[str, Any]]:
        return self._read(lambda db: report(db, since, by, client))

    def series(
        self, since: float, bucket: float, by: str, client: str | None = None
    ) -> list[dict[str, Any]]:
        return self._read(lambda db: series(db, since, bucket, by, client))

    def _read(
        self, query: Callable[[sqlite3.Connection], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        if self._db is not None:
            return query(self._db)
        if not self.path.exists():
            return []
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return query(db) if schema_version_readonly(db) else []
        except sqlite3.DatabaseError as exc:  # not a ledger ("file is not a database"), locked
            raise LedgerUnavailableError(f"{self.path}: {exc}") from None
        finally:
            db.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
