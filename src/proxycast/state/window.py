"""The decision of an admission, shared by every limiter (in-process, SQLite, Redis): given the
client's sliding window and what it spent, is the request admitted, and what do the rate-limit
headers say. Pure functions, no I/O: each limiter reads its counts, calls :func:`verdict` (or, for
Redis, runs the same test in its Lua script) and builds the answer with :func:`outcome`.

The window is kept as buckets of one second (requests admitted, tokens counted): a request leaves it
:data:`WINDOW` seconds after the second it was admitted in, so the window is exact to the second, as
``Retry-After`` is.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import attrs

from proxycast.state import Admitted, Refused

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from proxycast.state import Ask, Limits

WINDOW = 60
"""Seconds of the sliding window of ``rpm`` and ``tpm``."""

Bucket = tuple[int, int, int]
"""``(second, requests, tokens)``."""


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


def periods(now: float) -> tuple[str, str, float, float]:
    """Today's and this month's keys (UTC) and the seconds until each ends."""
    day, month, day_end, month_end = _day(int(now // 86400))
    return day, month, day_end - now, month_end - now


def budgeted(limits: Limits) -> bool:
    return limits.usd_per_day is not None or limits.usd_per_month is not None


def current(buckets: Sequence[Bucket], now: float) -> list[Bucket]:
    """The buckets still in the window at ``now``, oldest first."""
    floor = int(now) - WINDOW
    return sorted(b for b in buckets if b[0] > floor)


def verdict(
    buckets: Sequence[Bucket], spent: Mapping[str, float], now: float, ask: Ask, limits: Limits
) -> str | None:
    """Which limit refuses the request (``requests``, ``tokens``, ``usd_per_day``,
    ``usd_per_month``), None when it is admitted. ``buckets``: the window (:func:`current`);
    ``spent``: USD by period key (:func:`periods`)."""
    if limits.rpm is not None and sum(b[1] for b in buckets) >= limits.rpm:
        return "requests"
    if limits.tpm is not None and sum(b[2] for b in buckets) + ask.tokens > limits.tpm:
        return "tokens"
    day, month, _, _ = periods(now)
    for period, limit, what in (
        (day, limits.usd_per_day, "usd_per_day"),
        (month, limits.usd_per_month, "usd_per_month"),
    ):
        so_far = spent.get(period, 0.0)
        if limit is not None and (so_far >= limit or so_far + ask.usd > limit):
            return what
    return None


def outcome(
    buckets: Sequence[Bucket], now: float, ask: Ask, limits: Limits, refused: str | None
) -> Admitted | Refused:
    """The answer to an admission whose verdict is ``refused``: what it reserved, or which limit
    refused it and when to retry; with the remaining requests and tokens for the headers.
    ``buckets``: the window before the admission."""
    count = sum(b[1] for b in buckets)
    used = sum(b[2] for b in buckets)
    remaining_requests = None if limits.rpm is None else limits.rpm - count
    remaining_tokens = None if limits.tpm is None else max(0, limits.tpm - used)
    day, month, day_left, month_left = periods(now)
    if refused is None:
        spends = budgeted(limits)
        return Admitted(
            client=ask.client,
            ticket=int(now),
            tokens=ask.tokens,
            usd=ask.usd,
            periods=(day, month) if spends else (),
            settles=spends or limits.tpm is not None,
            remaining_requests=None if remaining_requests is None else remaining_requests - 1,
            remaining_tokens=(
                None if remaining_tokens is None else max(0, remaining_tokens - ask.tokens)
            ),
        )
    if refused == "requests" and limits.rpm is not None:
        rpm = limits.rpm
        wait = _expiry(buckets, now, lambda freed, _: count - freed < rpm)
        limit: float = rpm
    elif refused == "tokens" and limits.tpm is not None:
        tpm, wait, limit = limits.tpm, float(WINDOW), limits.tpm
        if ask.tokens <= tpm:  # else it never fits: a minute is as good as any
            wait = _expiry(buckets, now, lambda _, freed: used - freed + ask.tokens <= tpm)
    else:
        limit = (limits.usd_per_day if refused == "usd_per_day" else limits.usd_per_month) or 0.0
        left = day_left if refused == "usd_per_day" else month_left
        wait = -1.0
    return Refused(
        what=refused,
        limit=limit,
        retry_after=max(1.0, left) if wait < 0 else max(0.001, wait),
        reset_requests=buckets[0][0] + WINDOW - now if buckets else 0.0,
        reset_tokens=max(0.0, wait),
        remaining_requests=remaining_requests,
        remaining_tokens=remaining_tokens,
    )


def _expiry(buckets: Sequence[Bucket], now: float, fits: Callable[[int, int], bool]) -> float:
    """Seconds until enough of the window's buckets expire that ``fits(requests freed, tokens
    freed)``."""
    freed_requests = freed_tokens = 0
    for second, requests, tokens in buckets:
        freed_requests += requests
        freed_tokens += tokens
        if fits(freed_requests, freed_tokens):
            return second + WINDOW - now
    return float(WINDOW)


def evolve(value: Admitted, **changes: object) -> Admitted:
    return attrs.evolve(value, **changes)  # type: ignore[arg-type]
