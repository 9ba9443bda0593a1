"""The local store of Responses API answers, for ``previous_response_id`` and ``GET``/``DELETE
/v1/responses/{id}`` on upstreams that keep nothing themselves.

SQLite in the data directory (``responses.db``, WAL, so that the workers of one ``proxycast serve``
share it). Each row holds a response object, the conversation items up to and including its output
(what a follow-up continues), and its owner: the SHA-256 of the client key that created it, so that a
response is visible to that key only. Rows older than ``[responses] store_days`` are pruned, and the
oldest go first when the rows take more than ``store_max_mb``.

Each call is one short transaction; the route runs it in a worker thread (``trio.to_thread``), except
the write at the end of a stream, which the stream encoder makes synchronously (a single insert).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from proxycast.formats.json_spans import dumps_text

if TYPE_CHECKING:
    from collections.abc import Iterator

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    response TEXT NOT NULL,
    items TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
"""


def owner_of(key: str) -> str:
    """The owner recorded for a client key (its SHA-256: the key itself is never stored)."""
    return hashlib.sha256(key.encode()).hexdigest()


@attrs.frozen(kw_only=True)
class Stored:
    response: dict[str, Any]
    items: list[dict[str, Any]]
    """The conversation's items: every earlier input and output, then this response's output."""


@attrs.define(eq=False)
class ResponseStore:
    """One SQLite file, opened on first use; one connection, used by one thread at a time."""

    path: Path
    max_age: float
    """Seconds a response is kept."""
    max_bytes: int
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _conn: sqlite3.Connection | None = attrs.field(default=None, init=False)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, timeout=1.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                self._conn = conn
            yield self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def put(self, owner: str, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
        data = dumps_text(response)
        chain = dumps_text(items)
        now = time.time()
        with self._db() as db, db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (response["id"], owner, now, len(data) + len(chain), data, chain),
            )
            db.execute("DELETE FROM responses WHERE created < ?", (now - self.max_age,))
            (total,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()
            if total > self.max_bytes:
                excess = total - self.max_bytes
                rows = db.execute("SELECT id, size FROM responses ORDER BY created").fetchall()
                for ident, size in rows:
                    if excess <= 0:
                        break
                    db.execute("DELETE FROM responses WHERE id = ?", (ident,))
                    excess -= size

    def get(self, owner: str, ident: str) -> Stored | None:
        with self._db() as db:
            row = db.execute(
                "SELECT response, items FROM responses WHERE id = ? AND owner = ? AND created >= ?",
                (ident, owner, time.time() - self.max_age),
            ).fetchone()
        if row is None:
            return None
        return Stored(response=json.loads(row[0]), items=json.loads(row[1]))

    def delete(self, owner: str, ident: str) -> bool:
        with self._db() as db:
            cursor = db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (ident, owner))
            return cursor.rowcount > 0
