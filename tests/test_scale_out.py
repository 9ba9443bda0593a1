"""Two ``proxycast serve`` instances on one real Redis behave as one gateway: a client's ``rpm`` is
exact across both, a key one instance saw answer 429 is skipped by the other, and Redis killed
mid-run and restarted fails no request (limits fall back to each instance, then re-sync)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import httpx
import openai
import pytest
import trio

from proxycast.accounting.clients import ClientConfig
from proxycast.state import Admitted, Ask, Limits, Refused, StateConfig
from proxycast.state.memory import MemoryLimiter
from proxycast.state.redis import RedisState
from proxycast.testing import FakeOpenAI, Script
from tests.support import CLIENT_KEY, make_config, start_gateway
from tests.test_cli import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.redis_server import RedisServer

ALICE = "alice-key"
BODY = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
KEYS = ("sk-upstream-one", "sk-upstream-two")


def config_text(upstream: str, redis_url: str, rpm: int) -> str:
    return f"""
[server]
port = 0

[[providers]]
name = "local"
type = "openai"
base_url = "{upstream}"
api_keys = {list(KEYS)!r}
models = ["llama3.2"]

[[clients]]
name = "alice"
api_key = "{ALICE}"
rpm = {rpm}

[state]
redis_url = "{redis_url}"
"""


@contextlib.asynccontextmanager
async def instances(upstream: str, redis_url: str, rpm: int) -> AsyncIterator[list[str]]:
    """Two instances, each with its own data directory (as on two machines), on one Redis."""
    with tempfile.TemporaryDirectory() as directory:
        urls = []
        async with contextlib.AsyncExitStack() as stack:
            for name in ("one", "two"):
                home = Path(directory) / name
                home.mkdir()
                config = home / "proxycast.toml"
                config.write_text(config_text(upstream, redis_url, rpm))
                served = await stack.enter_async_context(
                    serve(["--config", str(config)], env={"PROXYCAST_HOME": str(home)})
                )
                urls.append(served.url)
            yield urls


async def _chat(client: httpx.AsyncClient, url: str) -> int:
    """A chat completion as alice, through the instance at ``url``: its status."""
    response = await client.post(
        url + "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {ALICE}"}
    )
    return response.status_code


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=ALICE, max_retries=0)


async def test_rpm_is_exact_across_two_instances(
    fake: FakeOpenAI, redis_server: RedisServer
) -> None:
    async with instances(fake.base_url, redis_server.url, rpm=7) as urls:
        statuses: list[int] = []

        async def one(url: str) -> None:
            async with httpx.AsyncClient() as client:
                statuses.append(await _chat(client, url))

        async with trio.open_nursery() as nursery:
            for index in range(20):  # both instances at once, 10 each
                nursery.start_soon(one, urls[index % 2])
        assert sorted(statuses) == [200] * 7 + [429] * 13
        assert len(fake.requests) == 7


async def test_a_key_rested_by_one_instance_is_skipped_by_the_other(
    fake: FakeOpenAI, redis_server: RedisServer
) -> None:
    async with instances(fake.base_url, redis_server.url, rpm=1000) as (one, two):
        fake.script(Script(status=429, headers=(("retry-after", "60"),)))
        async with _client(one) as client:
            reply = await client.chat.completions.create(**BODY)  # type: ignore[call-overload]
        assert reply.choices[0].message.content  # retried on the second key
        first, retried = (r.headers["authorization"] for r in fake.requests)
        assert (first, retried) == (f"Bearer {KEYS[0]}", f"Bearer {KEYS[1]}")
        # the other instance learns the rest within its sync period (0.5 s)
        with trio.fail_after(5):
            while "local#1" not in await _resting(two):  # noqa: ASYNC110 - another process
                await trio.sleep(0.1)
        before = len(fake.requests)
        async with _client(two) as client:
            for _ in range(4):
                await client.chat.completions.create(**BODY)  # type: ignore[call-overload]
        used = {r.headers["authorization"] for r in fake.requests[before:]}
        assert used == {f"Bearer {KEYS[1]}"}


async def _metric(url: str, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (
            await client.get(url + "/metrics", headers={"authorization": f"Bearer {ALICE}"})
        ).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else -1.0


async def _resting(url: str) -> set[str]:
    """The keys the instance's /metrics report as unavailable."""
    async with httpx.AsyncClient() as client:
        text = (
            await client.get(url + "/metrics", headers={"authorization": f"Bearer {ALICE}"})
        ).text
    return {
        line.split('key="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("proxycast_key_available{") and line.endswith(" 0.0")
    }


async def test_redis_killed_mid_run_fails_no_request(
    fake: FakeOpenAI, redis_server: RedisServer
) -> None:
    statuses: list[int] = []
    async with instances(fake.base_url, redis_server.url, rpm=100_000) as urls:

        async def load(url: str, seconds: float) -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                with trio.move_on_after(seconds):
                    while True:
                        statuses.append(await _chat(client, url))

        async with trio.open_nursery() as nursery:
            for url in urls:
                nursery.start_soon(load, url, 60.0)
            await trio.sleep(1.0)
            redis_server.stop()
            during = len(statuses)
            await trio.sleep(1.5)
            assert len(statuses) > during  # requests kept flowing while Redis was down
            await trio.to_thread.run_sync(redis_server.start)
            with trio.fail_after(20):
                for url in urls:  # both instances count in Redis again
                    while await _metric(url, "proxycast_redis_up") != 1:  # noqa: ASYNC110
                        await trio.sleep(0.1)
            await trio.sleep(0.5)  # and requests flow on
            nursery.cancel_scope.cancel()
        assert statuses
        assert set(statuses) == {200}
        # after it returned, both instances count in Redis again, the outage's admissions replayed
        # (what was counted before the crash died with it: this Redis keeps nothing on disk)
        with redis_server.client() as client:
            window = client.hgetall("{proxycast:c:alice}:w")
        counted = sum(int(v) for k, v in window.items() if k.startswith(b"r"))
        in_flight = 2  # at the kill, and when the load stopped (admitted, never answered)
        assert len(statuses) - during - in_flight <= counted <= len(statuses) - during + in_flight


async def test_an_outage_is_logged_once_counted_locally_and_replayed(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    statuses: list[bool] = []
    state = RedisState(redis_server.url, MemoryLimiter(), prefix="t", on_status=statuses.append)
    limits, ask = Limits(rpm=5, usd_per_day=10.0), Ask(client="a", tokens=3, usd=0.5)
    assert isinstance(await state.admit(ask, limits), Admitted)
    redis_server.stop()
    outcomes = [await state.admit(ask, limits) for _ in range(6)]
    # per-instance limits meanwhile: the fallback knew nothing of the first admission
    assert [isinstance(o, Admitted) for o in outcomes] == [True] * 5 + [False]
    first, late = outcomes[0], outcomes[1]
    assert isinstance(first, Admitted)
    assert isinstance(late, Admitted)
    await state.settle(first, 10, 1.0)  # journalled too
    lost = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lost) == 1
    assert lost[0].levelname == "ERROR"
    assert statuses == [False]
    redis_server.start()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.run)
        with trio.fail_after(5):
            while not state.up:  # noqa: ASYNC110 - set by a background loop's reconnect
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert statuses == [False, True]
    # an answer admitted during the outage that ends after it: its usage goes to Redis directly
    await state.settle(late, 5, 2.5)
    with redis_server.client() as client:
        window = client.hgetall("{t:c:a}:w")
        day = [float(client.get(k) or 0) for k in client.scan_iter("{t:c:a}:d:*")]
    assert sum(int(v) for k, v in window.items() if k.startswith(b"r")) == 5  # replayed
    assert sum(int(v) for k, v in window.items() if k.startswith(b"t")) == 5 * 3 + 7 + 2
    assert day == [pytest.approx(5 * 0.5 + 0.5 + 2.0)]
    assert isinstance(await state.admit(ask, limits), Refused)  # shared again: 5 in the window
    await state.aclose()


