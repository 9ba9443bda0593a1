"""Limits counted in the worker's memory (``[state] scope = "process"``): exact for one worker, the
fastest, and forgotten at a restart. Also what :mod:`proxycast.state.redis` counts in while Redis
is unreachable, so that the counts can be replayed into Redis when it returns."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

from proxycast.state import window

if TYPE_CHECKING:
    from collections.abc import Callable

    from proxycast.state import Admitted, Ask, Limits, Refused


class MemoryLimiter:
    """The :class:`proxycast.state.Limiter` of one process.

    Args:
        clock: wall-clock seconds; tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.buckets: dict[str, dict[int, list[int]]] = defaultdict(dict)
        """Per client: second -> [requests, tokens] (the seconds still in the window)."""
        self.spend: dict[tuple[str, str], float] = defaultdict(float)
        """USD by (client, period key)."""

    async def admit(self, ask: Ask, limits: Limits) -> Admitted | Refused:
        return self.admit_now(ask, limits)

    def admit_now(self, ask: Ask, limits: Limits) -> Admitted | Refused:
        now, client = self._clock(), ask.client
        seconds = self.buckets[client]
        floor = int(now) - window.WINDOW
        for second in [s for s in seconds if s <= floor]:
            del seconds[second]
        buckets = window.current([(s, r, t) for s, (r, t) in seconds.items()], now)
        day, month, _, _ = window.periods(now)
        spent = {
            day: self.spend.get((client, day), 0.0),
            month: self.spend.get((client, month), 0.0),
        }
        refused = window.verdict(buckets, spent, now, ask, limits)
        if refused is None:
            bucket = seconds.setdefault(int(now), [0, 0])
            bucket[0] += 1
            bucket[1] += ask.tokens
            if window.budgeted(limits):
                self.spend[client, day] += ask.usd
                self.spend[client, month] += ask.usd
            if len(self.spend) > 4 * 4096:  # old periods of many clients: keep the current ones
                for key in [k for k in self.spend if k[1] not in (day, month)]:
                    del self.spend[key]
        return window.outcome(buckets, now, ask, limits, refused)

    async def settle(self, admitted: Admitted, tokens: int, usd: float) -> None:
        self.settle_now(admitted, tokens, usd)

    def settle_now(self, admitted: Admitted, tokens: int, usd: float) -> None:
        if not admitted.settles:
            return
        bucket = self.buckets[admitted.client].get(admitted.ticket)
        if bucket is not None:
            bucket[1] += tokens - admitted.tokens
        for period in admitted.periods:
            self.spend[admitted.client, period] += usd - admitted.usd

    async def aclose(self) -> None:
        return None
