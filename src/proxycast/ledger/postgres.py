"""The ledger in Postgres, shared by every gateway that points at the database: the same schema
and numbered migrations as :mod:`proxycast.ledger.sqlite` (Postgres types), batched inserts, pruning,
and the aggregate queries of ``proxycast usage``, with the same answers.

psycopg's blocking API runs in worker threads (the writer's ``trio.to_thread.run_sync``) on a pool
of :data:`POOL_SIZE` connections, the size of the store's ``trio.CapacityLimiter``: no thread ever
waits for a connection another thread holds. ``meta.schema_version`` says which migrations ran; a
newer proxycast applies the missing ones when it first reaches the database, holding a transaction-
scoped advisory lock, so that two gateways starting together do not both migrate.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from proxycast.core.redact import hide_password, without_password
from proxycast.errors import LedgerUnavailableError
from proxycast.ledger.rows import CAPTURE_COLUMNS, COLUMNS, capture_values, stored_values
from proxycast.ledger.sqlite import LISTED
from proxycast.ledger.store import SERIES_GROUPS, report_rows, series_rows

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from proxycast.ledger.rows import CaptureRow, Row

MIGRATIONS: tuple[str, ...] = (
    # 1: the requests table, indexed by time (every query has a --since). SQLite's REAL is a double
    # (Postgres's REAL is a float4: DOUBLE PRECISION here); its INTEGER is 64 bits (BIGINT).
    """
    CREATE TABLE requests (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL, client TEXT NOT NULL,
        api TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL, key TEXT NOT NULL, status INTEGER NOT NULL,
        error_type TEXT NOT NULL, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,
        cache_read_tokens BIGINT NOT NULL, cache_write_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL, cost_usd DOUBLE PRECISION NOT NULL,
        duration DOUBLE PRECISION NOT NULL, ttft DOUBLE PRECISION, attempts TEXT NOT NULL,
        streamed BOOLEAN NOT NULL, disconnected BOOLEAN NOT NULL
    );
    CREATE INDEX requests_time ON requests (time);
    """,
    # 2: the usage report can be answered from the index alone (an index-only scan)
    """
    CREATE INDEX requests_report ON requests (time, client, model, provider, status,
                                               input_tokens, cache_read_tokens,
                                               cache_write_tokens, output_tokens, cost_usd);
    """,
    # 3: whether the usage is an estimate (the upstream reported none), in the report's index too
    """
    ALTER TABLE requests ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT false;
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
        id BIGSERIAL PRIMARY KEY,
        time DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL, client TEXT NOT NULL,
        api TEXT NOT NULL, model TEXT NOT NULL, status INTEGER NOT NULL, data TEXT NOT NULL
    );
    CREATE INDEX captures_time ON captures (time);
    CREATE INDEX captures_request ON captures (request_id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

MIGRATION_LOCK = int.from_bytes(b"pcledger", "big") >> 1
"""The advisory lock key that migrations hold (any bigint no other program uses)."""
POOL_SIZE = 2
CONNECT_SECONDS = 3.0
"""How long a write waits for a connection (a new one, after Postgres restarted, takes ~10 ms; an
unreachable server fails the write after this, and its rows wait for the next one)."""
RECONNECT_SECONDS = 10.0
"""How long the pool retries a lost connection in the background (with backoff) before it leaves
reconnecting to the next write; short, so that a Postgres that is back is seen within seconds."""

_COPY = f"COPY requests ({', '.join(COLUMNS)}) FROM STDIN"
# Days as SQLite's date(time, 'unixepoch') counts them, to the same float operations: SQLite turns
# the seconds into whole milliseconds of the Julian day (rounded half up) and cuts days there, so a
# row 0.4 ms before midnight is on the next day in both (to_timestamp would keep microseconds).
_JULIAN_EPOCH_MS = "210866760000000.0::float8"  # 1970-01-01T00:00Z in Julian-day milliseconds
_DAY = (
    f"to_char(date '1970-01-01' + floor((floor(time * 1000.0::float8 + {_JULIAN_EPOCH_MS}"
    f" + 0.5::float8) - {_JULIAN_EPOCH_MS}) / 86400000.0::float8)::integer, 'YYYY-MM-DD')"
)
GROUPS = {
    "client": "client",
    "model": "model",
    "provider": "provider",
    "day": _DAY,
    "session": "session",
    "route": "route",
}


def check_url(url: str) -> None:
    """Raises ``ValueError`` when libpq would not accept ``url`` (the message hides its password)."""
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ValueError(f"not a Postgres URL: {hide_password(str(exc), url)}") from None


Connection = psycopg.Connection[tuple[Any, ...]]


def schema_version(conn: Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: Connection) -> None:
    """Apply the migrations the database lacks (none when it is current), in one transaction that
    holds :data:`MIGRATION_LOCK`: a second gateway migrating at the same moment waits, then finds
    the schema current."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the ledger's schema version is {version}; this proxycast knows {SCHEMA_VERSION}"
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement.encode())
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )


def insert(conn: Connection, rows: Sequence[Row]) -> None:
    """Append rows in one transaction, by ``COPY``.

    ``COPY`` is the faster way for the writer's 500-row batches: bench/ledger_postgres.py measured it
    at 1.43 times ``executemany``'s rows/s (medians 28,900 and 20,300 rows/s, ahead in every round by
    1.25 to 1.95 times; bench/results/ledger_postgres.json). ``executemany`` is pipelined by psycopg
    but still sends, and Postgres still executes, one Bind/Execute per row; ``COPY`` streams the
    rows as one statement."""
    with conn.transaction(), conn.cursor() as cursor, cursor.copy(_COPY) as copy:
        for row in rows:
            copy.write_row(stored_values(row))


def prune(conn: Connection, before: float, table: str = "requests") -> int:
    """Delete the rows (of ``requests`` or ``captures``) older than ``before``; how many went."""
    assert table in ("requests", "captures")
    with conn.transaction():
        query = f"DELETE FROM {table} WHERE time < %s"
        return conn.execute(query.encode(), (before,)).rowcount


_INSERT_CAPTURE = (
    f"INSERT INTO captures ({', '.join(CAPTURE_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in CAPTURE_COLUMNS)})"
)


def insert_captures(conn: Connection, rows: Sequence[CaptureRow]) -> None:
    """Append captures in one transaction."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(_INSERT_CAPTURE.encode(), [capture_values(row) for row in rows])


