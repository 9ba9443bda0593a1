"""Limits and key health shared through Redis by every worker of every instance (``[state]
redis_url``).

- **An admission is one round trip**: a Lua script reads the client's window and spend, applies the
  same test as every limiter (:func:`proxycast.state.window.verdict`) and counts the request, as one
  atomic step on the server. Settling the actual usage (clients with a ``tpm`` limit or a budget)
  leaves the request path: a background flush sends every waiting settlement in one pipeline, as
  soon as it is queued (so it lands a round trip after the answer ends). Keys carry TTLs and a
  hash tag per client (``{prefix:c:NAME}``), so every script touches one slot, as a Redis Cluster
  requires.
- **Key health**: a key that rests on one instance (a 429, a refused key, an unreachable provider)
  is written as a Redis key with the rest as its TTL; each worker reads them all every 0.5 s (one
  round trip, :mod:`proxycast.state.health`) and rests the same keys locally. Picking a key never
  waits for Redis.
- **Redis unreachable**: requests keep flowing. Admissions are counted by the instance's own limiter
  (``fallback``: per-instance limits) and journalled; the outage is logged once, and when Redis
  answers again the journal is replayed into it (the window's requests and tokens, the spend) and the
  instance's resting keys are written back, then admissions go to Redis again. With ``fail_open =
  false`` a limited client's request is refused with a 503 instead while Redis is away.

The client is redis-py's (synchronous) called in worker threads through a :class:`trio.CapacityLimiter`
as large as its connection pool: a hung Redis holds at most those threads, each call gives up after
:data:`TIMEOUT`, and nothing retries inside. Against coredis on trio it costs a thread hop per call
(docs/scale-out.md, "The Redis client", has both measured and the trade-off).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import trio
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from proxycast.core.redact import without_password
from proxycast.errors import ProxycastError
from proxycast.state import Admitted, Ask, Limiter, Limits, Refused, window
from proxycast.state.health import HealthBoard, Rest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from redis.commands.core import Script

    from proxycast.upstream.keys import KeyPool

log = logging.getLogger("proxycast")

T = TypeVar("T")

FAILURES = (redis.RedisError, RedisClusterException)
"""What a call to an unreachable Redis (or Cluster) raises."""
SESSION_SECONDS = 3600
"""How long Redis remembers a session's key after its last request (affinity)."""

POOL = 16
"""Connections to Redis per worker (and threads calling it at once)."""
TIMEOUT = 0.5
"""Seconds a Redis call may take before the instance counts Redis as unreachable."""
KEPT_SECONDS = 2 * window.WINDOW
"""A window's hash expires this long after its last admission."""

# KEYS: the client's window (hash: r<second> requests, t<second> tokens), today's and this month's
# spend. ARGV: now, rpm, tpm, USD per day, per month (-1: no limit), tokens and USD asked, the TTLs of
# the day's and the month's spend. Returns the verdict ('' when admitted) and the window as it was
# (flat field, value pairs).
_ADMIT = """
local now = tonumber(ARGV[1])
local second = math.floor(now)
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local per_day, per_month = tonumber(ARGV[4]), tonumber(ARGV[5])
local tokens, usd = tonumber(ARGV[6]), tonumber(ARGV[7])
local flat = redis.call('HGETALL', KEYS[1])
local requests, used, stale, kept = 0, 0, {}, {}
for i = 1, #flat, 2 do
  local field, value = flat[i], tonumber(flat[i + 1])
  if tonumber(string.sub(field, 2)) <= second - $WINDOW then
    stale[#stale + 1] = field
  else
    kept[#kept + 1] = field
    kept[#kept + 1] = flat[i + 1]
    if string.sub(field, 1, 1) == 'r' then requests = requests + value else used = used + value end
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
local day = tonumber(redis.call('GET', KEYS[2]) or '0')
local month = tonumber(redis.call('GET', KEYS[3]) or '0')
local verdict = ''
if rpm >= 0 and requests >= rpm then verdict = 'requests'
elseif tpm >= 0 and used + tokens > tpm then verdict = 'tokens'
elseif per_day >= 0 and (day >= per_day or day + usd > per_day) then verdict = 'usd_per_day'
elseif per_month >= 0 and (month >= per_month or month + usd > per_month) then
  verdict = 'usd_per_month'
end
if verdict == '' then
  redis.call('HINCRBY', KEYS[1], 'r' .. second, 1)
  redis.call('HINCRBY', KEYS[1], 't' .. second, tokens)
  redis.call('EXPIRE', KEYS[1], $KEPT)
  if per_day >= 0 or per_month >= 0 then
    redis.call('SET', KEYS[2], string.format('%.17g', day + usd), 'EX', ARGV[8])
    redis.call('SET', KEYS[3], string.format('%.17g', month + usd), 'EX', ARGV[9])
  end
end
return {verdict, kept}
""".replace("$WINDOW", str(window.WINDOW)).replace("$KEPT", str(KEPT_SECONDS))

