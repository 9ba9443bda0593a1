"""The plan of one request's attempts: which provider and key to try next, what a failure means for
the key, and what the client is told when nothing is left. Pure data and decisions; the exchange runs
it (README, "Resilience").

The order: the request's targets in turn (its own providers, then its fallbacks); within a target,
its healthy keys in rotation. A failed attempt rests its key (or benches its provider) as the failure
says, and the plan moves on while the failure is retryable and attempts remain (``1 + routing.retries``
at most). What rests a key at once is evidence about the key: 429, 529 (or a 503 with ``Retry-After``),
any ``Retry-After``, 401/403, a provider that cannot be reached. A server error or a timeout may be the
request's own doing (a local server answers a request it cannot render with a 500): it counts towards
``routing.consecutive_fails`` on that key (``KeyPool.failed``) and rests it only at that many in a row.
"""

from __future__ import annotations

import logging
import math
import os

import attrs

from proxycast.config import RoutingConfig
from proxycast.core.routing import Route
from proxycast.errors import (
    ProxycastError,
    RateLimitedError,
    UpstreamConnectError,
    UpstreamCredentialsError,
    UpstreamError,
    UpstreamsRestingError,
    UpstreamTimeoutError,
)
from proxycast.upstream.keys import rate_limited, retry_after
from proxycast.upstream.provider import Provider

log = logging.getLogger("proxycast")

NEVER_RETRIED = frozenset({400, 404, 413, 422})
"""The request itself is at fault: another key or target would answer the same."""

KEY_STATUSES = frozenset({429, 529})
"""Statuses that say the key (or the upstream behind it) needs a rest, whatever the request: a rate
limit, an overload. Other retried statuses rest it only after ``consecutive_fails`` in a row."""


@attrs.frozen(eq=False)
class Attempt:
    """One try: a target (provider and upstream model) and one of the provider's keys."""

    route: Route
    provider: Provider
    key: int

    @property
    def label(self) -> str:
        return self.provider.pool.label(self.key)


