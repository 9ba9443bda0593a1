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


class _Window:
    """One client's last minute: its seconds (oldest first) and their running sums."""

    __slots__ = ("requests", "seconds", "tokens")

    def __init__(self) -> None:
        self.seconds: dict[int, list[int]] = {}
        """second -> [requests, tokens], in the order they were counted (oldest first)."""
        self.requests = 0
        self.tokens = 0

    def add(self, second: int, requests: int, tokens: int) -> None:
        seconds = self.seconds
        if second not in seconds and seconds and second < next(reversed(seconds)):
            # the wall clock stepped back: keep the seconds in order (prune stops at a recent one)
            seconds[second] = [0, 0]
            self.seconds = seconds = dict(sorted(seconds.items()))
        bucket = seconds.setdefault(second, [0, 0])
        bucket[0] += requests
        bucket[1] += tokens
        self.requests += requests
        self.tokens += tokens

    def prune(self, floor: int) -> None:
        """Drop the seconds that left the window (``<= floor``)."""
        seconds = self.seconds
        while seconds:
            first = next(iter(seconds))
            if first > floor:
                return
            requests, tokens = seconds.pop(first)
            self.requests -= requests
            self.tokens -= tokens


class MemoryLimiter:
    """The :class:`proxycast.state.Limiter` of one process. An admission costs the same however
    many requests the window holds (running sums per client).

    Args:
        clock: wall-clock seconds; tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.windows: dict[str, _Window] = defaultdict(_Window)
        """Per client: the seconds still in the window."""
        self.spend: dict[tuple[str, str], float] = defaultdict(float)
        """USD by (client, period key)."""

    async def admit(self, ask: Ask, limits: Limits) -> Admitted | Refused:
        return self.admit_now(ask, limits)

    def admit_now(self, ask: Ask, limits: Limits) -> Admitted | Refused:
        now, client = self._clock(), ask.client
        counts = self.windows[client]
        second = int(now)
        counts.prune(second - window.WINDOW)
        # the sums as one bucket: all that the verdict, and the outcome of an admission, read
        buckets = [(second, counts.requests, counts.tokens)] if counts.seconds else []
        day, month, _, _ = window.periods(now)
        spent = {
            day: self.spend.get((client, day), 0.0),
            month: self.spend.get((client, month), 0.0),
        }
        refused = window.verdict(buckets, spent, now, ask, limits)
        if refused is None:
            counts.add(second, 1, ask.tokens)
            if window.budgeted(limits):
                self.spend[client, day] += ask.usd
                self.spend[client, month] += ask.usd
            if len(self.spend) > 4 * 4096:  # old periods of many clients: keep the current ones
                for key in [k for k in self.spend if k[1] not in (day, month)]:
                    del self.spend[key]
        else:  # when to retry depends on each second's counts
            buckets = window.current([(s, r, t) for s, (r, t) in counts.seconds.items()], now)
        return window.outcome(buckets, now, ask, limits, refused)

    async def settle(self, admitted: Admitted, tokens: int, usd: float) -> None:
        self.settle_now(admitted, tokens, usd)

    def settle_now(self, admitted: Admitted, tokens: int, usd: float) -> None:
        if not admitted.settles:
            return
        counts = self.windows[admitted.client]
        if admitted.ticket in counts.seconds:
            counts.add(admitted.ticket, 0, tokens - admitted.tokens)
        for period in admitted.periods:
            self.spend[admitted.client, period] += usd - admitted.usd

    async def aclose(self) -> None:
        return None
