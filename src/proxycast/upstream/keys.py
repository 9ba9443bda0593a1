"""A provider's keys and their health: which key the next request uses, which sit out and until when.

Keys are named ``provider#N`` (from 1, in configuration order) wherever they are reported; the key itself
never is. A key sits out after a failure that says the key (or the upstream behind it) needs a rest:
a rate limit, an overload or a ``Retry-After`` for ``cooldown`` seconds (or what the upstream asked, up
to ``max_cooldown``), a refused key (401/403) for ``max_cooldown``. A provider that cannot be reached at
all sits out as a whole. A server error or a timeout says less: one bad request (a local server answers
a validation error with a 500) must not bench a model for every client, so it rests the key only after
``consecutive_fails`` of them in a row on that key, a success resetting the count (the rule of Envoy's
outlier detection). A later failure never shortens a rest; keys come back by themselves when it ends.

Each rest keeps its reason (``upstream 429``, ``unreachable (connection refused)``, ...), shared with
the other workers with the rest itself: when every key is resting, a client is told of a rate limit
only when the upstream's own rate limits are why (:func:`rate_limited`).

What the upstream's rate-limit headers say is left of a key (:meth:`KeyPool.observe`, from every
answer) is kept with it: a key with no request or no token left sits out until its window resets
(``quota exhausted``, a rate limit too), so that it does not collect a 429 first.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.formats.quota import Allowance, Quota

log = logging.getLogger("proxycast")


@attrs.frozen
class Left:
    """What is left of one limit of a key, as the upstream last said."""

    remaining: int
    limit: int | None
    reset: float | None
    """When the window is full again (the pool's clock); None: not said."""

    def at(self, now: float) -> int:
        """The remaining count at ``now``: the limit once the window has reset (when known)."""
        if self.reset is not None and self.reset <= now and self.limit is not None:
            return self.limit
        return self.remaining


@attrs.define
class _Key:
    until: float = 0.0
    """Out of rotation until this time (the pool's clock)."""
    reason: str = ""
    since: float = 0.0
    """When the rest started or last grew (here, or when this worker learned of it)."""
    fails: int = 0
    """Server errors and timeouts in a row on this key (here, in this worker), none since a success."""
    requests: Left | None = None
    tokens: Left | None = None
    """What the upstream last said is left of the key's limits (here, in this worker)."""


@attrs.define(eq=False)
class KeyPool:
    """The keys of one provider (one anonymous key for an upstream that needs none).

    Args:
        provider: the provider's name, for labels.
        size: how many keys it has (0: the upstream needs none).
        clock: seconds, monotonic; tests pass their own.
    """

    provider: str
    size: int
    clock: Callable[[], float] = time.monotonic
    fingerprints: tuple[str, ...] = ()
    """A short digest of each key (shared state names a key by it too, so that a rest follows the
    key, not its position in the list)."""
    listener: Callable[[int | None, float, str], None] | None = None
    """Told of each rest that starts or grows here: ``(key index, None for the whole provider,
    seconds, reason)`` (shared state passes it on to the other instances)."""
    watcher: Callable[[int, Left | None, Left | None], None] | None = None
    """Told of what each answer's rate-limit headers say is left of a key: ``(key index, requests,
    tokens)`` (the metrics)."""
    _keys: list[_Key] = attrs.field(init=False)
    _bench: _Key = attrs.field(init=False, factory=_Key)
    _next: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._keys = [_Key() for _ in range(max(1, self.size))]

    def label(self, index: int) -> str:
        return f"{self.provider}#{index + 1}"

    def available(self, index: int) -> bool:
        now = self.clock()
        return self._bench.until <= now and self._keys[index].until <= now

    def pick(self, exclude: frozenset[int] = frozenset()) -> int | None:
        """The next healthy key in rotation, not in ``exclude``; None when none is."""
        count = len(self._keys)
        for step in range(count):
            index = (self._next + step) % count
            if index not in exclude and self.available(index):
                self._next = (index + 1) % count
                return index
        return None

    def back_at(self) -> float:
        """When the first key will be usable again (now, if one is)."""
        return max(self._bench.until, min(k.until for k in self._keys))

    def rest(self, index: int, seconds: float, reason: str) -> None:
        """Take a key out of rotation for ``seconds`` (never shortening a longer rest)."""
        if self.learn(index, seconds, reason) and self.listener is not None:
            self.listener(index, seconds, reason)

    def failed(self, index: int, threshold: int, seconds: float, reason: str) -> bool:
        """A server error or a timeout on a key: counted, and the key rests ``seconds`` once it is
        the ``threshold``-th in a row (the count then starts again). True when it rests."""
        key = self._keys[index]
        key.fails += 1
        if key.fails < threshold:
            return False
        key.fails = 0
        self.rest(index, seconds, f"{reason} ({threshold} in a row)" if threshold > 1 else reason)
        return True

    def observe(self, index: int, quota: Quota) -> None:
        """What an answer's rate-limit headers said is left of key ``index``: kept, and a key with
        no request or no token left rests until that limit resets (shared like every rest)."""
        key, now = self._keys[index], self.clock()
        for kind in ("requests", "tokens"):
            allowance: Allowance | None = getattr(quota, kind)
            if allowance is None:
                continue
            reset = None if allowance.reset is None else now + allowance.reset
            setattr(key, kind, Left(allowance.remaining, allowance.limit, reset))
            if allowance.remaining <= 0 and allowance.reset:
                seconds = min(allowance.reset, MAX_QUOTA_REST)
                why = f"{QUOTA_EXHAUSTED} (no {kind} left, resets in {math.ceil(seconds)} s)"
                self.rest(index, seconds, why)
        if self.watcher is not None:
            self.watcher(index, key.requests, key.tokens)

    def quotas(self) -> list[tuple[str, Left | None, Left | None]]:
        """``(label, requests left, tokens left)`` of each key, as the upstream last said."""
        return [(self.label(i), k.requests, k.tokens) for i, k in enumerate(self._keys)]

    def succeeded(self, index: int) -> None:
        """A key answered: its count of failures in a row starts again."""
        self._keys[index].fails = 0

    def bench(self, seconds: float, reason: str) -> None:
        """Take the whole provider out of rotation (it could not be reached)."""
        if self.learn(None, seconds, reason) and self.listener is not None:
            self.listener(None, seconds, reason)

    def learn(self, index: int | None, seconds: float, reason: str) -> bool:
        """Rest a key (None: the whole provider) for ``seconds`` as another instance saw it must,
        without telling the listener; True when the rest started or grew."""
        key = self._bench if index is None else self._keys[index]
        until = self.clock() + seconds
        if until <= key.until:
            return False
        key.until, key.reason, key.since = until, reason, self.clock()
        return True

    def carry(self, old: KeyPool, same_upstream: bool) -> dict[int, int]:
        """Take over the health of ``old``, the pool of the same provider before a reload: each key
        found again by its fingerprint (by its place, for credentials without one, when their
        number is unchanged) keeps its rest and its failures in a row; the provider's own rest
        when its upstream is the same. Returns old index -> new index of the keys found again."""
        if self.fingerprints or old.fingerprints:
            where = {f: i for i, f in enumerate(self.fingerprints)}
            found = {i: where[f] for i, f in enumerate(old.fingerprints) if f in where}
        else:
            found = {i: i for i in range(len(old._keys))} if old.size == self.size else {}
        for was, now in found.items():
            self._keys[now] = attrs.evolve(old._keys[was])
        if same_upstream:
            self._bench = attrs.evolve(old._bench)
        return found

    def left(self, index: int | None) -> tuple[float, str]:
        """Seconds until a key (None: the provider as a whole) is back (0: now), and why it rests."""
        key = self._bench if index is None else self._keys[index]
        return max(0.0, key.until - self.clock()), key.reason

    def resting(self) -> list[tuple[int | None, float, str]]:
        """``(key index or None for the provider, seconds left, reason)`` of every rest under way."""
        now = self.clock()
        keys: list[tuple[int | None, _Key]] = [(None, self._bench), *enumerate(self._keys)]
        return [(i, k.until - now, k.reason) for i, k in keys if k.until > now]

    def last_rest(self) -> tuple[float, str, str] | None:
        """``(since, label, reason)`` of the rest under way that started last (``provider#*`` for
        the provider as a whole), None when none is."""
        now = self.clock()
        keys: list[tuple[str, _Key]] = [
            (f"{self.provider}#*", self._bench),
            *((self.label(i), k) for i, k in enumerate(self._keys)),
        ]
        resting = [(k.since, label, k.reason) for label, k in keys if k.until > now]
        return max(resting, default=None)

    def status(self) -> list[tuple[str, float, str]]:
        """``(label, seconds until back (0: healthy), why)`` for each key."""
        now = self.clock()
        out = []
        for index, key in enumerate(self._keys):
            resting = max(key, self._bench, key=lambda k: k.until)
            out.append((self.label(index), max(0.0, resting.until - now), resting.reason))
        return out


RATE_LIMITED = "upstream 429"
"""The reason of a rest the upstream's own rate limit asked for."""
QUOTA_EXHAUSTED = "quota exhausted"
"""The reason of a rest the upstream's rate-limit headers said was due (nothing left)."""
MAX_QUOTA_REST = 86400.0
"""The longest a key sits out for its quota (a daily limit; a reset further off is a clock's error)."""


def rate_limited(reason: str) -> bool:
    """Whether a rest's reason is the upstream's rate limit (every other rest is the upstream
    failing: a server error, a redirect, a refused key, no connection)."""
    return reason.startswith((RATE_LIMITED, QUOTA_EXHAUSTED))


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the upstream asked to wait (``retry-after-ms``, ``retry-after`` in seconds or as an
    HTTP date), None when it did not say."""
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        seconds = when - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None
