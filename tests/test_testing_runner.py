"""``python -m proxycast.testing``: the three fakes in a process of their own, as a user runs them to try
an app; and the fakes' HEAD handling and query strings."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import httpx
import openai
import trio

from tests.support import CLIENT_KEY, one_provider, start_gateway
from tests.test_cli import LineReader

if TYPE_CHECKING:
    from proxycast.testing import FakeOpenAI


async def test_runner_serves_the_three_fakes(nursery: trio.Nursery) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "proxycast.testing", "--models", "gpt-x,claude-x"], stdout=-1
    )
    try:
        assert process.stdout is not None
        reader = LineReader(process.stdout)
        with trio.fail_after(20):
            urls = dict([(await reader.line()).split("\t") for _ in range(3)])
        assert set(urls) == {"openai", "anthropic", "gemini"}
        async with httpx.AsyncClient() as client:
            for url in urls.values():
                assert (await client.head(url.removesuffix("/v1") + "/")).status_code == 200
            beta = await client.post(
                urls["anthropic"] + "/v1/messages?beta=true",
                json={"model": "claude-x", "max_tokens": 5, "messages": []},
            )
            listed = await client.get(urls["openai"] + "/models")
        assert beta.status_code == 200
        assert [m["id"] for m in listed.json()["data"]] == ["gpt-x", "claude-x"]
        # an app under test, through the gateway, against the runner's Gemini fake
        gateway = await start_gateway(nursery, one_provider("gemini", urls["gemini"], ("gem*",)))
        async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY) as sdk:
            reply = await sdk.chat.completions.create(
                model="gemini-x", messages=[{"role": "user", "content": "Hi"}]
            )
        assert reply.choices[0].message.content == "Hello from Gemini."
        logged = []
        with trio.fail_after(5):
            while "gemini: POST /v1beta/models/gemini-x:generateContent" not in logged:
                logged.append(await reader.line())
        assert "anthropic: POST /v1/messages?beta=true" in logged
    finally:
        process.terminate()
        await process.wait()


async def test_head_on_any_route_does_not_break_a_fake(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient() as client:
        head = await client.head(fake.base_url + "/models")
        after = await client.get(fake.base_url + "/models?x=1")
    assert head.status_code == 200
    assert head.content == b""
    assert after.status_code == 200


async def test_runner_with_rules_answers_by_rule() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "proxycast.testing", "--rules"], stdout=-1
    )
    try:
        assert process.stdout is not None
        reader = LineReader(process.stdout)
        with trio.fail_after(20):
            urls = dict([(await reader.line()).split("\t") for _ in range(3)])
        tool = {"name": "get_weather", "input_schema": {"type": "object"}}
        body = {"model": "m", "max_tokens": 9, "tools": [tool]}
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                urls["anthropic"] + "/v1/messages",
                json={**body, "messages": [{"role": "user", "content": "Weather?"}]},
            )
        assert answer.json()["content"][0]["name"] == "get_weather"  # the first tool, called
    finally:
        process.terminate()
        await process.wait()