@attrs.define(eq=False)
class Plan:
    """The attempts of one request.

    Args:
        targets: the request's targets in order, each with its provider.
        routing: the ``[routing]`` settings.
    """

    targets: list[tuple[Route, Provider]]
    routing: RoutingConfig
    _made: dict[Attempt, str] = attrs.field(factory=dict)
    _last: ProxycastError | None = None
    preferred: list[tuple[Route, Provider, int]] = attrs.field(factory=list)
    """Keys to try first, in order (a strategy's ranking: ``proxycast.core.selection``); the plan
    goes on in its own order after them."""

    @property
    def made(self) -> int:
        return len(self._made)

    @property
    def outcomes(self) -> list[str]:
        """``provider#N: what happened``, one per attempt made, in order."""
        return [f"{attempt.label}: {outcome}" for attempt, outcome in self._made.items()]

    @property
    def results(self) -> list[tuple[Attempt, str]]:
        """Each attempt made and what happened (``pending`` while it runs), in order."""
        return list(self._made.items())

    def next(self) -> Attempt | None:
        """The next attempt, or None when attempts are used up or no key of any target is healthy."""
        if self.made >= 1 + self.routing.retries:
            return None
        while self.preferred:
            route, provider, first = self.preferred.pop(0)
            if provider.pool.available(first) and not any(
                a.provider is provider and a.key == first for a in self._made
            ):
                attempt = Attempt(route, provider, first)
                self._made[attempt] = "pending"
                return attempt
        for route, provider in self.targets:
            tried = frozenset(a.key for a in self._made if a.provider is provider)
            key = provider.pool.pick(tried)
            if key is not None:
                attempt = Attempt(route, provider, key)
                self._made[attempt] = "pending"
                return attempt
        return None

    def succeeded(self, attempt: Attempt, status: int = 200) -> None:
        self._record(attempt, str(status))
        attempt.provider.pool.succeeded(attempt.key)

    def failed(self, attempt: Attempt, error: ProxycastError) -> bool:
        """Record a failed attempt, rest its key as the failure says; True if the request may go on
        to another attempt."""
        pool, settings = attempt.provider.pool, self.routing
        self._last = error
        status = error.status
        if isinstance(error, UpstreamConnectError):
            self._record(attempt, "unreachable")
            pool.bench(settings.cooldown, f"unreachable ({_os_reason(error)})")
            return True
        if isinstance(error, UpstreamCredentialsError):
            self._record(attempt, "key refused")
            pool.rest(attempt.key, settings.max_cooldown, "key refused")
            log.warning(
                "provider key %s was refused by the upstream; it sits out %g s",
                attempt.label,
                settings.max_cooldown,
            )
            return True
        if isinstance(error, UpstreamTimeoutError):
            self._record(attempt, "timeout")
            pool.failed(attempt.key, settings.consecutive_fails, settings.cooldown, "timeout")
            return True
        self._record(attempt, str(status))
        if not isinstance(error, UpstreamError) or status in NEVER_RETRIED:
            return False
        if status in settings.retry_on or (status == 503 and 529 in settings.retry_on):
            asked = retry_after(error.headers)
            reason = f"upstream {status}"
            if asked is not None or status in KEY_STATUSES or _overloaded(error):
                rest = settings.cooldown if asked is None else asked
                pool.rest(attempt.key, min(rest, settings.max_cooldown), reason)
            else:  # perhaps this request's fault alone: only a run of them rests the key
                pool.failed(attempt.key, settings.consecutive_fails, settings.cooldown, reason)
            return True
        return False

    def _record(self, attempt: Attempt, outcome: str) -> None:
        self._made[attempt] = outcome

    def exhausted(self) -> ProxycastError:
        """What the client gets when no attempt succeeded: the last upstream error, the attempts
        listed; or, when none could be made (every key resting), a 429 when the upstream's rate
        limits are why, else a 503 naming the last failure, either saying when the first key is
        back."""
        if self._last is not None:
            error = self._last
            if self.made > 1:
                error.message += f" (attempts: {', '.join(self.outcomes)})"
            return error
        now = min(p.pool.clock() for _, p in self.targets)
        back = min(p.pool.back_at() for _, p in self.targets)
        wait = max(1, math.ceil(back - now))
        pools = list(dict.fromkeys(p.pool for _, p in self.targets))
        resting = ", ".join(f"{label}: {why}" for pool in pools for label, _, why in pool.status())
        headers = {"retry-after": str(wait)}
        if not all(rate_limited(why) for pool in pools for _, _, why in pool.resting()):
            rests = [rest for pool in pools if (rest := pool.last_rest()) is not None]
            _, label, why = max(rests, default=(0.0, "?", "?"))
            return UpstreamsRestingError(
                f"No upstream can take this request: every provider key that serves this model is "
                f"resting after upstream failures, the last {label}: {why} ({resting}); retry in "
                f"{wait} s.",
                headers=headers,
            )
        return RateLimitedError(
            f"Every provider key that serves this model is sitting out after upstream failures "
            f"({resting}); retry in {wait} s.",
            code="rate_limit_exceeded",
            headers=headers,
        )


def _os_reason(error: BaseException) -> str:
    """Why a connection failed, as the system said it (``connection refused``, ``name or service
    not known``), found among the causes of ``error`` (trio groups one per address tried)."""
    seen: list[BaseException] = [error]
    for exc in seen:
        if isinstance(exc, OSError) and exc.errno and exc.errno > 0:  # trio adds the address
            return os.strerror(exc.errno).lower()
        if isinstance(exc, OSError) and exc.strerror:  # getaddrinfo's errors (negative numbers)
            return str(exc.strerror).lower()
        if len(seen) < 64:  # a chain is short; a cycle must not loop
            seen += [e for e in (exc.__cause__, exc.__context__) if e is not None]
            seen += getattr(exc, "exceptions", ())
    return "no connection"


def _overloaded(error: UpstreamError) -> bool:
    """Anthropic's 529 ``overloaded_error`` (a 503 once read, or an error event of a 200 stream)."""
    return error.native is not None and error.native[1] == "overloaded_error"
