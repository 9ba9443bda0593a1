"""Writing the ledger off the request path: a request appends its row to a buffer (no I/O), and one
task per worker writes the buffer in batches, in a thread, so a slow disk or database never slows a
request. What is still buffered when the worker stops is written during its graceful drain.

While the ledger cannot be written (Postgres is down, say) rows stay in the buffer, and each
attempt retries them. On Postgres, past ``[ledger] buffer_rows`` they are spilled to a local SQLite
file (:mod:`proxycast.ledger.spill`), replayed into Postgres when it is back: no row is lost. The
outage is logged once when it starts (and once when rows are first spilled), and once when it ends.

Captured requests (``[capture]``) go the same way, in a buffer of their own: each is a callable
that makes its row (redacting and capping the bodies) in the writer's thread, never on a request's
path. They are written after the rows; while the store cannot be written they wait as their rows
(made at the first failed write: a row's bodies are capped, a request's are not), up to
:data:`MAX_CAPTURES` (the oldest dropped first: they are diagnostics, not accounting).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

import trio

from proxycast.errors import LedgerUnavailableError
from proxycast.ledger import is_postgres, open_store, spill_path
from proxycast.ledger.spill import Spill

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from proxycast.ledger import LedgerConfig
    from proxycast.ledger.rows import CaptureRow, Row
    from proxycast.ledger.store import Store

log = logging.getLogger("proxycast")

FLUSH_SECONDS = 1.0
"""How often buffered rows are written (sooner when :data:`BATCH` rows wait)."""
BATCH = 500
MAX_BUFFERED = 100_000
"""``[ledger] buffer_rows``' default."""
PRUNE_SECONDS = 3600.0
MAX_CAPTURES = 1000
"""Captures waiting to be written at most (each its row: bodies of up to ``[capture]
max_body_bytes``)."""


def _itself(row: CaptureRow) -> CaptureRow:
    return row


def open_writer(config: LedgerConfig, env: Mapping[str, str] | None = None) -> LedgerWriter | None:
    """The writer of the configured ledger (None when it is off); on Postgres, with its spill file
    in the data directory."""
    store = open_store(config, env)
    if store is None:
        return None
    return LedgerWriter(
        store,
        retention_days=config.retention_days,
        buffer_rows=config.buffer_rows,
        spill=spill_path(env) if is_postgres(config.url) else None,
    )


