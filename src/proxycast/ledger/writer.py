"""Writing the ledger off the request path: a request appends its row to a buffer (no I/O), and one
task per worker writes the buffer in batches, in a thread, so a slow disk never slows a request.
What is still buffered when the worker stops is written during its graceful drain."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from proxycast.ledger import sqlite

if TYPE_CHECKING:
    from pathlib import Path

    from proxycast.ledger.rows import Row

log = logging.getLogger("proxycast")

FLUSH_SECONDS = 1.0
"""How often buffered rows are written (sooner when :data:`BATCH` rows wait)."""
BATCH = 500
MAX_BUFFERED = 100_000
"""Past this many unwritten rows (a disk that stopped), the oldest are dropped, and logged."""
PRUNE_SECONDS = 3600.0


class LedgerWriter:
    """The ledger of one worker: a buffer and the task that writes it.

    Args:
        path: the SQLite file.
        retention_days: rows older than this are pruned (at start, then hourly).
    """

    def __init__(self, path: Path, retention_days: float) -> None:
        self.path = path
        self._db = sqlite.open_db(path)
        self._retention = retention_days * 86400
        self._rows: list[Row] = []
        self._wake = trio.Event()
        self._lock = trio.Lock()
        self._pruned_at = 0.0
        self.dropped = 0

    def record(self, row: Row) -> None:
        """Buffer a row (no I/O: called at the end of every request)."""
        self._rows.append(row)
        if len(self._rows) > 2 * MAX_BUFFERED:  # trimmed in halves: amortised, not per request
            excess = len(self._rows) - MAX_BUFFERED
            del self._rows[:excess]
            self.dropped += excess
            log.error(
                "the ledger's disk is not keeping up: %d oldest rows dropped so far", self.dropped
            )
        if len(self._rows) >= BATCH:
            self._wake.set()

    async def run(self) -> None:
        """Write buffered rows every :data:`FLUSH_SECONDS` until cancelled."""
        while True:
            with trio.move_on_after(FLUSH_SECONDS):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered now, and prune when it is time."""
        async with self._lock:
            rows, self._rows = self._rows, []
            now = time.time()
            prune = now - self._pruned_at >= PRUNE_SECONDS
            if not rows and not prune:
                return
            try:
                await trio.to_thread.run_sync(self._write, rows, now if prune else None)
            except Exception:
                self._rows[:0] = rows  # kept for the next try
                log.exception("could not write %d ledger rows to %s", len(rows), self.path)
                return
            if prune:
                self._pruned_at = now

    def _write(self, rows: list[Row], now: float | None) -> None:
        if rows:
            sqlite.insert(self._db, rows)
        if now is not None:
            sqlite.prune(self._db, now - self._retention)

    async def aclose(self) -> None:
        """Write the rest (shielded: this runs when the worker stops), then close."""
        with trio.CancelScope(shield=True):
            await self.flush()
            async with self._lock:
                self._db.close()
