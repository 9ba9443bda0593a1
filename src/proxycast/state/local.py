"""The limits of a gateway with one worker (the default): decided in the worker's memory, as fast as
``scope = "process"``, and written behind to ``limits.db`` in the data directory (every
:data:`FLUSH_SECONDS`, and at the graceful drain), so a restart neither resets a day's spend nor
forgets the last minute's requests.

One worker alone decides, so its memory is exact; a transaction on the file for every admission (what
:mod:`proxycast.state.sqlite` does so that several workers share one count) cost ~0.12 ms a request
that one worker does not need. The file keeps the same table as the SQLite limiter's, and the counts
are added to it (never overwritten), so a gateway restarted with ``--workers N`` reads them too.
A worker killed without its drain loses at most the last :data:`FLUSH_SECONDS` of counts.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING

import trio

from proxycast.state import Admitted, window
from proxycast.state.memory import MemoryLimiter
from proxycast.state.sqlite import connect, create

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from proxycast.state import Ask, Limits, Refused

log = logging.getLogger("proxycast")

FLUSH_SECONDS = 0.5

_ADD = (
    "INSERT INTO counts (client, slot, requests, tokens, usd) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (client, slot) DO UPDATE SET requests = requests + excluded.requests, "
    "tokens = tokens + excluded.tokens, usd = usd + excluded.usd"
)


class LocalLimiter:
    """The :class:`proxycast.state.Limiter` of a one-worker gateway.

    Args:
        path: the file the counts are written to, and read from at start.
        clock: wall-clock seconds; tests pass their own.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._memory = MemoryLimiter(clock)
        self._db = connect(path)
        create(self._db)
        self._load()
        # what was counted in memory and not yet written: additions, which commute
        self._window: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self._spend: dict[tuple[str, str], float] = defaultdict(float)
        self._lock = trio.Lock()
        self._failing = False
        self._counted = trio.Event()
        """Set when something is counted: :meth:`run` sleeps until then (a gateway whose clients
        have no limits, the default, never wakes it)."""

    def _load(self) -> None:
        """The window's seconds and the current budget periods, as the file has them."""
        now = self._clock()
        day, month, _, _ = window.periods(now)
        rows = self._db.execute(
            "SELECT client, slot, requests, tokens, usd FROM counts "
            "WHERE (slot > ? AND slot < '') OR slot IN (?, ?) ORDER BY slot",
            (int(now) - window.WINDOW, day, month),
        )
        for client, slot, requests, tokens, usd in rows:
            if isinstance(slot, int):
                self._memory.windows[client].add(slot, requests, tokens)
            else:
                self._memory.spend[client, slot] = usd

    async def admit(self, ask: Ask, limits: Limits) -> Admitted | Refused:
        outcome = self._memory.admit_now(ask, limits)
        if isinstance(outcome, Admitted):
            counted = self._window[ask.client, outcome.ticket]
            counted[0] += 1
            counted[1] += ask.tokens
            for period in outcome.periods:
                self._spend[ask.client, period] += ask.usd
            self._counted.set()
        return outcome

    async def settle(self, admitted: Admitted, tokens: int, usd: float) -> None:
        if not admitted.settles:
            return
        self._memory.settle_now(admitted, tokens, usd)
        if tokens != admitted.tokens:
            self._window[admitted.client, admitted.ticket][1] += tokens - admitted.tokens
        for period in admitted.periods:
            self._spend[admitted.client, period] += usd - admitted.usd
        self._counted.set()

    async def run(self) -> None:
        """Write the counts behind, :data:`FLUSH_SECONDS` after the first one counted since the
        last write. Until cancelled."""
        while True:
            await self._counted.wait()
            await trio.sleep(FLUSH_SECONDS)
            self._counted = trio.Event()
            # a write under way finishes (the drain writes what is left)
            with trio.CancelScope(shield=True):
                await self.flush()
            if self._window or self._spend:  # not written (the file failing): the next try
                self._counted.set()

    async def flush(self) -> None:
        """Add what was counted since the last write to the file (one transaction, in a thread).
        When the file cannot be written, or the write never started (cancelled), the counts wait
        for the next attempt (a failure is logged once)."""
        async with self._lock:
            if not (self._window or self._spend):
                return
            counted, self._window = self._window, defaultdict(lambda: [0, 0])
            spent, self._spend = self._spend, defaultdict(float)
            try:
                await trio.to_thread.run_sync(self._write, counted, spent)
            except BaseException as exc:
                for key, (requests, tokens) in counted.items():
                    self._window[key][0] += requests
                    self._window[key][1] += tokens
                for period, usd in spent.items():
                    self._spend[period] += usd
                if not isinstance(exc, Exception):
                    raise
                if not self._failing:
                    log.exception("could not write the limits' counts to %s", self._path)
                self._failing = True
            else:
                self._failing = False

    def _write(
        self, counted: dict[tuple[str, int], list[int]], spent: dict[tuple[str, str], float]
    ) -> None:
        floor = int(self._clock()) - window.WINDOW
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                _ADD,
                [
                    (client, second, requests, tokens, 0.0)
                    for (client, second), (requests, tokens) in counted.items()
                    if second > floor
                ],
            )
            db.executemany(
                _ADD, [(client, period, 0, 0, usd) for (client, period), usd in spent.items()]
            )
            db.execute("DELETE FROM counts WHERE slot <= ? AND slot < ''", (floor,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    async def aclose(self) -> None:
        """Write what is left, then close the file."""
        with trio.CancelScope(shield=True):
            await self.flush()
            async with self._lock:
                self._db.close()
