"""Agent loops across formats (issue 13): each test runs two turns through the real server with an
official SDK, feeding turn 1's answer back as the client would, against fakes that refuse what the real
providers refuse (thought signatures, id patterns and lengths, Claude's thinking-first rule, DeepSeek's
reasoning echo, Gemini's Schema fields, Claude's ``metadata.user_id`` rule)."""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import openai
import pytest

from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.testing import (
    AnthropicScript,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    FakeToolCall,
    GeminiScript,
    Script,
)
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from tests.support import CLIENT_KEY, UPSTREAM_KEY, Gateway, start_gateway

if TYPE_CHECKING:
    import trio

ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
SIGNATURE = "Cs4B+/ab==" + "x" * 50 + "/+="
"""A Gemini thought signature with every character base64 has and tool ids may not."""
WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ASK = {"role": "user", "content": "Weather in Paris?"}


@attrs.define
class Fakes:
    claude: FakeAnthropic
    oai: FakeOpenAI
    deepseek: FakeOpenAI
    gemini: FakeGemini


@pytest.fixture(name="fakes")
async def _fakes(nursery: trio.Nursery) -> Fakes:
    fakes = Fakes(FakeAnthropic(), FakeOpenAI(), FakeOpenAI(reasoning_echo=True), FakeGemini())
    for fake in (fakes.claude, fakes.oai, fakes.deepseek, fakes.gemini):
        await nursery.start(fake.serve)
    return fakes


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, fakes: Fakes) -> Gateway:
    def provider(name: str, kind: str, url: str, models: str) -> ProviderConfig:
        return ProviderConfig(
            name=name, type=kind, base_url=url, api_keys=(UPSTREAM_KEY,), models=(models,)
        )

    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            provider("claude", "anthropic", fakes.claude.base_url, "claude-*"),
            provider("oai", "openai", fakes.oai.base_url, "gpt-*"),
            provider("deepseek", "openai", fakes.deepseek.base_url, "deepseek-*"),
            provider("gem", "gemini", fakes.gemini.base_url, "gemini-*"),
        ),
    )
    return await start_gateway(nursery, config)


def openai_client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


def anthropic_client(gateway: Gateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


def echoed(message: Any) -> dict[str, Any]:
    """An OpenAI assistant message as an agent sends it back: everything the answer had."""
    return message.model_dump(exclude_none=True)  # type: ignore[no-any-return]


def anthropic_turn(message: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [b.model_dump(exclude_none=True) for b in message.content],
    }


def results(message: Any, text: str = "Sunny") -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": b.id, "content": text}
            for b in message.content
            if b.type == "tool_use"
        ],
    }


def gemini_sent(fake: FakeGemini) -> list[dict[str, Any]]:
    return [p for c in fake.requests[-1].json()["contents"] for p in c["parts"]]


# 1. Gemini thought signatures through the Anthropic API


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_gemini_signatures_survive_an_anthropic_client_loop(
    gateway: Gateway, fakes: Fakes, stream: bool
) -> None:
    fakes.gemini.script(
        GeminiScript(
            parts=(fg.Text("Checking."), fg.Call("get_weather", {"city": "Paris"}, SIGNATURE)),
            final_signature="text+sig/==",
        ),
        GeminiScript(parts=(fg.Text("Sunny in Paris."),)),
    )
    async with anthropic_client(gateway) as c:
        request: dict[str, Any] = {
            "model": "gemini-3-pro",
            "max_tokens": 100,
            "tools": [WEATHER_ANTHROPIC],
            "messages": [ASK],
        }
        if stream:
            async with c.messages.stream(**request) as events:
                first = await events.get_final_message()
        else:
            first = await c.messages.create(**request)
        uses = [b for b in first.content if b.type == "tool_use"]
        assert len(uses) == 1
        assert ANTHROPIC_ID.match(uses[0].id)
        request["messages"] = [ASK, anthropic_turn(first), results(first)]
        final = await c.messages.create(**request)
    assert final.content[0].text == "Sunny in Paris."  # type: ignore[union-attr]
    sent = gemini_sent(fakes.gemini)
    call = next(p for p in sent if "functionCall" in p)
    assert call["thoughtSignature"] == SIGNATURE
    assert sent[-2:] == [  # the answer's last part: an empty text signed, as it came
        {"text": "", "thoughtSignature": "text+sig/=="},
        {"functionResponse": {"name": "get_weather", "response": {"content": "Sunny"}}},
    ]


# 2. Tool calls without a signature sent to Gemini 3


