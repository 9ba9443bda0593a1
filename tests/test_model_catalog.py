"""Models from the upstreams: a provider with globs lists what its models endpoint returns, filtered by
its globs, fetched in the background and cached; a slow upstream never slows ``/v1/models``; exact
names and aliases as before. Also ``proxycast models`` (env-only mode lists models now)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import httpx
import trio

from proxycast.testing import FakeAnthropic, FakeGemini, FakeOpenAI
from tests.support import CLIENT_KEY, one_provider, start_gateway

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support import Gateway

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


async def model_ids(gateway: Gateway) -> list[str]:
    async with httpx.AsyncClient() as client:
        response = await client.get(gateway.v1 + "/models", headers=AUTH)
    assert response.status_code == 200
    return [m["id"] for m in response.json()["data"]]


async def model_ids_once(gateway: Gateway, done: Callable[[list[str]], bool]) -> list[str]:
    """The list, asked again until ``done`` says the upstream's models are in (10 s at most): a
    request waits only ``catalog.WAIT`` (0.5 s) for the fetch it asked for, which a loaded machine
    can overrun; the fetch goes on, and a later request lists it."""
    ids = await model_ids(gateway)
    with trio.move_on_after(10):
        while not done(ids):
            await trio.sleep(0.05)
            ids = await model_ids(gateway)
    return ids


async def test_each_kind_lists_its_upstream_models_filtered_by_globs(
    nursery: trio.Nursery,
) -> None:
    listed = ("claude-a", "claude-b", "other", "claude-c")
    for fake, type_ in (
        (FakeAnthropic(), "anthropic"),
        (FakeGemini(), "gemini"),
        (FakeOpenAI(), "openai"),
    ):
        fake.models = listed
        await nursery.start(fake.serve)
        config = one_provider(type_, fake.base_url, ("claude-*", "exact-one"), {"x": "claude-b"})
        gateway = await start_gateway(nursery, config)
        expected = ["exact-one", "x", "claude-a", "claude-b", "claude-c"]
        ids = await model_ids_once(gateway, lambda ids: len(ids) > 2)
        assert ids == expected, type_
        await model_ids(gateway)  # cached: asked once
        assert len([r for r in fake.requests if r.method == "GET"]) == 1, type_


async def test_pages_are_followed(nursery: trio.Nursery) -> None:
    fake = FakeAnthropic()
    fake.models = tuple(f"claude-{i:04d}" for i in range(2500))
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("anthropic", fake.base_url, ("claude-*",)))
    assert len(await model_ids_once(gateway, lambda ids: len(ids) >= 2500)) == 2500
    assert [r.path for r in fake.requests][1] == "/v1/models?limit=1000&after_id=claude-0999"


async def test_a_slow_upstream_does_not_slow_the_list(nursery: trio.Nursery) -> None:
    gate = trio.Event()

    class Slow(FakeOpenAI):
        async def side_route(self, request, respond):  # type: ignore[no-untyped-def]
            if request.method == "GET":
                await gate.wait()
            return await super().side_route(request, respond)

    fake = Slow()
    fake.models = ("gpt-slow",)
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("openai", fake.base_url, ("gpt-*", "m")))
    started = trio.current_time()
    assert await model_ids(gateway) == ["m"]  # answered without the upstream's list
    assert trio.current_time() - started < 2
    gate.set()
    with trio.fail_after(5):
        await fake.wait_for_requests(1)
    listed = await model_ids_once(gateway, lambda ids: len(ids) > 1)  # the refresh came in
    assert listed == ["m", "gpt-slow"]


async def test_proxycast_models_in_env_only_mode(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeAnthropic()
    fake.models = ("claude-sonnet-4-5", "claude-haiku-4-5")
    await nursery.start(fake.serve)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": fake.base_url,
    }
    result = await trio.run_process(
        [sys.executable, "-m", "proxycast", "models"],
        env=env,
        cwd=str(tmp_path),
        capture_stdout=True,
        capture_stderr=True,
    )
    assert result.stdout.decode().splitlines() == [
        "claude-sonnet-4-5\tanthropic",
        "claude-haiku-4-5\tanthropic",
    ]
    assert fake.requests[0].headers["x-api-key"] == "sk-test"
