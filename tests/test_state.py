"""Every limiter (in-process, SQLite, Redis) on a clock the test moves: the sliding window, what a
refusal says, settling, budgets per UTC day, and two limiters (two workers, or two instances on one
Redis) sharing their counts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from proxycast.state import Admitted, Ask, Limiter, Limits, Refused, SharedState
from proxycast.state.health import HealthBoard
from proxycast.state.local import LocalLimiter
from proxycast.state.memory import MemoryLimiter
from proxycast.state.redis import RedisState
from proxycast.state.sqlite import SQLiteLimiter
from proxycast.upstream.keys import KeyPool

if TYPE_CHECKING:
    from pathlib import Path

    from tests.redis_server import RedisServer

NOON = 1_767_355_200.0  # 2026-01-02 12:00:00 UTC


class Clock:
    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> float:
        return self.now


KINDS = ["memory", "local", "sqlite", "redis", "redis-cluster"]
Make = Callable[[Clock], Limiter]


@pytest.fixture(name="make", params=KINDS)
def _make(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """``make(clock)``: a new limiter of the kind; two made in one test share their counts (two
    workers on one file, two instances on one Redis; memory and local: the same limiter)."""
    kind = request.param
    made: dict[str, Limiter] = {}
    calls: list[str] = []  # Redis round trips

    def make(clock: Clock) -> Limiter:
        if kind == "memory":
            return made.setdefault("memory", MemoryLimiter(clock))
        if kind == "local":  # one worker: the same limiter
            if "local" not in made:
                made["local"] = LocalLimiter(tmp_path / "limits.db", clock)
            return made["local"]
        if kind == "sqlite":
            return SQLiteLimiter(tmp_path / "limits.db", clock)
        fallback = SQLiteLimiter(tmp_path / f"fallback-{len(made)}.db", clock)
        made[str(len(made))] = fallback
        if kind == "redis-cluster":  # each client's keys in one slot: the scripts run on a cluster
            url = request.getfixturevalue("redis_cluster")
            return RedisState(url, fallback, clock=clock, cluster=True, on_call=calls.append)
        server: RedisServer = request.getfixturevalue("redis_server")
        return RedisState(server.url, fallback, clock=clock, on_call=calls.append)

    return make


async def test_requests_per_minute_slide(make: Make) -> None:
    clock = Clock()
    one, two = make(clock), make(clock)  # two workers
    limits = Limits(rpm=3)
    ask = Ask(client="a", tokens=1, usd=0.0)
    outcomes = []
    for limiter in (one, two, one):
        outcomes.append(await limiter.admit(ask, limits))
        clock.now += 10
    assert all(isinstance(o, Admitted) for o in outcomes)
    assert [o.remaining_requests for o in outcomes] == [2, 1, 0]
    refused = await two.admit(ask, limits)
    assert isinstance(refused, Refused)
    assert refused.what == "requests"
    assert refused.remaining_requests == 0
    assert refused.retry_after == 30  # the first request leaves the window at NOON + 60
    clock.now = NOON + 60
    assert isinstance(await two.admit(ask, limits), Admitted)
    assert isinstance(await one.admit(ask, limits), Refused)  # the second is still in the window
    await one.aclose()
    if two is not one:
        await two.aclose()


async def test_tokens_settle_to_the_usage(make: Make) -> None:
    clock = Clock()
    limiter = make(clock)
    limits = Limits(tpm=100)
    first = await limiter.admit(Ask(client="a", tokens=20, usd=0.0), limits)
    assert isinstance(first, Admitted)
    assert first.remaining_tokens == 80
    await limiter.settle(first, 90, 0.0)  # the answer was long
    clock.now += 5
    refused = await limiter.admit(Ask(client="a", tokens=20, usd=0.0), limits)
    assert isinstance(refused, Refused)
    assert refused.what == "tokens"
    assert refused.retry_after == 55
    assert isinstance(await limiter.admit(Ask(client="b", tokens=20, usd=0.0), limits), Admitted)
    too_big = await limiter.admit(Ask(client="c", tokens=101, usd=0.0), limits)
    assert isinstance(too_big, Refused)
    await limiter.aclose()


async def test_budgets_reserve_then_settle_and_renew_each_day(make: Make) -> None:
    clock = Clock()
    limiter = make(clock)
    limits = Limits(usd_per_day=1.0, usd_per_month=1.5)
    first = await limiter.admit(Ask(client="a", tokens=0, usd=0.6), limits)
    assert isinstance(first, Admitted)
    # the reservation counts at once: a concurrent request that would overspend is refused
    assert isinstance(await limiter.admit(Ask(client="a", tokens=0, usd=0.6), limits), Refused)
    await limiter.settle(first, 0, 0.2)
    second = await limiter.admit(Ask(client="a", tokens=0, usd=0.6), limits)
    assert isinstance(second, Admitted)
    await limiter.settle(second, 0, 0.9)  # spent 1.1 today: over, by what was admitted only
    refused = await limiter.admit(Ask(client="a", tokens=0, usd=0.0), limits)
    assert isinstance(refused, Refused)
    assert refused.what == "usd_per_day"
    assert refused.retry_after == 12 * 3600  # until midnight UTC
    clock.now += 12 * 3600  # the next day: the month's budget (1.5) still holds 0.4
    assert isinstance(await limiter.admit(Ask(client="a", tokens=0, usd=0.3), limits), Admitted)
    month = await limiter.admit(Ask(client="a", tokens=0, usd=0.3), limits)
    assert isinstance(month, Refused)
    assert month.what == "usd_per_month"
    await limiter.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_rest_in_one_workers_pool_reaches_the_others(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two workers (the machine's file, or two instances on Redis), each with its own key pools."""
    clock = Clock()
    states: list[SharedState]
    if kind == "sqlite":
        states = [SQLiteLimiter(tmp_path / "limits.db", clock) for _ in range(2)]
    else:
        url = request.getfixturevalue("redis_server").url
        states = [RedisState(url, MemoryLimiter(clock), clock=clock) for _ in range(2)]
    pools = [{"p": KeyPool("p", 3), "q": KeyPool("q", 1)} for _ in states]
    for state, mine in zip(states, pools, strict=True):
        state.watch(mine)
    async with trio.open_nursery() as nursery:
        for state in states:
            nursery.start_soon(state.run)
        pools[0]["p"].rest(1, 30, "upstream 429")
        pools[0]["q"].bench(20, "unreachable")
        with trio.fail_after(5):
            while pools[1]["p"].available(1) or pools[1]["q"].available(0):  # noqa: ASYNC110
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert [label for label, left, _ in pools[1]["p"].status() if left] == ["p#2"]
    ((_, left, why),) = pools[1]["q"].status()
    assert 15 < left <= 20
    assert why == "unreachable"
    assert pools[1]["p"].status()[1][2] == "upstream 429"
    for state in states:
        await state.aclose()


