"""Limits in one SQLite file (WAL) that every worker of the machine opens: an admission is one
``BEGIN IMMEDIATE`` transaction (SQLite's write lock, held by one process at a time), so the check and
the count happen as one step across workers, and a limit is exact however many workers there are.

The file persists across restarts: a restart neither resets a day's spend nor forgets the last
minute's requests. A transaction runs on the event loop when the file is free (it takes ~0.1 ms),
and in a worker thread when another worker holds the lock (the event loop never waits for it).
"""

from __future__ import annotations

import functools
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import attrs
import trio

from proxycast.state import Admitted, Refused

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from proxycast.state import Ask, Limits

WINDOW = 60
"""Seconds of the sliding window of ``rpm`` and ``tpm``."""
CHECKPOINT_EVERY = 512
"""Transactions between two WAL checkpoints (run in a thread)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (client TEXT NOT NULL, second INTEGER NOT NULL,
                                    requests INTEGER NOT NULL, tokens INTEGER NOT NULL,
                                    PRIMARY KEY (client, second));
CREATE TABLE IF NOT EXISTS spend (client TEXT NOT NULL, period TEXT NOT NULL, usd REAL NOT NULL,
                                  PRIMARY KEY (client, period));
"""
# The window is kept as one row per client and second (requests admitted, tokens counted): an
# admission reads at most 60 rows whatever the rate, and a request leaves the window 60 s after
# the second it was admitted in (so the window is exact to the second, as Retry-After is).


def connect(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection to a shared SQLite file, set up for several processes (WAL; waits up to
    ``timeout`` seconds for another process's lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
    return db


@functools.lru_cache(maxsize=4)
def _day(day: int) -> tuple[str, str, float, float]:
    """The keys of UTC day number ``day`` and of its month, and when each ends (Unix seconds)."""
    start = datetime.fromtimestamp(day * 86400, timezone.utc)
    month = start.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return (
        "d:" + start.strftime("%Y-%m-%d"),
        "m:" + month.strftime("%Y-%m"),
        (day + 1) * 86400.0,
        next_month.timestamp(),
    )


def _periods(now: float) -> tuple[str, str, float, float]:
    """Today's and this month's keys (UTC) and the seconds until each ends."""
    day, month, day_end, month_end = _day(int(now // 86400))
    return day, month, day_end - now, month_end - now


class SQLiteLimiter:
    """The :class:`proxycast.state.Limiter` of one machine.

    Args:
        path: the shared file (``limits.db`` in the data directory).
        clock: wall-clock seconds (shared by processes); tests pass their own.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._db = connect(path)
        self._db.executescript(_SCHEMA)
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
        rows = db.execute(
            "SELECT second, requests, tokens FROM buckets WHERE client = ? ORDER BY second",
            (client,),
        ).fetchall()
        if rows and rows[0][0] <= second - WINDOW:  # buckets that left the window
            db.execute(
                "DELETE FROM buckets WHERE client = ? AND second <= ?", (client, second - WINDOW)
            )
            rows = [r for r in rows if r[0] > second - WINDOW]
        count = sum(r[1] for r in rows)
        used = sum(r[2] for r in rows)
        reset_requests = rows[0][0] + WINDOW - now if rows else 0.0
        remaining_requests = None if limits.rpm is None else limits.rpm - count
        remaining_tokens = None if limits.tpm is None else max(0, limits.tpm - used)
        refusal: Refused | None = None
        if limits.rpm is not None and count >= limits.rpm:
            rpm = limits.rpm
            wait = _expiry(rows, now, lambda freed, _: count - freed < rpm)
            refusal = _with_wait(Refused(what="requests", limit=limits.rpm, retry_after=0), wait)
        elif limits.tpm is not None and used + ask.tokens > limits.tpm:
            wait = float(WINDOW)
            if ask.tokens <= limits.tpm:  # else it never fits: a minute is as good as any
                tpm = limits.tpm
                wait = _expiry(rows, now, lambda _, freed_t: used - freed_t + ask.tokens <= tpm)
            refusal = _with_wait(Refused(what="tokens", limit=limits.tpm, retry_after=0), wait)
        day, month, day_left, month_left = _periods(now)
        budgeted = limits.usd_per_day is not None or limits.usd_per_month is not None
        spent: dict[str, float] = {}
        if budgeted and refusal is None:
            spent = dict(
                db.execute(
                    "SELECT period, usd FROM spend WHERE client = ? AND period IN (?, ?)",
                    (client, day, month),
                ).fetchall()
            )
        for period, limit, left, what in (
            (day, limits.usd_per_day, day_left, "usd_per_day"),
            (month, limits.usd_per_month, month_left, "usd_per_month"),
        ):
            if refusal is not None or limit is None:
                continue
            so_far = spent.get(period, 0.0)
            if so_far >= limit or so_far + ask.usd > limit:
                refusal = Refused(what=what, limit=limit, retry_after=max(1.0, left))
        if refusal is not None:
            return _evolve(
                refusal,
                reset_requests=reset_requests,
                remaining_requests=remaining_requests,
                remaining_tokens=remaining_tokens,
            )
        db.execute(
            "INSERT INTO buckets (client, second, requests, tokens) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (client, second) DO UPDATE SET requests = requests + 1, "
            "tokens = tokens + excluded.tokens",
            (client, second, ask.tokens),
        )
        if budgeted:
            db.execute(
                "INSERT INTO spend (client, period, usd) VALUES (?, ?, ?), (?, ?, ?) "
                "ON CONFLICT (client, period) DO UPDATE SET usd = usd + excluded.usd",
                (client, day, ask.usd, client, month, ask.usd),
            )
        return Admitted(
            client=client,
            ticket=second,
            tokens=ask.tokens,
            usd=ask.usd,
            periods=(day, month) if budgeted else (),
            settles=budgeted or limits.tpm is not None,
            remaining_requests=None if remaining_requests is None else remaining_requests - 1,
            remaining_tokens=(
                None if remaining_tokens is None else max(0, remaining_tokens - ask.tokens)
            ),
        )

    def _settle(self, db: sqlite3.Connection, admitted: Admitted, tokens: int, usd: float) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            if tokens != admitted.tokens:
                db.execute(
                    "UPDATE buckets SET tokens = tokens + ? WHERE client = ? AND second = ?",
                    (tokens - admitted.tokens, admitted.client, admitted.ticket),
                )
            delta = usd - admitted.usd
            if delta and admitted.periods:
                day, month = admitted.periods
                db.execute(
                    "UPDATE spend SET usd = usd + ? WHERE client = ? AND period IN (?, ?)",
                    (delta, admitted.client, day, month),
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _expiry(
    rows: list[tuple[int, int, int]], now: float, fits: Callable[[int, int], bool]
) -> float:
    """Seconds until enough of the window's buckets expire that ``fits(requests freed, tokens
    freed)``."""
    freed_requests = freed_tokens = 0
    for second, requests, tokens in rows:
        freed_requests += requests
        freed_tokens += tokens
        if fits(freed_requests, freed_tokens):
            return second + WINDOW - now
    return float(WINDOW)


def _locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    return getattr(exc, "sqlite_errorcode", None) in (5, 6) or "locked" in str(exc)


def _with_wait(refusal: Refused, wait: float) -> Refused:
    return _evolve(refusal, retry_after=max(0.001, wait), reset_tokens=max(0.0, wait))


def _evolve(refusal: Refused, **changes: object) -> Refused:
    return attrs.evolve(refusal, **changes)  # type: ignore[arg-type]