class LedgerWriter:
    """The ledger of one worker: a buffer and the task that writes it.

    Args:
        store: the ledger.
        retention_days: rows older than this are pruned (at start, then hourly).
        buffer_rows: rows held in memory while the store cannot be written; past it they are
            spilled to ``spill``, or without one, past twice as many the oldest are dropped (a
            local disk that stopped), and logged.
        spill: the spill file (for a store on another machine).
    """

    def __init__(
        self,
        store: Store,
        *,
        retention_days: float,
        buffer_rows: int = MAX_BUFFERED,
        spill: Path | None = None,
    ) -> None:
        self.store = store
        self.buffer_rows = buffer_rows
        self._spill = None if spill is None else Spill(spill)
        self._retention = retention_days * 86400
        self._rows: list[Row] = []
        self._wake = trio.Event()
        self._lock = trio.Lock()
        self._pruned_at = 0.0
        self._replay_due = spill is not None and spill.exists()  # left by an earlier run
        self._down_since: float | None = None
        self._spilled = 0
        """Rows spilled during the current outage."""
        self._spill_failed = False
        self.dropped = 0
        self.recorded = 0
        """Rows recorded so far (a reader's cache is stale once it changes)."""
        self._captures: list[Callable[[], CaptureRow]] = []
        self.capture_retention: float | None = None
        """Seconds captures are kept (``[capture] retention_days``, whether capture is on or not:
        those taken before it was turned off go too); None: never pruned."""

    def record(self, row: Row) -> None:
        """Buffer a row (no I/O: called at the end of every request)."""
        self._rows.append(row)
        self.recorded += 1
        if len(self._rows) > 2 * self.buffer_rows and (self._spill is None or self._spill_failed):
            excess = len(self._rows) - self.buffer_rows  # trimmed in halves: amortised
            del self._rows[:excess]
            self.dropped += excess
            log.error(
                "the ledger is not keeping up and its rows cannot be spilled: "
                "%d oldest rows dropped so far",
                self.dropped,
            )
        if len(self._rows) >= min(BATCH, self.buffer_rows + 1):
            self._wake.set()

    def record_capture(self, make: Callable[[], CaptureRow]) -> None:
        """Buffer a capture (no I/O): ``make`` builds its row in the writer's thread."""
        self._captures.append(make)
        if len(self._captures) > MAX_CAPTURES:
            del self._captures[0]

    async def run(self) -> None:
        """Write buffered rows every :data:`FLUSH_SECONDS` until cancelled."""
        while True:
            with trio.move_on_after(FLUSH_SECONDS):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered now (and what waits in the spill file), and prune when it is
        time; when the store cannot be written, keep the rows (spilling them past
        ``buffer_rows``)."""
        async with self._lock:
            now = time.time()
            prune = now - self._pruned_at >= PRUNE_SECONDS
            if not self._rows and not prune and not self._replay_due and not self._captures:
                return
            rows, self._rows = self._rows, []
            captured, self._captures = self._captures, []
            replayed = self._spill.replayed if self._spill is not None else 0
            failure = None
            try:
                await trio.to_thread.run_sync(self._write, rows, limiter=self.store.limiter)
            except Exception as exc:
                failure = exc
            except BaseException:
                self._rows[:0] = rows  # cancelled before the thread started: kept
                self._captures[:0] = captured
                raise
            if failure is not None:
                self._rows[:0] = rows  # kept for the next try
                self._captures[:0] = await self._made(captured[-MAX_CAPTURES:])
                self._failed(failure)
                if self._spill is not None and len(self._rows) > self.buffer_rows:
                    await self._spill_rows()
                return
            self._replay_due = False
            if self._spill is not None:
                replayed = self._spill.replayed - replayed
            self._written(len(rows), replayed, now)
            if captured:
                await self._write_captures(captured)
            if prune:
                await self._prune(now)

    def _write(self, rows: list[Row]) -> None:
        if self._spill is not None:
            self._spill.replay(self.store)  # first: the oldest rows
        if rows:
            self.store.insert(rows)

    async def _made(
        self, captured: list[Callable[[], CaptureRow]]
    ) -> list[Callable[[], CaptureRow]]:
        """The captures' rows made now (in a thread), to wait for the store: a capture refers to
        its request's whole bodies (up to ``server.max_body_bytes`` each) until its row, capped,
        is made, and a thousand of those would hold gigabytes through an outage."""

        def make() -> list[Callable[[], CaptureRow]]:
            return [functools.partial(_itself, made()) for made in captured]

        try:
            return await trio.to_thread.run_sync(make)
        except Exception as exc:
            log.warning("could not make %d captured requests: %s", len(captured), exc)
            return []

    async def _write_captures(self, captured: list[Callable[[], CaptureRow]]) -> None:
        """Make the captures' rows and write them (in a thread); lost, and logged, if that fails."""

        def write() -> None:
            self.store.insert_captures([make() for make in captured])

        try:
            await trio.to_thread.run_sync(write, limiter=self.store.limiter)
        except Exception as exc:
            log.warning("could not write %d captured requests: %s", len(captured), exc)

    async def _prune(self, now: float) -> None:
        try:
            await trio.to_thread.run_sync(
                self.store.prune, now - self._retention, limiter=self.store.limiter
            )
            if self.capture_retention is not None:
                await trio.to_thread.run_sync(
                    self.store.prune_captures,
                    now - self.capture_retention,
                    limiter=self.store.limiter,
                )
        except Exception as exc:  # tried again at the next write
            log.warning("could not prune the ledger: %s", exc)
        else:
            self._pruned_at = now

    def _failed(self, exc: Exception) -> None:
        if self._down_since is not None:
            return  # logged when the outage began
        self._down_since = time.monotonic()
        kept = (
            f"rows are kept in memory (up to {self.buffer_rows:,}), then spilled to "
            f"{self._spill.path}, until it is back"
            if self._spill is not None
            else f"rows are kept in memory (up to {2 * self.buffer_rows:,}) until it is back"
        )
        if isinstance(exc, LedgerUnavailableError):
            log.warning("the ledger is unreachable (%s): %s", exc, kept)
        else:
            log.error("could not write the ledger (%s): %s", self.store, kept, exc_info=exc)

    def _written(self, count: int, replayed: int, now: float) -> None:
        if self._down_since is not None:
            log.warning(
                "the ledger is reachable again after %.0f s: %d rows written that waited "
                "(%d of them from the spill file)",
                time.monotonic() - self._down_since,
                count + replayed,
                replayed,
            )
            self._down_since, self._spilled = None, 0
        elif replayed:
            log.info("%d ledger rows replayed from %s", replayed, self._spill)

    async def _spill_rows(self) -> None:
        """Move the buffer to the spill file (kept in the buffer when that fails too)."""
        assert self._spill is not None
        rows, self._rows = self._rows, []
        try:
            await trio.to_thread.run_sync(self._spill.add, rows)
        except BaseException as exc:
            self._rows[:0] = rows  # kept (cancelled before the thread started, too)
            if not isinstance(exc, Exception):
                raise
            if not self._spill_failed:
                log.error("could not spill %d ledger rows to %s", len(rows), self._spill.path)
            self._spill_failed = True
            return
        self._spill_failed = False
        self._replay_due = True
        if not self._spilled:
            log.warning(
                "the ledger is still unreachable: %d rows spilled to %s (replayed when it is back)",
                len(rows),
                self._spill.path,
            )
        self._spilled += len(rows)

    async def aclose(self) -> None:
        """Write the rest (shielded: this runs when the worker stops), to the store, else to the
        spill file, then close."""
        with trio.CancelScope(shield=True):
            await self.flush()
            async with self._lock:
                if self._rows and self._spill is not None:
                    await self._spill_rows()
                if self._rows:
                    log.error("%d ledger rows could not be written and are lost", len(self._rows))
                await trio.to_thread.run_sync(self.store.close, limiter=self.store.limiter)
                if self._spill is not None:
                    await trio.to_thread.run_sync(self._spill.close)