def captures(
    conn: Connection, since: float, client: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """As :func:`proxycast.ledger.sqlite.captures`."""
    if not _has_table(conn, "captures"):
        return []
    where, params = _where(since, client)
    query = f"""
        SELECT {", ".join(LISTED)} FROM captures
        WHERE {where} ORDER BY time DESC, id DESC LIMIT %s
    """
    found = conn.execute(query.encode(), (*params, limit)).fetchall()
    return [dict(zip(LISTED, row, strict=True)) for row in found]


def captured(conn: Connection, request_id: str, client: str | None = None) -> dict[str, Any] | None:
    """As :func:`proxycast.ledger.sqlite.captured`."""
    if not _has_table(conn, "captures"):
        return None
    query = f"SELECT {', '.join(CAPTURE_COLUMNS)} FROM captures WHERE request_id = %s"
    params: tuple[Any, ...] = (request_id,)
    if client is not None:
        query, params = query + " AND client = %s", (*params, client)
    row = conn.execute((query + " ORDER BY id DESC LIMIT 1").encode(), params).fetchone()
    return None if row is None else dict(zip(CAPTURE_COLUMNS, row, strict=True))


def report(
    conn: Connection, since: float, by: str, client: str | None = None
) -> list[dict[str, Any]]:
    """As :func:`proxycast.ledger.sqlite.report`: the same rows, in the same order (empty when the
    database holds no ledger yet)."""
    if not _has_ledger(conn):
        return []
    where, params = _where(since, client)
    query = f"""
        SELECT {GROUPS[by]} AS grp, COUNT(*), COUNT(*) FILTER (WHERE status >= 400),
               SUM(input_tokens + cache_read_tokens + cache_write_tokens),
               SUM(output_tokens), SUM(cost_usd), COUNT(*) FILTER (WHERE estimated)
        FROM requests WHERE {where} GROUP BY grp
    """
    return report_rows(conn.execute(query.encode(), params).fetchall(), by)


def series(
    conn: Connection, since: float, bucket: float, by: str, client: str | None = None
) -> list[dict[str, Any]]:
    """As :func:`proxycast.ledger.sqlite.series`."""
    if by not in SERIES_GROUPS:
        raise ValueError(f"by: expected one of {', '.join(SERIES_GROUPS)}")
    if not _has_ledger(conn):
        return []
    where, params = _where(since, client)
    query = f"""
        SELECT trunc((time - %s) / %s)::bigint AS slot, {by}, COUNT(*),
               COUNT(*) FILTER (WHERE status >= 400),
               SUM(input_tokens + cache_read_tokens + cache_write_tokens), SUM(output_tokens),
               SUM(cost_usd)
        FROM requests WHERE {where} GROUP BY slot, {by}
    """
    return series_rows(conn.execute(query.encode(), (since, bucket, *params)).fetchall())


def _has_ledger(conn: Connection) -> bool:
    return _has_table(conn, "requests")


def _has_table(conn: Connection, table: str) -> bool:
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(found and found[0])


def _where(since: float, client: str | None) -> tuple[str, tuple[Any, ...]]:
    if client is None:
        return "time >= %s", (since,)
    return "time >= %s AND client = %s", (since, client)


class PostgresStore:
    """The ledger in a Postgres database (:class:`~proxycast.ledger.store.Store`). Nothing is
    connected until the first call; the database is migrated then.

    Every failure to reach or use the database is a
    :class:`~proxycast.ledger.store.LedgerUnavailableError` whose message names the database
    without its password.

    Args:
        url: ``postgresql://USER@HOST:PORT/DB`` (anything libpq accepts).
        pool_size: connections, and threads that may use them at once.
    """

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self._url = url
        self.where = without_password(url)
        self.limiter = trio.CapacityLimiter(pool_size)
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            open=False,
            min_size=1,
            max_size=pool_size,
            name="proxycast-ledger",
            timeout=CONNECT_SECONDS,
            reconnect_timeout=RECONNECT_SECONDS,
            # a pooled connection may be one the server closed (it restarted): checked before use
            check=ConnectionPool.check_connection,
            kwargs={
                "autocommit": True,  # transactions are explicit: none is left open between uses
                "connect_timeout": max(1, round(CONNECT_SECONDS)),
                "application_name": "proxycast",
            },
        )
        self._opened = False
        self._migrated = False
        self._lock = threading.Lock()
        # The pool logs each connection handed out (INFO) and each failed reconnection (WARNING):
        # the writer says once that Postgres is down, and once that it is back.
        pool_log = logging.getLogger("psycopg.pool")
        if pool_log.level == logging.NOTSET:
            pool_log.setLevel(logging.ERROR)

    def __repr__(self) -> str:
        return f"<PostgresStore {self.where!r}>"

    @contextlib.contextmanager
    def _connection(self, *, migrate_first: bool) -> Iterator[Connection]:
        """A pooled connection for one use (the database migrated first, once), with psycopg's
        and the pool's errors as :class:`LedgerUnavailableError` (its text, not its traceback: a
        libpq message may quote the URL, and is passed through
        :func:`~proxycast.core.redact.hide_password`)."""
        with self._lock:
            if not self._opened:
                self._pool.open(wait=False)  # connects in the pool's own threads
                self._opened = True
        try:
            with self._pool.connection() as conn:
                if migrate_first and not self._migrated:
                    migrate(conn)
                    self._migrated = True
                yield conn
        except psycopg.Error as exc:
            raise LedgerUnavailableError(
                f"Postgres at {self.where}: {hide_password(str(exc), self._url)}"
            ) from None

    def insert(self, rows: Sequence[Row]) -> None:
        with self._connection(migrate_first=True) as conn:
            insert(conn, rows)

    def prune(self, before: float) -> int:
        with self._connection(migrate_first=True) as conn:
            return prune(conn, before)

    def insert_captures(self, rows: Sequence[CaptureRow]) -> None:
        with self._connection(migrate_first=True) as conn:
            insert_captures(conn, rows)

    def prune_captures(self, before: float) -> int:
        with self._connection(migrate_first=True) as conn:
            return prune(conn, before, "captures")

    def captures(
        self, since: float, client: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        with self._connection(migrate_first=False) as conn:
            return captures(conn, since, client, limit)

    def captured(self, request_id: str, client: str | None = None) -> dict[str, Any] | None:
        with self._connection(migrate_first=False) as conn:
            return captured(conn, request_id, client)

    def report(self, since: float, by: str, client: str | None = None) -> list[dict[str, Any]]:
        with self._connection(migrate_first=False) as conn:
            return report(conn, since, by, client)

    def series(
        self, since: float, bucket: float, by: str, client: str | None = None
    ) -> list[dict[str, Any]]:
        with self._connection(migrate_first=False) as conn:
            return series(conn, since, bucket, by, client)

    def close(self) -> None:
        with self._lock:
            if self._opened:
                self._pool.close()
                self._opened = False