# KEYS: a client's window, then any of its spend keys. ARGV: the second ('' for none), requests and
# tokens to add to it, then (USD to add, TTL in seconds) for each spend key. Spend is summed as
# doubles and written exactly (%.17g), as the other limiters sum it, so that every limiter admits
# the same requests at a budget's edge (INCRBYFLOAT sums in long doubles).
_ADD = """
if ARGV[1] ~= '' then
  if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[1], 'r' .. ARGV[1], ARGV[2]) end
  if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[1], 't' .. ARGV[1], ARGV[3]) end
  redis.call('EXPIRE', KEYS[1], $KEPT)
end
for i = 2, #KEYS do
  local sum = tonumber(redis.call('GET', KEYS[i]) or '0') + tonumber(ARGV[2 * i])
  redis.call('SET', KEYS[i], string.format('%.17g', sum), 'EX', ARGV[2 * i + 1])
end
return 1
""".replace("$KEPT", str(KEPT_SECONDS))

# KEYS: the health key of every key of every provider (and of each provider as a whole). ARGV: the
# rests to write, as (index into KEYS, milliseconds, reason) triples: a rest is written when it is
# longer than the one Redis has. Returns, for each key, its milliseconds left and its reason.
_HEALTH = """
for i = 1, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i])]
  if redis.call('PTTL', key) < tonumber(ARGV[i + 1]) then
    redis.call('SET', key, ARGV[i + 2], 'PX', ARGV[i + 1])
  end
end
local out = {}
for i = 1, #KEYS do
  out[#out + 1] = redis.call('PTTL', KEYS[i])
  out[#out + 1] = redis.call('GET', KEYS[i]) or ''
end
return out
"""


def _spend_ttl(left: float) -> int:
    """A spend key's TTL: the period's seconds left, and a day (a late settlement still lands)."""
    return math.ceil(left) + 86400