async def test_history_from_another_model_reaches_gemini_3(gateway: Gateway, fakes: Fakes) -> None:
    fakes.oai.script(
        Script(text="", tool_calls=(FakeToolCall(id="call_1", name="get_weather", arguments="{}"),))
    )
    fakes.gemini.script(GeminiScript(parts=(fg.Text("Sunny."),)))
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(
            model="gpt-4o", messages=[ASK], tools=[WEATHER_OPENAI]
        )
        message = first.choices[0].message
        assert message.tool_calls
        final = await c.chat.completions.create(
            model="gemini-3-flash",
            tools=[WEATHER_OPENAI],
            messages=[
                ASK,
                echoed(message),  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "Sunny"},
            ],
        )
    assert final.choices[0].message.content == "Sunny."
    call = next(p for p in gemini_sent(fakes.gemini) if "functionCall" in p)
    assert call["thoughtSignature"] == "skip_thought_signature_validator"


# 3. Signed ids leaving their conversation


async def test_signed_ids_fit_openai_when_the_loop_moves_there(
    gateway: Gateway, fakes: Fakes
) -> None:
    fakes.gemini.script(GeminiScript(parts=(fg.Call("get_weather", {"city": "Rome"}, SIGNATURE),)))
    fakes.oai.script(Script(text="Sunny in Rome."))
    async with anthropic_client(gateway) as c:
        first = await c.messages.create(
            model="gemini-3-pro", max_tokens=100, tools=[WEATHER_ANTHROPIC], messages=[ASK]
        )
        assert len(first.content[0].id) > 40  # type: ignore[union-attr]
        final = await c.messages.create(
            model="gpt-4o",
            max_tokens=100,
            tools=[WEATHER_ANTHROPIC],
            messages=[ASK, anthropic_turn(first), results(first)],  # type: ignore[list-item]
        )
    assert final.content[0].text == "Sunny in Rome."  # type: ignore[union-attr]
    messages = fakes.oai.requests[-1].json()["messages"]
    call_id = messages[1]["tool_calls"][0]["id"]
    assert len(call_id) <= 40
    assert messages[2] == {"role": "tool", "tool_call_id": call_id, "content": "Sunny"}


# 4. Claude extended thinking + tools for OpenAI clients


def thinking_answer() -> AnthropicScript:
    return AnthropicScript(
        blocks=(
            fa.Thinking("Paris, so the weather tool.", "sig-claude-1"),
            fa.RedactedThinking("opaque-data"),
            fa.ToolUse("get_weather", {"city": "Paris"}, id="toolu_01"),
        )
    )


async def test_claude_thinking_blocks_come_back_from_an_openai_client(
    gateway: Gateway, fakes: Fakes
) -> None:
    fakes.claude.script(thinking_answer(), AnthropicScript(blocks=(fa.Text("Sunny."),)))
    async with openai_client(gateway) as c:
        kwargs: dict[str, Any] = {
            "model": "claude-sonnet-4-5",
            "reasoning_effort": "high",
            "tools": [WEATHER_OPENAI],
        }
        first = await c.chat.completions.create(messages=[ASK], **kwargs)
        message = first.choices[0].message
        assert message.model_extra is not None
        assert message.model_extra["thinking_blocks"] == [
            {
                "type": "thinking",
                "thinking": "Paris, so the weather tool.",
                "signature": "sig-claude-1",
            },
            {"type": "redacted_thinking", "data": "opaque-data"},
        ]
        assert message.tool_calls
        tool = {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "Sunny"}
        final = await c.chat.completions.create(messages=[ASK, echoed(message), tool], **kwargs)
    assert final.choices[0].message.content == "Sunny."
    sent = fakes.claude.requests[-1].json()
    assert sent["thinking"]["type"] == "enabled"
    assert [b["type"] for b in sent["messages"][1]["content"]] == [
        "thinking",
        "redacted_thinking",
        "tool_use",
    ]


