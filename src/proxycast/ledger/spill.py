"""Where a Postgres ledger's rows wait while Postgres is unreachable: a local SQLite file with the
ledger's own schema (``ledger-spill.db`` in the data directory), replayed into Postgres once it is
back, and emptied as it is replayed.

Every worker of the machine may spill into the file and replay it. A replayed batch is read,
written to Postgres and deleted from the file inside one ``BEGIN IMMEDIATE`` transaction of the
file, so no two workers replay the same rows, and a row leaves the file only once Postgres has
committed it. (A process killed between Postgres's commit and the file's would replay that one
batch again at its next start: the one way a row can be written twice.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxycast.ledger import sqlite
from proxycast.ledger.rows import COLUMNS

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence
    from pathlib import Path

    from proxycast.ledger.rows import Row
    from proxycast.ledger.store import Store

BATCH = 500
"""Rows replayed per Postgres transaction."""

_TAKE = f"SELECT id, {', '.join(COLUMNS)} FROM requests ORDER BY id LIMIT ?"


class Spill:
    """The spill file at ``path`` (created when first needed). Its methods block (threads only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self.replayed = 0
        """Rows replayed so far (counted per committed batch: a replay that fails midway counts
        the batches it moved)."""

    def __repr__(self) -> str:
        return f"<Spill {str(self.path)!r}>"

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite.open_db(self.path)
        return self._db

    def add(self, rows: Sequence[Row]) -> None:
        """Append ``rows`` (one transaction)."""
        sqlite.insert(self._open(), rows)

    def pending(self) -> int:
        """How many rows wait in the file."""
        if self._db is None and not self.path.exists():
            return 0
        found = self._open().execute("SELECT COUNT(*) FROM requests").fetchone()
        return int(found[0])

    def replay(self, store: Store) -> int:
        """Move every row of the file into ``store``, :data:`BATCH` at a time; how many moved.

        Raises:
            whatever ``store.insert`` raises; the batch that failed stays in the file.
        """
        if self._db is None and not self.path.exists():
            return 0
        db = self._open()
        if db.execute("SELECT 1 FROM requests LIMIT 1").fetchone() is None:
            return 0  # (a read: no write lock taken when there is nothing to replay)
        moved = 0
        while True:
            db.execute("BEGIN IMMEDIATE")
            try:
                found = db.execute(_TAKE, (BATCH,)).fetchall()
                if found:
                    store.insert([sqlite.row_of(values[1:]) for values in found])
                    db.execute("DELETE FROM requests WHERE id <= ?", (found[-1][0],))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            moved += len(found)
            self.replayed += len(found)
            if len(found) < BATCH:
                return moved

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
