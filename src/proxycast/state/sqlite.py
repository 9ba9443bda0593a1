"""Limits in one SQLite file (WAL) that every worker of the machine opens: an admission is one
``BEGIN IMMEDIATE`` transaction (SQLite's write lock, held by one process at a time), so the check and
the count happen as one step across workers, and a limit is exact however many workers there are.

The file persists across restarts: a restart neither resets a day's spend nor forgets the last
minute's requests. A transaction runs on the event loop when the file is free (it takes ~0.1 ms),
and in a worker thread when another worker holds the lock (the event loop never waits for it).

With ``--workers N`` the file shares the key health too (:mod:`proxycast.state.health`): a table of
the rests under way, written by the worker that saw the failure and read by every worker every 0.5 s.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING

import trio

from proxycast.state import window
from proxycast.state.health import HealthBoard, Rest
from proxycast.state.window import WINDOW

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from proxycast.state import Admitted, Ask, Limits, Refused
    from proxycast.upstream.keys import KeyPool

log = logging.getLogger("proxycast")

CHECKPOINT_EVERY = 512
"""Transactions between two WAL checkpoints (run in a thread)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counts (client TEXT NOT NULL, slot NOT NULL, requests INTEGER NOT NULL,
                                   tokens INTEGER NOT NULL, usd REAL NOT NULL,
                                   PRIMARY KEY (client, slot)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (label TEXT PRIMARY KEY, until REAL NOT NULL, reason TEXT NOT NULL);
"""
# One row per client and slot: a second of the window (an integer: see proxycast.state.window; an
# admission reads at most 60 of them whatever the rate), or a budget period (text: "d:2026-11-26",
# "m:2026-11") with its spend. One table, clustered on its key (WITHOUT ROWID): an admission or a
# settlement writes one page of it, where the earlier two tables with their separate key indexes
# wrote up to four; with one statement fewer each, that made the two transactions of a request
# about 35 us cheaper (135 -> 100 us, measured alone).
_MIGRATION = (  # the files of earlier versions: their two tables, moved into counts
    (
        "buckets",
        "INSERT OR IGNORE INTO counts SELECT client, second, requests, tokens, 0.0 FROM buckets",
    ),
    ("spend", "INSERT OR IGNORE INTO counts SELECT client, period, 0, 0, usd FROM spend"),
)
_WINDOW = (
    "SELECT NULL, min(slot), total(requests) FILTER (WHERE slot > ?2), "
    "total(tokens) FILTER (WHERE slot > ?2) FROM counts WHERE client = ?1 AND slot < ''"
)
"""The window summed in SQLite (an admission needs only the sums, and the oldest second to know
when to prune): one row, where reading up to 60 buckets into Python cost ~60 us an admission at
250 requests a second. SQLite orders every number before every text: ``< ''`` is "a second"."""
_SPENT = " UNION ALL SELECT slot, 0, 0, usd FROM counts WHERE client = ?1 AND slot IN (?3, ?4)"
_BUCKETS = "SELECT slot, requests, tokens FROM counts WHERE client = ? AND slot > ? AND slot < ''"
_COUNT = (
    "INSERT INTO counts (client, slot, requests, tokens, usd) VALUES (?1, ?2, 1, ?3, 0.0){} "
    "ON CONFLICT (client, slot) DO UPDATE SET requests = requests + excluded.requests, "
    "tokens = tokens + excluded.tokens, usd = usd + excluded.usd"
)
_COUNT_WINDOW = _COUNT.format("")
_COUNT_BUDGET = _COUNT.format(", (?1, ?4, 0, 0, ?5), (?1, ?6, 0, 0, ?5)")


def connect(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection to a shared SQLite file, set up for several processes (WAL; waits up to
    ``timeout`` seconds for another process's lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
    return db


def create(db: sqlite3.Connection) -> None:
    """The tables, and the counts of a file an earlier version wrote moved into them (once: every
    worker does this at start, one at a time)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        for table, move in _MIGRATION:
            if table in tables:
                db.execute(move)
                db.execute(f"DROP TABLE {table}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SQLiteLimiter:
    """The :class:`proxycast.state.SharedState` of one machine.

    Args:
        path: the shared file (``limits.db`` in the data directory).
        clock: wall-clock seconds (shared by processes); tests pass their own.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._db = connect(path)
        create(self._db)
        # Most transactions find the file unlocked and take ~0.1 ms: they run on the event loop
        # (a thread hop costs more than that on a loaded machine). One that would have to wait
        # for another worker's transaction gives up at once (busy timeout 0) and is redone in a
        # thread, where waiting blocks no other request.
        self._fast = connect(path, timeout=0.0)
        # ... and never checkpoints the WAL itself (a checkpoint syncs the file: not on the event
        # loop); every CHECKPOINT_EVERY transactions one is run in a thread instead
        self._fast.execute("PRAGMA wal_autocheckpoint=0")
        self._since_checkpoint = 0
        self._clock = clock
        self._lock = trio.Lock()
        self._health = HealthBoard()
        self._failing = False

    async def admit(self, ask: Ask, limits: Limits) -> Admitted | Refused:
        await self._count_transaction()
        try:
            return self._admit(self._fast, ask, limits)
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
        async with self._lock:
            return await trio.to_thread.run_sync(self._admit, self._db, ask, limits)

    async def _count_transaction(self) -> None:
        """Every CHECKPOINT_EVERY transactions (admissions and settlements alike), checkpoint the WAL
        in a thread: the fast connection never does it itself, and the WAL must not grow forever."""
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            async with self._lock:
                await trio.to_thread.run_sync(self._db.execute, "PRAGMA wal_checkpoint(PASSIVE)")

    async def settle(self, admitted: Admitted, tokens: int, usd: float) -> None:
        if not admitted.settles:
            return  # an rpm limit only: nothing to correct
        try:
            self._settle(self._fast, admitted, tokens, usd)
        except sqlite3.OperationalError as exc:
            if not _locked(exc):
                raise
            async with self._lock:
                await trio.to_thread.run_sync(self._settle, self._db, admitted, tokens, usd)
        await self._count_transaction()

    def watch(self, pools: Mapping[str, KeyPool]) -> None:
        self._health.watch(pools)

    async def run(self) -> None:
        """Every 0.5 s (at once after a local rest): write the rests this worker saw to the file,
        read those every worker wrote. Until cancelled."""
        while True:
            await self._health.wait()
            rests = self._health.take()
            try:
                async with self._lock:
                    learned = await trio.to_thread.run_sync(self._sync, rests)
            except sqlite3.Error:
                self._health.keep(rests)
                if not self._failing:  # once, not every half second
                    log.exception("could not share the key health through %s", self._path)
                self._failing = True
                continue
            self._failing = False
            self._health.learn(learned)

    def _sync(self, rests: list[Rest]) -> list[Rest]:
        now, db = self._clock(), self._db
        if rests:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO health (label, until, reason) VALUES (?, ?, ?) "
                    "ON CONFLICT (label) DO UPDATE SET until = excluded.until, "
                    "reason = excluded.reason WHERE excluded.until > health.until",
                    [(label, now + seconds, reason) for label, seconds, reason in rests],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        rows = db.execute(
            "SELECT label, until - ?, reason FROM health WHERE until > ?", (now, now)
        ).fetchall()
        return [(label, left, reason) for label, left, reason in rows]

    async def aclose(self) -> None:
        async with self._lock:
            self._fast.close()
            self._db.close()

    def _admit(self, db: sqlite3.Connection, ask: Ask, limits: Limits) -> Admitted | Refused:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = self._decide(db, ask, limits)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _decide(self, db: sqlite3.Connection, ask: Ask, limits: Limits) -> Admitted | Refused:
        now, client = self._clock(), ask.client
        second = int(now)
        floor = second - WINDOW
        day, month, _, _ = window.periods(now)
        budgeted = window.budgeted(limits)
        if budgeted:
            rows = db.execute(_WINDOW + _SPENT, (client, floor, day, month)).fetchall()
        else:
            rows = db.execute(_WINDOW, (client, floor)).fetchall()
        _, oldest, requests, tokens = rows[0]
        if oldest is not None and oldest <= floor:  # buckets that left the window
            db.execute("DELETE FROM counts WHERE client = ? AND slot <= ?", (client, floor))
        # the sums as one bucket: all that the verdict, and the outcome of an admission, read
        buckets = [(second, int(requests), int(tokens))] if requests or tokens else []
        spent = {slot: usd for slot, _, _, usd in rows[1:]}
        refused = window.verdict(buckets, spent, now, ask, limits)
        if refused is None:
            if budgeted:
                db.execute(_COUNT_BUDGET, (client, second, ask.tokens, day, ask.usd, month))
            else:
                db.execute(_COUNT_WINDOW, (client, second, ask.tokens))
        else:  # when to retry depends on each second's counts
            buckets = window.current(db.execute(_BUCKETS, (client, floor)).fetchall(), now)
        return window.outcome(buckets, now, ask, limits, refused)

    def _settle(self, db: sqlite3.Connection, admitted: Admitted, tokens: int, usd: float) -> None:
        # One statement (atomic on its own: no BEGIN/COMMIT around it)
        client, ticket = admitted.client, admitted.ticket
        extra = tokens - admitted.tokens
        delta = usd - admitted.usd if admitted.periods else 0.0
        if extra and delta:
            day, month = admitted.periods
            db.execute(
                "UPDATE counts SET tokens = tokens + CASE WHEN slot = ?2 THEN ?3 ELSE 0 END, "
                "usd = usd + CASE WHEN slot = ?2 THEN 0.0 ELSE ?4 END "
                "WHERE client = ?1 AND slot IN (?2, ?5, ?6)",
                (client, ticket, extra, delta, day, month),
            )
        elif extra:
            db.execute(
                "UPDATE counts SET tokens = tokens + ? WHERE client = ? AND slot = ?",
                (extra, client, ticket),
            )
        elif delta:
            day, month = admitted.periods
            db.execute(
                "UPDATE counts SET usd = usd + ? WHERE client = ? AND slot IN (?, ?)",
                (delta, client, day, month),
            )


def _locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    return getattr(exc, "sqlite_errorcode", None) in (5, 6) or "locked" in str(exc)
