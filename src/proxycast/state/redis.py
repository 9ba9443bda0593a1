"""Limits and key health shared through Redis by every worker of every instance (``[state]
redis_url``).

- **An admission is one round trip**: a Lua script reads the client's window and spend, applies the
  same test as every limiter (:func:`proxycast.state.window.verdict`) and counts the request, as one
  atomic step on the server. Settling the actual usage is one more (a pipeline), only for clients
  with a ``tpm`` limit or a budget. Keys carry TTLs and a hash tag per client (``{prefix:c:NAME}``),
  so every script touches one slot, as a Redis Cluster requires.
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
as large as its connection pool: measured against coredis on trio, the two were equal (~0.85 ms per
script call from trio on a loaded 2-core machine, ~2,300 calls/s at 32 concurrent); redis-py brings
one dependency instead of six (docs/scale-out.md has the figures).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import trio
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from proxycast.errors import ProxycastError
from proxycast.state import Admitted, Ask, Limiter, Limits, Refused, window
from proxycast.state.health import HealthBoard, Rest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from redis.commands.core import Script

    from proxycast.keys import KeyPool

log = logging.getLogger("proxycast")

T = TypeVar("T")

FAILURES = (redis.RedisError, RedisClusterException)
"""What a call to an unreachable Redis (or Cluster) raises."""
POOL = 16
"""Connections to Redis per worker (and threads calling it at once)."""
TIMEOUT = 0.5
"""Seconds a Redis call may take before the instance counts Redis as unreachable."""
KEPT_SECONDS = 2 * window.WINDOW
"""A window's hash expires this long after its last admission."""

# KEYS: the client's window (hash: r<second> requests, t<second> tokens), today's and this month's
# spend. ARGV: now, rpm, tpm, USD per day, per month (-1: no limit), tokens and USD asked, seconds
# until the day and the month end. Returns the verdict ('' when admitted), the window as it was (flat
# field, value pairs) and the spend of the day and the month.
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
    redis.call('INCRBYFLOAT', KEYS[2], ARGV[7])
    redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[8])) + 86400)
    redis.call('INCRBYFLOAT', KEYS[3], ARGV[7])
    redis.call('EXPIRE', KEYS[3], math.ceil(tonumber(ARGV[9])) + 86400)
  end
end
return {verdict, kept, tostring(day), tostring(month)}
""".replace("$WINDOW", str(window.WINDOW)).replace("$KEPT", str(KEPT_SECONDS))

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


def redacted_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" if parts.username else f":***@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


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
        self._scripts: tuple[Script, Script] | None = None
        self._making = threading.Lock()
        self._where = redacted_url(url)
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
                repr(day_left),
                repr(month_left),
            ]
            try:
                verdict, flat, _, _ = await self._call("admit", self._script, 0, keys, args)
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
            bucket = self._journal_window[ask.client, outcome.ticket]
            bucket[0] += 1
            bucket[1] += ask.tokens
            for period in outcome.periods:
                self._journal_spend[ask.client, period] += ask.usd
        return outcome

    async def settle(self, admitted: Admitted, tokens: int, usd: float) -> None:
        if not admitted.settles:
            return
        delta_tokens, delta_usd = tokens - admitted.tokens, usd - admitted.usd
        if not admitted.shared:
            await self._fallback.settle(admitted, tokens, usd)
        elif self.up:
            try:
                await self._call("settle", self._settle, admitted, delta_tokens, delta_usd)
            except FAILURES as exc:
                self._lost(exc)
            else:
                return
        # journalled: replayed into Redis when it answers again
        if delta_tokens:
            self._journal_window[admitted.client, admitted.ticket][1] += delta_tokens
        for period in admitted.periods:
            self._journal_spend[admitted.client, period] += delta_usd

    def _settle(self, admitted: Admitted, delta_tokens: int, delta_usd: float) -> None:
        pipe = self._client().pipeline(transaction=False)
        if delta_tokens:
            pipe.hincrby(self._key(admitted.client, "w"), f"t{admitted.ticket}", delta_tokens)
        if delta_usd:
            for period in admitted.periods:
                pipe.incrbyfloat(self._key(admitted.client, period), delta_usd)
        if len(pipe):
            pipe.execute()

    def _key(self, client: str, what: str) -> str:
        return f"{{{self._prefix}:c:{client}}}:{what}"

    # -- key health -----------------------------------------------------------------------------

    def watch(self, pools: Mapping[str, KeyPool]) -> None:
        """Share the health of these providers' keys (those of an earlier call are forgotten)."""
        self._health.watch(pools)
        self._health_keys = [f"{{{self._prefix}:h}}:{label}" for label in self._health.labels]

    async def run(self) -> None:
        """Every 0.5 s (at once after a local rest): write the rests this worker saw, read those of
        every instance; while Redis is away, retry it. Until cancelled."""
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
        for label, seconds, reason in rests:
            args += [self._health.labels.index(label) + 1, max(1, int(seconds * 1000)), reason]
        reply = await self._call("sync", self._script, 1, self._health_keys, args)
        self._health.learn(
            (label, int(reply[2 * i]) / 1000, _text(reply[2 * i + 1]))
            for i, label in enumerate(self._health.labels)
        )

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
        self.up = True  # admissions count in Redis again from here on
        journal = self._journal_window, self._journal_spend
        self._journal_window, self._journal_spend = defaultdict(lambda: [0, 0]), defaultdict(float)
        rests = self._health.resting()
        try:
            await self._call("replay", self._replay, *journal)
            await self._sync(rests)
        except FAILURES as exc:
            for key, (requests, tokens) in journal[0].items():  # kept for the next try
                self._journal_window[key][0] += requests
                self._journal_window[key][1] += tokens
            for period, usd in journal[1].items():
                self._journal_spend[period] += usd
            self._lost(exc)
            return
        log.warning(
            "Redis at %s answers again: limits and key health are shared again", self._where
        )

    def _replay(
        self, counted: dict[tuple[str, int], list[int]], spent: dict[tuple[str, str], float]
    ) -> None:
        """Add what the fallback counted while Redis was away to Redis's counts (one pipeline)."""
        now = self._clock()
        floor = int(now) - window.WINDOW
        _, _, day_left, month_left = window.periods(now)
        pipe = self._client().pipeline(transaction=False)
        for (client, second), (requests, tokens) in counted.items():
            if second > floor:
                key = self._key(client, "w")
                pipe.hincrby(key, f"r{second}", requests)
                pipe.hincrby(key, f"t{second}", tokens)
                pipe.expire(key, KEPT_SECONDS)
        for (client, period), usd in spent.items():
            key = self._key(client, period)
            pipe.incrbyfloat(key, usd)
            left = day_left if period.startswith("d:") else month_left
            pipe.expire(key, int(left) + 86400, nx=True)
        if len(pipe):
            pipe.execute()

    def _client(self) -> redis.Redis | RedisCluster:
        """The client, made on first use (in a thread: a cluster's is made by asking a node)."""
        with self._making:
            if self._redis is None:
                client = self._connect()
                self._scripts = (client.register_script(_ADMIT), client.register_script(_HEALTH))
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