async def test_streamed_thinking_blocks_and_reasoning_details_come_back(
    gateway: Gateway, fakes: Fakes
) -> None:
    fakes.claude.script(thinking_answer(), AnthropicScript(blocks=(fa.Text("Sunny."),)))
    async with openai_client(gateway) as c:
        kwargs: dict[str, Any] = {
            "model": "claude-sonnet-4-5",
            "reasoning_effort": "high",
            "tools": [WEATHER_OPENAI],
        }
        stream = await c.chat.completions.create(messages=[ASK], stream=True, **kwargs)
        blocks: list[dict[str, Any]] = []
        calls: list[Any] = []
        async for chunk in stream:
            delta = chunk.choices[0].delta if chunk.choices else None
            for block in (delta.model_extra or {}).get("thinking_blocks", []) if delta else []:
                # LiteLLM's fragments: a block's thinking text, then its signature, in pieces
                if blocks and blocks[-1]["type"] == "thinking" and not blocks[-1]["signature"]:
                    blocks[-1]["thinking"] += block.get("thinking", "")
                    blocks[-1]["signature"] = block.get("signature") or ""
                else:
                    blocks.append({"signature": "", **block})
            calls += delta.tool_calls or [] if delta else []
        assert blocks == [
            {
                "type": "thinking",
                "thinking": "Paris, so the weather tool.",
                "signature": "sig-claude-1",
            },
            {"signature": "", "type": "redacted_thinking", "data": "opaque-data"},
        ]
        details = [  # the same blocks as OpenRouter's reasoning_details
            {"type": "reasoning.text", "text": blocks[0]["thinking"], "signature": "sig-claude-1"},
            {"type": "reasoning.encrypted", "data": "opaque-data"},
        ]
        assistant = {
            "role": "assistant",
            "content": None,
            "reasoning_details": details,
            "tool_calls": [
                {
                    "id": calls[0].id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        }
        tool = {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny"}
        final = await c.chat.completions.create(messages=[ASK, assistant, tool], **kwargs)
    assert final.choices[0].message.content == "Sunny."
    content = fakes.claude.requests[-1].json()["messages"][1]["content"]
    assert [b["type"] for b in content] == ["thinking", "redacted_thinking", "tool_use"]


async def test_a_tool_turn_without_its_thinking_drops_thinking_for_that_request(
    gateway: Gateway, fakes: Fakes
) -> None:
    fakes.claude.script(thinking_answer(), AnthropicScript(blocks=(fa.Text("Sunny."),)))
    async with openai_client(gateway) as c:
        kwargs: dict[str, Any] = {
            "model": "claude-sonnet-4-5",
            "reasoning_effort": "high",
            "tools": [WEATHER_OPENAI],
        }
        first = await c.chat.completions.create(messages=[ASK], **kwargs)
        message = first.choices[0].message
        assert message.tool_calls
        bare = {  # a client that keeps only the standard fields
            "role": "assistant",
            "content": message.content,
            "tool_calls": [t.model_dump() for t in message.tool_calls],
        }
        tool = {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "Sunny"}
        final = await c.chat.completions.create(messages=[ASK, bare, tool], **kwargs)
    assert final.choices[0].message.content == "Sunny."
    assert "thinking" not in fakes.claude.requests[-1].json()


# 5. Reasoning echo for OpenAI-compatible reasoning upstreams


async def test_thinking_from_an_anthropic_client_is_echoed_to_deepseek(
    gateway: Gateway, fakes: Fakes
) -> None:
    fakes.deepseek.script(
        Script(
            text="",
            reasoning="The user wants Paris weather.",
            tool_calls=(
                FakeToolCall(id="call_0", name="get_weather", arguments='{"city": "Paris"}'),
            ),
        ),
        Script(text="Sunny."),
    )
    async with anthropic_client(gateway) as c:
        request: dict[str, Any] = {
            "model": "deepseek-v4",
            "max_tokens": 100,
            "tools": [WEATHER_ANTHROPIC],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [ASK],
        }
        first = await c.messages.create(**request)
        assert [b.type for b in first.content] == ["thinking", "tool_use"]
        request["messages"] = [ASK, anthropic_turn(first), results(first)]
        final = await c.messages.create(**request)
    assert final.content[0].text == "Sunny."  # type: ignore[union-attr]
    assistant = fakes.deepseek.requests[-1].json()["messages"][1]
    assert assistant["reasoning_content"] == "The user wants Paris weather."


def _unused() -> None:  # keep imports honest for linters until the later items use them
    json.dumps(base64.b64encode(b""))


# 6. GET /v1/models in Anthropic's shape


async def test_anthropic_sdk_lists_models_and_uses_one(gateway: Gateway, nursery: trio.Nursery) -> None:
    provider = ProviderConfig(
        name="claude",
        type="anthropic",
        base_url=gateway.config.providers[0].base_url,
        api_keys=(UPSTREAM_KEY,),
        models=tuple(f"claude-{i}" for i in range(25)),
    )
    listing = await start_gateway(
        nursery, Config(server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(provider,))
    )
    async with anthropic_client(listing) as c:
        first = await c.models.list(limit=10)
        assert [m.id for m in first.data] == [f"claude-{i}" for i in range(10)]
        assert first.has_more
        every = [m.id async for m in await c.models.list(limit=10)]
        assert every == [f"claude-{i}" for i in range(25)]
        model = await c.models.retrieve(every[-1])
        assert (model.type, model.id, model.display_name) == ("model", "claude-24", "claude-24")
        assert model.created_at.year == 1970
        assert model.lifecycle == "active"
        answer = await c.messages.create(model=model.id, max_tokens=10, messages=[ASK])
    assert answer.model == "claude-24"
    async with openai_client(listing) as o:  # OpenAI clients keep OpenAI's shape
        assert [m.id async for m in o.models.list()][:2] == ["claude-0", "claude-1"]
