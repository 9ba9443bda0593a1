"""State shared by the workers that serve one gateway: the clients' limits (requests and tokens per
minute, USD per day and month) and the health of the providers' keys.

The :class:`Limiter` protocol is the seam; the exchange and the accounting do not know which one they
have. :mod:`proxycast.state.memory` counts in the worker's memory (``scope = "process"``: one worker),
:mod:`proxycast.state.sqlite` in one SQLite file that every worker of a machine opens (the default;
with ``--workers N`` it shares the key health too), and :mod:`proxycast.state.redis` in Redis, for
several instances (``redis_url``), limits and key health alike (:class:`SharedState`). An
admission is one atomic step (check every limit, then count the request and reserve its estimate),
so no two workers can both take the last unit of a limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

from proxycast.core.redact import without_password

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.upstream.keys import KeyPool


@attrs.frozen(kw_only=True)
class StateConfig:
    """``[state]``."""

    redis_url: str = attrs.field(default="", repr=lambda url: repr(without_password(url)))
    """``redis://[:PASSWORD@]HOST:PORT/DB``: limits and key health shared by every instance (a
    password is never shown: reprs, logs, errors)."""
    scope: str = "machine"
    """Without Redis: ``machine`` (the workers of one ``proxycast serve`` share one SQLite file; a
    restart keeps the counts) or ``process`` (each worker counts in memory: one worker only)."""
    redis_cluster: bool = False
    """``redis_url`` names a node of a Redis Cluster (every key has a hash tag: one slot a script)."""
    fail_open: bool = True
    """While Redis is unreachable: admit by per-instance limits (True) or refuse limited clients
    with a 503 (False)."""
    redis_prefix: str = "proxycast"
    """The first part of every Redis key (gateways that share one Redis use different ones)."""


@attrs.frozen(kw_only=True)
class Limits:
    """One client's limits (None: none of that kind)."""

    rpm: int | None = None
    tpm: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None


@attrs.frozen(kw_only=True)
class Ask:
    """What a request asks for at admission."""

    client: str
    tokens: int
    """Estimated input tokens."""
    usd: float
    """Estimated cost (of the estimated input)."""


@attrs.frozen(kw_only=True)
class Admitted:
    """An admitted request: what it reserved, settled after its answer."""

    client: str
    ticket: int
    """Where the reservation was counted (the SQLite limiter: the second of the admission)."""
    tokens: int
    usd: float
    periods: tuple[str, ...] = ()
    """The budget periods the reservation was counted in (settled there too)."""
    shared: bool = False
    """Counted in Redis (else where the limiter counts when Redis is unreachable)."""
    settles: bool = True
    """False when nothing depends on the actual usage (an ``rpm`` limit only)."""
    remaining_requests: int | None = None
    remaining_tokens: int | None = None


@attrs.frozen(kw_only=True)
class Refused:
    """An over-limit request: which limit, and when to retry."""

    what: str
    """``requests``, ``tokens``, ``usd_per_day`` or ``usd_per_month``."""
    limit: float
    retry_after: float
    """Seconds until the limit may admit it."""
    reset_requests: float = 0.0
    reset_tokens: float = 0.0
    remaining_requests: int | None = None
    remaining_tokens: int | None = None


class Limiter(Protocol):
    """Where limits are counted. Every call is atomic across the workers that share it."""

    async def admit(self, ask: Ask, limits: Limits) -> Admitted | Refused: ...

    async def settle(self, admitted: Admitted, tokens: int, usd: float) -> None:
        """Replace the reservation with what the request used (tokens, USD)."""
        ...

    async def aclose(self) -> None: ...


class SessionBoard(Protocol):
    """Where every instance finds the key that last answered a session (affinity, with Redis)."""

    async def session_unit(self, session: str) -> str | None:
        """The key (``provider#N``) that last answered ``session``, None when none did lately."""
        ...

    def remember_session(self, session: str, unit: str) -> None:
        """``unit`` answered ``session`` (written in the background)."""
        ...


class SharedState(Limiter, Protocol):
    """A limiter that also shares the providers' key health between workers (the machine's SQLite
    file, Redis)."""

    def watch(self, pools: Mapping[str, KeyPool]) -> None:
        """Share the health of these key pools (those of an earlier call are forgotten)."""
        ...

    async def run(self) -> None:
        """Sync the key health, until cancelled."""
        ...
