"""The documented ranges, roles, part types and array limits of each API: a 400 naming the field, in
the client's dialect, before anything goes upstream, when the request is converted; a request forwarded
to an upstream of its own format goes as written (the upstream is the authority)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from proxycast.testing import FakeAnthropic, FakeOpenAI
from tests.support import CLIENT_KEY, one_provider, start_gateway

if TYPE_CHECKING:
    import trio

    from tests.support import Gateway

HI = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        pytest.param({"temperature": 2.5}, "temperature", id="temperature-high"),
        pytest.param({"temperature": -0.1}, "temperature", id="temperature-low"),
        pytest.param({"top_p": 1.5}, "top_p", id="top_p"),
        pytest.param({"presence_penalty": -3}, "presence_penalty", id="presence"),
        pytest.param({"frequency_penalty": 2.1}, "frequency_penalty", id="frequency"),
        pytest.param({"max_tokens": 0}, "max_tokens", id="max_tokens"),
        pytest.param({"max_completion_tokens": -5}, "max_completion_tokens", id="max_completion"),
        pytest.param({"n": 0}, "n", id="n"),
        pytest.param({"messages": []}, "messages", id="no-messages"),
        pytest.param(
            {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", id="role"
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
            "messages[0].content[0].type",
            id="part-type",
        ),
        pytest.param({"stop": ["a", "b", "c", "d", "e"]}, "stop", id="five-stops"),
        pytest.param(
            {"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]},
            "tools",
            id="129-tools",
        ),
    ],
)
async def test_openai_inbound(
    nursery: trio.Nursery, gateway: Gateway, fake: FakeOpenAI, change: dict[str, Any], param: str
) -> None:
    # Converted (to an Anthropic upstream) or forwarded (to an OpenAI-compatible one), a value out of
    # OpenAI's documented ranges is refused naming the field, and nothing goes upstream.
    claude_fake = FakeAnthropic()
    await nursery.start(claude_fake.serve)
    converted = await start_gateway(
        nursery, one_provider("anthropic", claude_fake.base_url, ("llama3.2",))
    )
    body = {"model": "llama3.2", "messages": HI, **change}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            converted.v1 + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
        forwarded = await client.post(
            gateway.v1 + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param.split("[")[0] in error["message"]
    assert claude_fake.requests == []  # nothing went upstream
    assert forwarded.status_code == 400
    assert forwarded.json()["error"]["param"] == param
    assert fake.requests == []


async def test_openai_inbound_accepts_the_edges(gateway: Gateway, fake: FakeOpenAI) -> None:
    body = {
        "model": "llama3.2",
        "messages": HI,
        "temperature": 2,
        "top_p": 0,
        "presence_penalty": -2,
        "max_tokens": 1,
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.v1 + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert response.status_code == 200
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("change", "param"),
    [
        pytest.param({"temperature": 1.5}, "temperature", id="temperature"),
        pytest.param({"top_p": -1}, "top_p", id="top_p"),
        pytest.param({"max_tokens": 0}, "max_tokens", id="max_tokens"),
        pytest.param({"messages": []}, "messages", id="no-messages"),
        pytest.param(
            {"thinking": {"type": "enabled", "budget_tokens": 100}},
            "thinking.budget_tokens",
            id="budget",
        ),
    ],
)
async def test_anthropic_inbound_checks_what_it_converts_and_forwards_the_rest(
    nursery: trio.Nursery, change: dict[str, Any], param: str
) -> None:
    openai_fake, claude_fake = FakeOpenAI(), FakeAnthropic()
    await nursery.start(openai_fake.serve)
    await nursery.start(claude_fake.serve)
    converted = await start_gateway(nursery, one_provider("openai", openai_fake.base_url, ("m",)))
    forwarded = await start_gateway(
        nursery, one_provider("anthropic", claude_fake.base_url, ("m",))
    )
    body = {"model": "m", "max_tokens": 10, "messages": HI, **change}
    async with httpx.AsyncClient() as client:
        refused = await client.post(
            converted.url + "/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY}
        )
        passed = await client.post(
            forwarded.url + "/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY}
        )
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert param in refused.json()["error"]["message"]
    assert openai_fake.requests == []
    # the same body to an Anthropic upstream is Anthropic's to judge: it went through as written
    assert len(claude_fake.requests) == 1
    assert passed.status_code == 200