class RedisState:
    """The :class:`proxycast.state.Limiter` and key-health board of one worker on Redis.

    Args:
        url: ``redis://[:PASSWORD@]HOST:PORT/DB`` (or ``rediss://``, ``unix://``).
        fallback: where admissions are counted while Redis is unreachable (the machine's limiter).
        fail_open: while Redis is unreachable, admit by ``fallback`` (True) or refuse (False).
        prefix: the first part of every key, so that several gateways can share one Redis.
        cluster: ``url`` names a node of a Redis Cluster.
        clock: wall-clock seconds (instances' clocks are assumed in step, as NTP keeps them).
        on_call: told of each round trip (``admit``, ``settle``, ``sync``, ``replay``, ``ping``).
        on_status: told when Redis goes away (False) and comes back (True).
    """

    def __init__(
        self,
        url: str,
        fallback: Limiter,
        *,
        fail_open: bool = True,
        prefix: str = "proxycast",
        cluster: bool = False,
        clock: Callable[[], float] = time.time,
        on_call: Callable[[str], None] | None = None,
        on_status: Callable[[bool], None] | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "max_connections": POOL,
            "socket_timeout": TIMEOUT,
            "socket_connect_timeout": TIMEOUT,
            "retry": Retry(NoBackoff(), 0),  # a failure falls back at once; no retry loop inside
        }
        self._connect: Callable[[], redis.Redis | RedisCluster] = (
            (lambda: RedisCluster.from_url(url, **options))
            if cluster
            else (lambda: redis.Redis.from_url(url, **options))
        )
        self._redis: redis.Redis | RedisCluster | None = None
        self._scripts: tuple[Script, Script, Script] | None = None
        self._making = threading.Lock()
        self._where = without_password(url)
        self._threads = trio.CapacityLimiter(POOL)
        self._fallback = fallback
        self._fail_open = fail_open
        self._prefix = prefix
        self._clock = clock
        self.up = True
        """False while Redis is unreachable (admissions go to ``fallback``)."""
        self._on_call = on_call
        self._on_status = on_status
        # counted by the fallback while Redis was away, replayed into it when it is back
        self._journal_window: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self._journal_spend: dict[tuple[str, str], float] = defaultdict(float)
        self._health = HealthBoard()
        self._health_keys: list[str] = []
        self._settles: list[tuple[str, int, int, dict[str, float]]] = []
        self._settle_wake = trio.Event()
        self._flushing = False
        self._sessions: dict[str, str] = {}
        """Sessions' keys to write (Redis key -> ``provider#N``), with the next settlements."""

    # -- limits ---------------------------------------------------------------------------------

    async def admit(self, ask: Ask, limits: Limits) -> Admitted | Refused:
        if self.up:
            now = self._clock()
            day, month, day_left, month_left = window.periods(now)
            keys = [
                self._key(ask.client, "w"),
                self._key(ask.client, day),
                self._key(ask.client, month),
            ]
            args = [
                repr(now),
                *(-1 if v is None else v for v in (limits.rpm, limits.tpm)),
                *(-1 if v is None else repr(v) for v in (limits.usd_per_day, limits.usd_per_month)),
                ask.tokens,
                repr(ask.usd),
                _spend_ttl(day_left),
                _spend_ttl(month_left),
            ]
            try:
                verdict, flat = await self._call("admit", self._script, 0, keys, args)
            except FAILURES as exc:
                self._lost(exc)
            else:
                buckets = _buckets(flat, now)
                result = window.outcome(buckets, now, ask, limits, _text(verdict) or None)
                if isinstance(result, Admitted):
                    return window.evolve(result, shared=True)
                return result
        if not self._fail_open:
            raise ProxycastError(
                "The gateway cannot check this client's limits: its shared state (Redis) is "
                "unreachable. Retry shortly.",
                status=503,
                headers={"retry-after": "1"},
            )
        outcome = await self._fallback.admit(ask, limits)
        if isinstance(outcome, Admitted):
            spend = dict.fromkeys(outcome.periods, ask.usd)
            await self._count(ask.client, outcome.ticket, 1, ask.tokens, spend)
        return outcome

    async def settle(self, admitted: Admitted, tokens: int, usd: float) -> None:
        if not admitted.settles:
            return
        if not admitted.shared:  # admitted by the fallback, while Redis was away
            await self._fallback.settle(admitted, tokens, usd)
        delta_usd = usd - admitted.usd
        spend = dict.fromkeys(admitted.periods, delta_usd) if delta_usd else {}
        delta_tokens = tokens - admitted.tokens
        if not (delta_tokens or spend):
            return
        if self.up and self._flushing:  # batched by the background flush: no wait on the request
            self._settles.append((admitted.client, admitted.ticket, delta_tokens, spend))
            self._settle_wake.set()
        else:
            await self._count(admitted.client, admitted.ticket, 0, delta_tokens, spend, "settle")

    async def _flush_settles(self) -> None:
        """Send the settlements as they come, every waiting one in one pipeline (one round trip
        however many requests ended meanwhile). Until cancelled."""
        self._flushing = True
        try:
            while True:
                await self._settle_wake.wait()
                self._settle_wake = trio.Event()
                await self._send_settles()
        finally:
            self._flushing = False

    async def _send_settles(self) -> None:
        sessions, self._sessions = self._sessions, {}
        if sessions and self.up:  # affinity is a hint: a batch lost with Redis is not replayed
            try:
                await self._call("session", self._write_sessions, sessions)
            except FAILURES as exc:
                self._lost(exc)
        batch, self._settles = self._settles, []
        if not batch:
            return
        if self.up:
            try:
                await self._call("settle", self._add_batch, batch)
            except FAILURES as exc:
                self._lost(exc)
            else:
                return
        for client, second, tokens, spend in batch:  # journalled: replayed when Redis is back
            await self._count(client, second, 0, tokens, spend)

    def _add_batch(self, batch: list[tuple[str, int, int, dict[str, float]]]) -> None:
        """One transaction (all or nothing, so a failed batch is journalled whole and never counted
        twice; on a cluster, whose clients' keys lie in several slots, one pipeline)."""
        connection = self._client()
        pipe = connection.pipeline(transaction=not isinstance(connection, RedisCluster))
        for client, second, tokens, spend in batch:
            self._add(client, second, 0, tokens, spend, pipe)
        pipe.execute()

    async def _count(
        self,
        client: str,
        second: int,
        requests: int,
        tokens: int,
        spend: dict[str, float],
        what: str = "replay",
    ) -> None:
        """Add to a client's counts in Redis; while it is away (or when the call fails), to the
        journal that is replayed into it when it is back. Additions commute: what the fallback
        counted reaches Redis whether it lands before, during or after the replay."""
        if self.up:
            try:
                await self._call(what, self._add, client, second, requests, tokens, spend)
            except FAILURES as exc:
                self._lost(exc)
            else:
                return
        if requests or tokens:
            bucket = self._journal_window[client, second]
            bucket[0] += requests
            bucket[1] += tokens
            if len(self._journal_window) % 1024 == 0:  # a long outage: drop what left the window
                floor = int(self._clock()) - window.WINDOW
                for key in [k for k in self._journal_window if k[1] <= floor]:
                    del self._journal_window[key]
        for period, usd in spend.items():
            self._journal_spend[client, period] += usd

    def _add(
        self,
        client: str,
        second: int | None,
        requests: int,
        tokens: int,
        spend: dict[str, float],
        pipe: Any = None,
    ) -> None:
        """One :data:`_ADD` call (queued on ``pipe`` when given)."""
        _, _, day_left, month_left = window.periods(self._clock())
        keys = [self._key(client, "w")]
        args: list[Any] = ["" if second is None else second, requests, tokens]
        for period, usd in spend.items():
            keys.append(self._key(client, period))
            args += [repr(usd), _spend_ttl(day_left if period.startswith("d:") else month_left)]
        self._client()
        assert self._scripts is not None
        self._scripts[2](keys=keys, args=args, client=pipe)

    def _key(self, client: str, what: str) -> str:
        return f"{{{self._prefix}:c:{client}}}:{what}"

    # -- key health -----------------------------------------------------------------------------

    def watch(self, pools: Mapping[str, KeyPool]) -> None:
        """Share the health of these providers' keys (those of an earlier call are forgotten)."""
        self._health.watch(pools)
        self._health_keys = [f"{{{self._prefix}:h}}:{name}" for name in self._health.names]

    async def run(self) -> None:
        """Send the settlements (batched); every 0.5 s (at once after a local rest) write the rests
        this worker saw and read those of every instance; while Redis is away, retry it. Until
        cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flush_settles)
            await self._sync_health()

    async def _sync_health(self) -> None:
        while True:
            await self._health.wait()
            if not self.up:
                await self._reconnect()
            elif self._health_keys:
                rests = self._health.take()
                try:
                    await self._sync(rests)
                except FAILURES as exc:
                    self._health.keep(rests)
                    self._lost(exc)

    async def _sync(self, rests: list[Rest]) -> None:
        args: list[Any] = []
        for name, seconds, reason in rests:
            args += [self._health.names.index(name) + 1, max(1, int(seconds * 1000)), reason]
        reply = await self._call("sync", self._script, 1, self._health_keys, args)
        self._health.learn(
            (name, int(reply[2 * i]) / 1000, _text(reply[2 * i + 1]))
            for i, name in enumerate(self._health.names)
        )

    # -- sessions (affinity) ---------------------------------------------------------------------

    async def session_unit(self, session: str) -> str | None:
        """The key (``provider#N``) that last answered ``session`` on any instance; None when none
        did lately, or Redis is away (the worker's own memory decides then)."""
        if not self.up:
            return None
        key = self._session_key(session)
        try:
            value = await self._call("session", lambda: self._client().get(key))
        except FAILURES as exc:
            self._lost(exc)
            return None
        return None if value is None else _text(value)

    def remember_session(self, session: str, unit: str) -> None:
        """``unit`` answered ``session``: written with the next batch of settlements (no wait on
        the request), kept :data:`SESSION_SECONDS` after its last request."""
        if not self.up or not self._flushing:
            return
        self._sessions[self._session_key(session)] = unit
        self._settle_wake.set()

    def _session_key(self, session: str) -> str:
        digest = hashlib.sha256(session.encode()).hexdigest()[:32]
        return f"{{{self._prefix}:s}}:{digest}"

    def _write_sessions(self, sessions: dict[str, str]) -> None:
        pipeline = self._client().pipeline(transaction=False)
        for key, unit in sessions.items():
            pipeline.set(key, unit, ex=SESSION_SECONDS)
        pipeline.execute()

    # -- outages --------------------------------------------------------------------------------

    def _lost(self, exc: Exception) -> None:
        if self.up:
            self.up = False
            mode = "per-instance limits" if self._fail_open else "limited clients refused (503)"
            log.error(
                "Redis at %s is unreachable (%s): %s until it answers again",
                self._where,
                type(exc).__name__,
                mode,
            )
            self._health.wake.set()
            if self._on_status is not None:
                self._on_status(False)

    async def _reconnect(self) -> None:
        try:
            await self._call("ping", lambda: self._client().ping())
        except FAILURES:
            return
        self.up = True  # counts go to Redis again from here on (see _count)
        journal = self._journal_window, self._journal_spend
        self._journal_window, self._journal_spend = defaultdict(lambda: [0, 0]), defaultdict(float)
        try:
            await self._call("replay", self._replay, *journal)
        except FAILURES as exc:  # nothing was applied (one transaction): kept for the next try
            for key, (requests, tokens) in journal[0].items():
                self._journal_window[key][0] += requests
                self._journal_window[key][1] += tokens
            for period, usd in journal[1].items():
                self._journal_spend[period] += usd
            self._lost(exc)
            return
        rests = self._health.resting()  # as long as they are now (the queued ones among them)
        try:
            await self._sync(rests)
        except FAILURES as exc:
            self._health.keep(rests)
            self._lost(exc)
            return
        log.warning(
            "Redis at %s answers again: limits and key health are shared again", self._where
        )
        if self._on_status is not None:
            self._on_status(True)

    def _replay(
        self, counted: dict[tuple[str, int], list[int]], spent: dict[tuple[str, str], float]
    ) -> None:
        """Add what was counted while Redis was away to Redis's counts: one transaction (all or
        nothing; on a cluster, whose clients' keys lie in several slots, one pipeline)."""
        floor = int(self._clock()) - window.WINDOW
        client = self._client()
        pipe = client.pipeline(transaction=not isinstance(client, RedisCluster))
        for (name, second), (requests, tokens) in counted.items():
            if second > floor:
                self._add(name, second, requests, tokens, {}, pipe)
        for (name, period), usd in spent.items():
            self._add(name, None, 0, 0, {period: usd}, pipe)
        if len(pipe):
            pipe.execute()

    def _client(self) -> redis.Redis | RedisCluster:
        """The client, made on first use (in a thread: a cluster's is made by asking a node)."""
        with self._making:
            if self._redis is None:
                client = self._connect()
                self._scripts = (
                    client.register_script(_ADMIT),
                    client.register_script(_HEALTH),
                    client.register_script(_ADD),
                )
                self._redis = client
        return self._redis

    def _script(self, which: int, keys: list[str], args: list[Any]) -> Any:
        self._client()
        assert self._scripts is not None
        return self._scripts[which](keys=keys, args=args)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        if self._on_call is not None:
            self._on_call(what)
        return await trio.to_thread.run_sync(
            lambda: fn(*args), limiter=self._threads, abandon_on_cancel=True
        )

    async def aclose(self) -> None:
        with trio.move_on_after(2 * TIMEOUT):  # the last settlements, if Redis takes them
            await self._send_settles()
        await self._fallback.aclose()
        if self._redis is not None:
            await trio.to_thread.run_sync(self._redis.close, limiter=self._threads)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _buckets(flat: list[bytes], now: float) -> list[window.Bucket]:
    seconds: dict[int, list[int]] = {}
    for field, value in zip(flat[::2], flat[1::2], strict=True):
        name = _text(field)
        bucket = seconds.setdefault(int(name[1:]), [0, 0])
        bucket[0 if name[0] == "r" else 1] += int(value)
    return window.current([(s, r, t) for s, (r, t) in seconds.items()], now)