async def test_a_budgets_edge_is_the_same_for_every_limiter(make: Make) -> None:
    """Spend is summed as doubles everywhere (Redis too), so each limiter admits the same count."""
    clock = Clock()
    limiter = make(clock)
    expected, spent = 0, 0.0
    while not (spent >= 0.3 or spent + 0.01 > 0.3):
        spent += 0.01
        expected += 1
    ask, limits = Ask(client="a", tokens=0, usd=0.01), Limits(usd_per_day=0.3)
    admitted = 0
    while isinstance(await limiter.admit(ask, limits), Admitted):
        admitted += 1
    assert admitted == expected
    await limiter.aclose()


async def test_a_clock_that_steps_back_keeps_the_window_exact() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    limits = Limits(rpm=2)
    ask = Ask(client="a", tokens=0, usd=0.0)
    clock.now = NOON + 30
    assert isinstance(await limiter.admit(ask, limits), Admitted)
    clock.now = NOON + 10  # stepped back 20 s
    assert isinstance(await limiter.admit(ask, limits), Admitted)
    clock.now = NOON + 75  # the request counted at NOON + 10 left the window, the other did not
    assert isinstance(await limiter.admit(ask, limits), Admitted)
    assert isinstance(await limiter.admit(ask, limits), Refused)


async def test_one_workers_counts_outlive_a_restart(tmp_path: Path) -> None:
    """A one-worker gateway decides in memory and writes its counts behind: a restart (the drain
    writes what is left) neither resets the day's spend nor forgets the minute's requests, and a
    gateway restarted with several workers reads the same counts."""
    clock = Clock()
    limits = Limits(rpm=3, tpm=1000, usd_per_day=1.0)
    first = LocalLimiter(tmp_path / "limits.db", clock)
    admitted = await first.admit(Ask(client="a", tokens=10, usd=0.1), limits)
    assert isinstance(admitted, Admitted)
    await first.settle(admitted, 400, 0.7)
    await first.flush()  # the background write
    assert isinstance(await first.admit(Ask(client="a", tokens=10, usd=0.1), limits), Admitted)
    await first.aclose()  # the drain: the second admission is written too
    clock.now += 5
    again = LocalLimiter(tmp_path / "limits.db", clock)
    third = await again.admit(Ask(client="a", tokens=10, usd=0.1), limits)
    assert isinstance(third, Admitted)
    assert third.remaining_requests == 0
    assert third.remaining_tokens == 1000 - (400 + 10) - 10  # settled, then two reservations
    refused = await again.admit(Ask(client="a", tokens=10, usd=0.15), limits)
    assert isinstance(refused, Refused)
    assert refused.what == "requests"
    await again.aclose()
    shared = SQLiteLimiter(tmp_path / "limits.db", clock)
    budget = await shared.admit(Ask(client="a", tokens=0, usd=0.15), Limits(usd_per_day=1.0))
    assert isinstance(budget, Refused)  # 0.7 + 0.1 + 0.1 spent today
    assert budget.what == "usd_per_day"
    assert isinstance(
        await shared.admit(Ask(client="a", tokens=0, usd=0.05), Limits(usd_per_day=1.0)), Admitted
    )
    await shared.aclose()


