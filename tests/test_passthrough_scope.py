"""Same-format passthrough checks only what the gateway needs (model, stream, an object within the
limits) and forwards the rest; conversions turn a mid-conversation system message into the target's
system instructions. Also: ``HEAD /`` and query strings on every route."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from proxycast.testing import FakeAnthropic, FakeGemini, FakeOpenAI
from tests.support import CLIENT_KEY, one_provider, start_gateway

if TYPE_CHECKING:
    import trio

    from tests.support import Gateway

CLAUDE_HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}

# What Claude Code sends (recorded from version 2.1.197): a system message among the turns, a block
# type and top-level fields newer than proxycast's declarations.
CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-opus-4-8",
    "max_tokens": 64000,
    "system": [{"type": "text", "text": "You are Claude Code."}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "context"}]},
        {"role": "system", "content": "Prefer short answers."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "hologram"}]},
    ],
    "thinking": {"type": "adaptive"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
}


async def test_anthropic_passthrough_forwards_what_it_does_not_know(nursery: trio.Nursery) -> None:
    fake = FakeAnthropic()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("anthropic", fake.base_url, ("claude-*",)))
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.url + "/v1/messages?beta=true", json=CLAUDE_CODE_BODY, headers=CLAUDE_HEADERS
        )
    assert response.status_code == 200, response.text
    assert fake.requests[0].json() == CLAUDE_CODE_BODY


async def test_openai_passthrough_forwards_what_it_does_not_know(
    gateway: Gateway, fake: FakeOpenAI
) -> None:
    # Fields and shapes proxycast does not declare are the upstream's to judge. (OpenAI's documented
    # ranges, roles and part types, and the JSON types of the fields it declares, are enforced on
    # every path: see test_validation_ranges.py and test_bad_input.py.)
    body = {
        "model": "llama3.2",
        "messages": [
            {"role": "user", "content": "be terse", "cache_control": {"type": "ephemeral"}},
            {"role": "user", "content": [{"type": "text", "text": "hi", "annotations": [1]}]},
        ],
        "prediction_mode": "not-a-known-field",
        "reasoning": {"effort": "max"},
        "verbosity": "low",
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.v1 + "/chat/completions?api-version=2025-01-01",
            json=body,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert response.status_code == 200, response.text
    assert fake.requests[0].json() == body


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"messages": []}, "model", id="no-model"),
        pytest.param({"model": "", "messages": []}, "model", id="empty-model"),
        pytest.param({"model": 3, "messages": []}, "model", id="model-number"),
        pytest.param({"model": "llama3.2", "stream": "yes"}, "stream", id="stream-string"),
    ],
)
async def test_passthrough_still_needs_model_and_stream(
    gateway: Gateway, fake: FakeOpenAI, body: dict[str, Any], param: str
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.v1 + "/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert fake.requests == []


async def test_mid_conversation_system_becomes_openai_system_instructions(
    nursery: trio.Nursery,
) -> None:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("openai", fake.base_url, ("claude-*",)))
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.url + "/v1/messages?beta=true", json=CLAUDE_CODE_BODY, headers=CLAUDE_HEADERS
        )
    assert response.status_code == 200, response.text
    messages = fake.requests[0].json()["messages"]
    assert messages[0] == {
        "role": "system",
        "content": "You are Claude Code.\n\nPrefer short answers.",
    }
    assert [m["role"] for m in messages[1:]] == ["user", "user"]


async def test_mid_conversation_system_becomes_gemini_system_instruction(
    nursery: trio.Nursery,
) -> None:
    fake = FakeGemini()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("gemini", fake.base_url, ("claude-*",)))
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.url + "/v1/messages", json=CLAUDE_CODE_BODY, headers=CLAUDE_HEADERS
        )
    assert response.status_code == 200, response.text
    sent = fake.requests[0].json()
    texts = [p["text"] for p in sent["systemInstruction"]["parts"]]
    assert texts == ["You are Claude Code.", "Prefer short answers."]
    assert all(c["role"] in ("user", "model") for c in sent["contents"])


async def test_head_and_get_root_answer_without_a_key(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as client:
        head = await client.head(gateway.url + "/")
        get = await client.get(gateway.url + "/?probe=1")
    assert head.status_code == 200
    assert head.content == b""
    assert get.json()["name"] == "proxycast"


async def test_anthropic_errors_that_retrying_cannot_fix_say_so(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as client:
        unauthorised = await client.post(
            gateway.url + "/v1/messages?beta=true",
            json=CLAUDE_CODE_BODY,
            headers={"x-api-key": "wrong"},
        )
        unknown = await client.post(
            gateway.url + "/v1/messages",
            json={**CLAUDE_CODE_BODY, "model": "nope"},
            headers=CLAUDE_HEADERS,
        )
        openai_dialect = await client.post(
            gateway.v1 + "/chat/completions", json={}, headers={"authorization": "Bearer wrong"}
        )
    assert unauthorised.status_code == 401
    assert unauthorised.headers["x-should-retry"] == "false"
    assert unauthorised.json()["error"]["type"] == "authentication_error"
    assert unknown.status_code == 404
    assert unknown.headers["x-should-retry"] == "false"
    assert "x-should-retry" not in openai_dialect.headers