async def test_a_redis_password_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-redis-password"
    url = f"redis://:{secret}@127.0.0.1:{_closed_port()}/0?password={secret}"
    state = RedisState(url, MemoryLimiter())
    assert isinstance(
        await state.admit(Ask(client="a", tokens=1, usd=0.0), Limits(rpm=1)), Admitted
    )
    assert not state.up
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "unreachable" in logged
    assert secret not in logged
    assert secret not in repr(StateConfig(redis_url=url))
    await state.aclose()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_fail_closed_refuses_limited_clients_while_redis_is_away(
    fake: FakeOpenAI, redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    config = attrs.evolve(
        make_config(fake.base_url),
        clients=(ClientConfig(name="alice", api_key=ALICE, rpm=100),),
        state=StateConfig(redis_url=redis_server.url, fail_open=False),
    )
    gateway = await start_gateway(nursery, config)
    redis_server.stop()
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.v1 + "/chat/completions",
            json=BODY,
            headers={"authorization": f"Bearer {ALICE}"},
        )
        unlimited = await client.post(
            gateway.v1 + "/chat/completions",
            json=BODY,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert "Redis" in error["message"]
    assert redis_server.url not in error["message"]
    assert unlimited.status_code == 200  # a client without limits needs no count


async def test_an_admission_is_one_round_trip(redis_server: RedisServer) -> None:
    calls: list[str] = []
    state = RedisState(redis_server.url, MemoryLimiter(), on_call=calls.append)
    ask = Ask(client="a", tokens=10, usd=0.0)
    for _ in range(5):
        assert isinstance(await state.admit(ask, Limits(rpm=100)), Admitted)
    assert calls == ["admit"] * 5
    admitted = await state.admit(ask, Limits(tpm=1000))
    assert isinstance(admitted, Admitted)
    await state.settle(admitted, 50, 0.0)  # tpm: the usage replaces the estimate, one more
    assert calls[5:] == ["admit", "settle"]
    await state.aclose()


async def test_settlements_are_batched_off_the_request_path(redis_server: RedisServer) -> None:
    calls: list[str] = []
    state = RedisState(redis_server.url, MemoryLimiter(), prefix="b", on_call=calls.append)
    limits = Limits(tpm=100_000, usd_per_day=100.0)
    admitted = []
    for _ in range(20):
        outcome = await state.admit(Ask(client="a", tokens=10, usd=0.01), limits)
        assert isinstance(outcome, Admitted)
        admitted.append(outcome)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.run)
        await trio.sleep(0.05)
        for outcome in admitted:  # twenty answers end at once
            await state.settle(outcome, 25, 0.02)
        with trio.fail_after(5):
            while state._settles or calls.count("settle") == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert calls.count("admit") == 20
    assert 1 <= calls.count("settle") < 20  # batched
    with redis_server.client() as client:
        window = client.hgetall("{b:c:a}:w")
        day = [float(client.get(k) or 0) for k in client.scan_iter("{b:c:a}:d:*")]
    assert sum(int(v) for k, v in window.items() if k.startswith(b"t")) == 20 * 25
    assert day == [pytest.approx(20 * 0.02)]
    await state.aclose()