async def test_counts_a_failed_write_could_not_store_are_written_later(tmp_path: Path) -> None:
    clock = Clock()
    limiter = LocalLimiter(tmp_path / "limits.db", clock)
    admitted = await limiter.admit(Ask(client="a", tokens=10, usd=0.5), Limits(usd_per_day=1.0))
    assert isinstance(admitted, Admitted)
    write = limiter._write

    def failing(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    limiter._write = failing  # type: ignore[method-assign,assignment]
    await limiter.flush()  # fails: the counts wait
    limiter._write = write  # type: ignore[method-assign]
    with trio.CancelScope() as scope:  # a flush cancelled before its write started: kept too
        scope.cancel()
        await limiter.flush()
    await limiter.aclose()
    again = SQLiteLimiter(tmp_path / "limits.db", clock)
    refused = await again.admit(Ask(client="a", tokens=0, usd=0.6), Limits(usd_per_day=1.0))
    assert isinstance(refused, Refused)  # the 0.5 reserved before the failures was written
    assert isinstance(
        await again.admit(Ask(client="a", tokens=0, usd=0.4), Limits(usd_per_day=1.0)), Admitted
    )
    await again.aclose()


async def test_the_write_behind_sleeps_until_something_is_counted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A gateway whose clients have no limits counts nothing: its limiter never wakes (a timer a
    worker would pay every half second for nothing); a count is written a moment after."""
    limiter = LocalLimiter(tmp_path / "limits.db", Clock())
    flushes: list[float] = []
    flushed = trio.Event()
    flush = limiter.flush

    async def counting() -> None:
        flushes.append(trio.current_time())
        flushed.set()
        await flush()

    limiter.flush = counting  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.run)
        await trio.sleep(60)
        assert flushes == []
        counted = trio.current_time()
        await limiter.admit(Ask(client="a", tokens=10, usd=0.5), Limits(usd_per_day=1.0))
        await flushed.wait()
        assert flushes[0] - counted <= 1.0
        nursery.cancel_scope.cancel()
    await limiter.aclose()
    again = SQLiteLimiter(tmp_path / "limits.db", Clock())
    refused = await again.admit(Ask(client="a", tokens=0, usd=0.6), Limits(usd_per_day=1.0))
    assert isinstance(refused, Refused)  # the count was written
    await again.aclose()


def test_a_rest_is_written_as_long_as_it_is_now() -> None:
    """A rest queued while the backend could not be written is measured again when it is."""
    clock = Clock()
    pool = KeyPool("p", 2, clock, fingerprints=("aaa", "bbb"))
    board = HealthBoard()
    board.watch({"p": pool})
    pool.rest(1, 60, "upstream 429")
    board.keep(board.take())  # the write failed
    clock.now += 50
    ((name, left, why),) = board.take()
    assert (name, left, why) == ("p#2:bbb", 10, "upstream 429")
    assert board.take() == []
