"""Agent loops across formats: each test runs two turns through the real server with an
official SDK, feeding turn 1's answer back as the client would, against fakes that refuse what the real
providers refuse (thought signatures, id patterns and lengths, Claude's thinking-first rule, DeepSeek's
reasoning echo, Gemini's Schema fields, Claude's ``metadata.user_id`` rule)."""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING, Any, Literal

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
WEATHER_OPENAI: dict[str, Any] = {
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


# 6. GET /v1/models in Anthropic's shape


async def test_anthropic_sdk_lists_models_and_uses_one(
    gateway: Gateway, nursery: trio.Nursery
) -> None:
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


# 7. Reasoning settings never silently off


async def test_max_effort_on_an_adaptive_only_claude_loop(gateway: Gateway, fakes: Fakes) -> None:
    fakes.claude.script(thinking_answer(), AnthropicScript(blocks=(fa.Text("Sunny."),)))
    async with openai_client(gateway) as c:
        kwargs: dict[str, Any] = {
            "model": "claude-opus-4-7",
            "reasoning_effort": "max",
            "tools": [WEATHER_OPENAI],
        }
        first = await c.chat.completions.create(messages=[ASK], **kwargs)
        message = first.choices[0].message
        assert message.tool_calls
        tool = {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "Sunny"}
        final = await c.chat.completions.create(messages=[ASK, echoed(message), tool], **kwargs)
    assert final.choices[0].message.content == "Sunny."
    for request in fakes.claude.requests[-2:]:
        sent = request.json()
        assert (sent["thinking"], sent["output_config"]) == (
            {"type": "adaptive"},
            {"effort": "max"},
        )


EFFORTS = ["none", "minimal", "low", "medium", "high", "xhigh", "max"]


@pytest.mark.parametrize("effort", EFFORTS)
async def test_every_sdk_effort_maps_to_something(
    gateway: Gateway, fakes: Fakes, effort: str
) -> None:
    async with openai_client(gateway) as c:
        for model in ("claude-sonnet-4-5", "gemini-2.5-flash", "gemini-3-pro"):
            first = await c.chat.completions.create(
                model=model,
                messages=[ASK],
                reasoning_effort=effort,  # type: ignore[arg-type]
            )
            again = [ASK, echoed(first.choices[0].message), {"role": "user", "content": "And?"}]
            await c.chat.completions.create(
                model=model,
                messages=again,
                reasoning_effort=effort,  # type: ignore[arg-type]
            )
    claude = fakes.claude.requests[-1].json()
    budgets = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 16384}
    if effort == "none":
        assert "thinking" not in claude
    else:
        assert claude["thinking"] == {
            "type": "enabled",
            "budget_tokens": budgets.get(effort, 32000),
        }
    flash, pro = (
        r.json()["generationConfig"]["thinkingConfig"] for r in fakes.gemini.requests[-3::2]
    )
    assert flash["thinkingBudget"] == {"none": 0, "xhigh": -1, "max": -1}.get(
        effort, {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}.get(effort)
    )
    assert pro["thinkingLevel"] in ("low", "high")


async def test_an_unknown_effort_is_a_400_naming_it(gateway: Gateway) -> None:
    async with openai_client(gateway) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(
                model="claude-sonnet-4-5",
                messages=[ASK],
                reasoning_effort="ultra",  # type: ignore[arg-type]
            )
    assert info.value.param == "reasoning_effort"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-5", {"reasoning_effort": "xhigh"}),
        ("gemini-3-pro", {"thinkingConfig": {"thinkingLevel": "high", "includeThoughts": True}}),
    ],
)
async def test_adaptive_thinking_and_effort_from_an_anthropic_client(
    gateway: Gateway, fakes: Fakes, model: str, expected: dict[str, Any]
) -> None:
    async with anthropic_client(gateway) as c:
        request: dict[str, Any] = {
            "model": model,
            "max_tokens": 100,
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "xhigh"},
            "messages": [ASK],
        }
        first = await c.messages.create(**request)
        request["messages"] = [ASK, anthropic_turn(first), {"role": "user", "content": "And?"}]
        await c.messages.create(**request)
    fake = fakes.oai if model.startswith("gpt") else fakes.gemini
    sent = fake.requests[-1].json()
    config = sent if model.startswith("gpt") else sent["generationConfig"]
    assert {k: config[k] for k in expected} == expected


# 8. Gemini schemas


async def test_pydantic_schemas_pass_gemini_in_a_loop(gateway: Gateway, fakes: Fakes) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Cat(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        kind: Literal["cat"]
        lives: int = pydantic.Field(multiple_of=1, ge=0)

    class Dog(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        kind: Literal["dog"]
        good: bool = True

    class Order(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        tags: set[str]
        point: tuple[float, float]
        pet: Cat | Dog = pydantic.Field(discriminator="kind")
        amount: float = pydantic.Field(multiple_of=0.5)

    schema = Order.model_json_schema()
    tool = {"type": "function", "function": {"name": "order", "parameters": schema}}
    fakes.gemini.script(
        GeminiScript(parts=(fg.Call("order", {"tags": ["a"], "point": [1, 2]}),)),
        GeminiScript(parts=(fg.Text('{"ok": true}'),)),
    )
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(
            model="gemini-2.5-flash",
            messages=[ASK],
            tools=[tool],  # type: ignore[list-item]
        )
        message = first.choices[0].message
        assert message.tool_calls
        final = await c.chat.completions.create(
            model="gemini-2.5-flash",
            tools=[tool],  # type: ignore[list-item]
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "order", "schema": schema},
            },
            messages=[
                ASK,
                echoed(message),  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "done"},
            ],
        )
    assert final.choices[0].message.content == '{"ok": true}'
    sent = fakes.gemini.requests[-1].json()
    parameters = sent["tools"][0]["functionDeclarations"][0]["parameters"]
    assert parameters["properties"]["point"]["minItems"] == 2
    assert "items are unique" in parameters["properties"]["tags"]["description"]
    assert "a multiple of 0.5" in parameters["properties"]["amount"]["description"]
    assert sent["generationConfig"]["responseSchema"]["properties"]["pet"]["anyOf"]


# 9. user to Claude


@pytest.mark.parametrize("user", ["alice@example.com", "+1 (555) 010-9999"])
async def test_a_personal_user_value_reaches_claude_as_a_stable_hash(
    gateway: Gateway, fakes: Fakes, user: str
) -> None:
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(
            model="claude-sonnet-4-5", messages=[ASK], user=user
        )
        again = [ASK, echoed(first.choices[0].message), {"role": "user", "content": "And?"}]
        await c.chat.completions.create(model="claude-sonnet-4-5", messages=again, user=user)
    ids = {r.json()["metadata"]["user_id"] for r in fakes.claude.requests[-2:]}
    assert len(ids) == 1
    assert re.fullmatch(r"u_[0-9a-f]{32}", ids.pop())


# 10. Structured outputs


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name"],
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_json_schema_to_claude_is_its_structured_output(
    gateway: Gateway, fakes: Fakes, stream: bool
) -> None:
    fakes.claude.script(
        AnthropicScript(blocks=(fa.Text('{"name": "Ada"}'),)),
        AnthropicScript(blocks=(fa.Text('{"name": "Bob"}'),)),
    )
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }
    messages: list[Any] = [ASK]
    async with openai_client(gateway) as c:
        for expected in ('{"name": "Ada"}', '{"name": "Bob"}'):
            if stream:
                chunks = await c.chat.completions.create(
                    model="claude-sonnet-4-5",
                    messages=messages,
                    response_format=response_format,
                    stream=True,
                )
                text = "".join(
                    [ch.choices[0].delta.content or "" async for ch in chunks if ch.choices]
                )
            else:
                answer = await c.chat.completions.create(
                    model="claude-sonnet-4-5", messages=messages, response_format=response_format
                )
                text = answer.choices[0].message.content or ""
            assert text == expected
            messages += [
                {"role": "assistant", "content": text},
                {"role": "user", "content": "Next"},
            ]
    sent = fakes.claude.requests[-1].json()
    assert sent["output_config"]["format"] == {
        "type": "json_schema",
        "schema": {**PERSON, "additionalProperties": False},
    }


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_json_object_to_claude_is_a_forced_tool_whose_input_is_the_content(
    gateway: Gateway, fakes: Fakes, stream: bool
) -> None:
    answer_tool = fa.ToolUse("proxycast_json_response", {"name": "Ada"}, id="toolu_json")
    fakes.claude.script(
        AnthropicScript(blocks=(answer_tool,)), AnthropicScript(blocks=(answer_tool,))
    )
    messages: list[Any] = [ASK]
    async with openai_client(gateway) as c:
        for _ in range(2):
            if stream:
                chunks = await c.chat.completions.create(
                    model="claude-sonnet-4-5",
                    messages=messages,
                    response_format={"type": "json_object"},
                    stream=True,
                )
                frames = [ch async for ch in chunks if ch.choices]
                text = "".join(ch.choices[0].delta.content or "" for ch in frames)
                assert not any(ch.choices[0].delta.tool_calls for ch in frames)
                finish = frames[-1].choices[0].finish_reason
            else:
                answer = await c.chat.completions.create(
                    model="claude-sonnet-4-5",
                    messages=messages,
                    response_format={"type": "json_object"},
                )
                text = answer.choices[0].message.content or ""
                assert answer.choices[0].message.tool_calls is None
                finish = answer.choices[0].finish_reason
            assert (json.loads(text), finish) == ({"name": "Ada"}, "stop")
            messages += [
                {"role": "assistant", "content": text},
                {"role": "user", "content": "Next"},
            ]
    sent = fakes.claude.requests[-1].json()
    assert sent["tool_choice"] == {"type": "tool", "name": "proxycast_json_response"}


@pytest.mark.parametrize("model", ["gpt-4o", "gemini-2.5-flash"])
async def test_anthropic_output_format_and_strict_tools_reach_other_upstreams(
    gateway: Gateway, fakes: Fakes, model: str
) -> None:
    async with anthropic_client(gateway) as c:
        request: dict[str, Any] = {
            "model": model,
            "max_tokens": 100,
            "output_config": {"format": {"type": "json_schema", "schema": PERSON}},
            "tools": [{**WEATHER_ANTHROPIC, "strict": True}],
            "messages": [ASK],
        }
        first = await c.messages.create(**request)
        request["messages"] = [ASK, anthropic_turn(first), {"role": "user", "content": "Again"}]
        await c.messages.create(**request)
    if model == "gpt-4o":
        sent = fakes.oai.requests[-1].json()
        assert sent["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": PERSON, "strict": True},
        }
        assert sent["tools"][0]["function"]["strict"] is True
    else:
        config = fakes.gemini.requests[-1].json()["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseSchema"]["properties"]["name"] == {"type": "STRING"}


async def test_strict_tools_from_openai_clients_reach_claude(
    gateway: Gateway, fakes: Fakes
) -> None:
    tool: Any = {**WEATHER_OPENAI, "function": {**WEATHER_OPENAI["function"], "strict": True}}
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(
            model="claude-sonnet-4-5", messages=[ASK], tools=[tool]
        )
        again = [ASK, echoed(first.choices[0].message), {"role": "user", "content": "And?"}]
        await c.chat.completions.create(model="claude-sonnet-4-5", messages=again, tools=[tool])
    assert fakes.claude.requests[-1].json()["tools"][0]["strict"] is True


# 11. Prompt caching


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
EPHEMERAL = {"type": "ephemeral"}


async def test_every_openai_cache_control_placement_reaches_claude(
    gateway: Gateway, fakes: Fakes
) -> None:
    fakes.claude.script(
        AnthropicScript(
            blocks=(fa.Text("Cached."),), cache_creation_input_tokens=300, cache_read_input_tokens=0
        ),
        AnthropicScript(
            blocks=(fa.Text("Read."),), cache_creation_input_tokens=0, cache_read_input_tokens=300
        ),
    )
    tool: Any = {**WEATHER_OPENAI, "cache_control": EPHEMERAL}
    messages: list[Any] = [
        {"role": "system", "content": "Long instructions.", "cache_control": EPHEMERAL},
        {
            "role": "user",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": f"data:image/png;base64,{PNG}"},
                    "cache_control": EPHEMERAL,
                }
            ],
        },
        {"role": "user", "content": "Describe it.", "cache_control": EPHEMERAL},
    ]
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(
            model="claude-sonnet-4-5", messages=messages, tools=[tool]
        )
        usage = first.usage
        assert usage is not None
        assert usage.prompt_tokens_details is not None
        details = usage.prompt_tokens_details.model_dump()
        assert (details["cached_tokens"], details["cache_creation_tokens"]) == (0, 300)
        assert details["cache_write_tokens"] == 300
        messages += [echoed(first.choices[0].message), {"role": "user", "content": "More."}]
        final = await c.chat.completions.create(
            model="claude-sonnet-4-5", messages=messages, tools=[tool]
        )
    assert final.usage is not None
    assert final.usage.prompt_tokens_details is not None
    assert final.usage.prompt_tokens_details.cached_tokens == 300
    sent = fakes.claude.requests[-1].json()
    assert sent["tools"][0]["cache_control"] == EPHEMERAL
    assert sent["system"][0]["cache_control"] == EPHEMERAL
    image, text = sent["messages"][0]["content"]
    assert (image["type"], image["cache_control"]) == ("image", EPHEMERAL)
    assert (text, sent["messages"][0]["role"]) == (
        {"type": "text", "text": "Describe it.", "cache_control": EPHEMERAL},
        "user",
    )


# 12. Media


def data_url(media: str, data: bytes) -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


async def test_text_and_image_files_reach_claude_as_blocks_it_accepts(
    gateway: Gateway, fakes: Fakes
) -> None:
    files: list[Any] = [
        {
            "type": "file",
            "file": {"file_data": data_url("text/plain", b"notes"), "filename": "a.txt"},
        },
        {
            "type": "file",
            "file": {"file_data": f"data:image/png;base64,{PNG}", "filename": "b.png"},
        },
        {"type": "text", "text": "Summarise."},
    ]
    messages: list[Any] = [{"role": "user", "content": files}]
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(model="claude-sonnet-4-5", messages=messages)
        messages += [echoed(first.choices[0].message), {"role": "user", "content": "More."}]
        await c.chat.completions.create(model="claude-sonnet-4-5", messages=messages)
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(
                model="claude-sonnet-4-5",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "file",
                                "file": {"file_data": data_url("application/zip", b"PK")},
                            }
                        ],
                    }
                ],
            )
    assert "application/zip" in info.value.message
    document, image, _ = fakes.claude.requests[-1].json()["messages"][0]["content"]
    assert document == {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
        "title": "a.txt",
    }
    assert image == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }


async def test_audio_and_https_images_reach_gemini(gateway: Gateway, fakes: Fakes) -> None:
    content: list[Any] = [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    messages: list[Any] = [{"role": "user", "content": content}]
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(model="gemini-2.5-flash", messages=messages)
        messages += [echoed(first.choices[0].message), {"role": "user", "content": "More."}]
        await c.chat.completions.create(model="gemini-2.5-flash", messages=messages)
    parts = fakes.gemini.requests[-1].json()["contents"][0]["parts"]
    assert parts == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
    ]


IMAGE_RESULT = [
    {"type": "text", "text": "A chart"},
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
]


@pytest.mark.parametrize("model", ["gpt-4o", "gemini-3-pro", "gemini-2.5-flash"])
async def test_images_in_anthropic_tool_results_reach_the_upstream(
    gateway: Gateway, fakes: Fakes, model: str
) -> None:
    if model.startswith("gpt"):
        fakes.oai.script(
            Script(text="", tool_calls=(FakeToolCall(id="call_7", name="get_weather"),))
        )
    else:
        fakes.gemini.script(GeminiScript(parts=(fg.Call("get_weather", {}, "sig-7"),)))
    async with anthropic_client(gateway) as c:
        request: dict[str, Any] = {
            "model": model,
            "max_tokens": 100,
            "tools": [WEATHER_ANTHROPIC],
            "messages": [ASK],
        }
        first = await c.messages.create(**request)
        use = next(b for b in first.content if b.type == "tool_use")
        result = {"type": "tool_result", "tool_use_id": use.id, "content": IMAGE_RESULT}
        request["messages"] = [ASK, anthropic_turn(first), {"role": "user", "content": [result]}]
        await c.messages.create(**request)
    inline = {"inlineData": {"mimeType": "image/png", "data": PNG}}
    if model.startswith("gpt"):
        tool, user = fakes.oai.requests[-1].json()["messages"][2:]
        assert tool == {"role": "tool", "tool_call_id": "call_7", "content": "A chart"}
        assert user["content"][1] == {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}"},
        }
    elif model.startswith("gemini-3"):
        response = fakes.gemini.requests[-1].json()["contents"][2]["parts"][0]
        assert response["functionResponse"]["parts"] == [inline]
    else:
        parts = fakes.gemini.requests[-1].json()["contents"][2]["parts"]
        assert parts[1] == inline


# 13. Finish reasons


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_broken_gemini_tool_turn_is_an_error_not_a_clean_stop(
    gateway: Gateway, fakes: Fakes, reason: str, stream: bool
) -> None:
    fakes.gemini.script(
        GeminiScript(parts=(fg.Call("get_weather", {"city": "Paris"}),)),
        GeminiScript(parts=(fg.Text(""),), finish_reason=reason),
    )
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(
            model="gemini-2.5-flash", messages=[ASK], tools=[WEATHER_OPENAI]
        )
        message = first.choices[0].message
        assert message.tool_calls
        messages: list[Any] = [
            ASK,
            echoed(message),
            {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "Sunny"},
        ]
        with pytest.raises(openai.APIError, match=reason):
            await turn(c, messages, stream)


async def turn(c: openai.AsyncOpenAI, messages: list[Any], stream: bool) -> None:
    """One request; a stream is read to its end."""
    if stream:
        chunks = await c.chat.completions.create(
            model="gemini-2.5-flash", messages=messages, tools=[WEATHER_OPENAI], stream=True
        )
        [ch async for ch in chunks]
    else:
        await c.chat.completions.create(
            model="gemini-2.5-flash", messages=messages, tools=[WEATHER_OPENAI]
        )


async def test_language_is_a_content_filter_and_pause_turn_is_incomplete(
    gateway: Gateway, fakes: Fakes
) -> None:
    fakes.gemini.script(GeminiScript(parts=(fg.Text("…"),), finish_reason="LANGUAGE"))
    fakes.claude.script(AnthropicScript(blocks=(fa.Text("Searching"),), stop_reason="pause_turn"))
    async with openai_client(gateway) as c:
        filtered = await c.chat.completions.create(model="gemini-2.5-flash", messages=[ASK])
        assert filtered.choices[0].finish_reason == "content_filter"
        paused = await c.chat.completions.create(model="claude-sonnet-4-5", messages=[ASK])
        assert paused.choices[0].finish_reason == "length"
        resumed = await c.chat.completions.create(  # the client continues the paused turn
            model="claude-sonnet-4-5", messages=[ASK, echoed(paused.choices[0].message)]
        )
    assert resumed.choices[0].finish_reason == "stop"
    assert fakes.claude.requests[-1].json()["messages"][-1]["role"] == "assistant"


# 14. Parameters that must not be dropped silently


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("claude-sonnet-4-5", {"logprobs": True}, "logprobs"),
        ("gemini-2.5-flash", {"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ("claude-sonnet-4-5", {"service_tier": "flex"}, "service_tier"),
        ("gemini-2.5-flash", {"service_tier": "priority"}, "service_tier"),
        ("claude-sonnet-4-5", {"logit_bias": {"50256": -100}}, "logit_bias"),
        ("gemini-2.5-flash", {"logit_bias": {"50256": -100}}, "logit_bias"),
    ],
)
async def test_what_an_upstream_cannot_do_is_a_400_naming_it(
    gateway: Gateway, model: str, extra: dict[str, Any], param: str
) -> None:
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(model=model, messages=[ASK])
        again = [ASK, echoed(first.choices[0].message), {"role": "user", "content": "And?"}]
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(model=model, messages=again, **extra)
    assert info.value.param == param


async def test_what_an_upstream_can_do_is_mapped(gateway: Gateway, fakes: Fakes) -> None:
    image: Any = {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
    }
    messages: list[Any] = [{"role": "user", "content": [image]}]
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(
            model="gemini-2.5-flash", messages=messages, web_search_options={}, logprobs=False
        )
        messages += [echoed(first.choices[0].message), {"role": "user", "content": "More."}]
        await c.chat.completions.create(
            model="gemini-2.5-flash", messages=messages, web_search_options={}, service_tier="auto"
        )
        await c.chat.completions.create(
            model="claude-sonnet-4-5", messages=[ASK], service_tier="priority"
        )
    sent = fakes.gemini.requests[-1].json()
    assert sent["tools"] == [{"googleSearch": {}}]
    assert sent["generationConfig"]["mediaResolution"] == "MEDIA_RESOLUTION_LOW"
    assert fakes.claude.requests[-1].json()["service_tier"] == "auto"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"output_config": {"effort": "ultra"}}, "output_config.effort"),
        ({"thinking": {"type": "between_tools"}}, "thinking.type"),
    ],
)
async def test_anthropic_reasoning_settings_that_cannot_convert_are_400s(
    gateway: Gateway, extra: dict[str, Any], param: str
) -> None:
    async with anthropic_client(gateway) as c:
        with pytest.raises(anthropic.BadRequestError, match=param):
            await c.messages.create(
                model="gemini-3-pro",
                max_tokens=100,
                messages=[ASK],
                **extra,
            )


async def test_a_gemini_loop_moves_to_the_same_format_upstreams(
    gateway: Gateway, fakes: Fakes
) -> None:
    """Forwarded requests (OpenAI client to OpenAI, Anthropic client to Claude) lose only the
    carriers the new upstream would refuse: signed ids, Gemini signatures in thinking blocks."""
    fakes.gemini.script(
        GeminiScript(parts=(fg.Call("get_weather", {"city": "Rome"}, SIGNATURE),)),
        GeminiScript(parts=(fg.Text("Checking."),), final_signature=SIGNATURE),
    )
    async with openai_client(gateway) as c:
        first = await c.chat.completions.create(
            model="gemini-3-pro", messages=[ASK], tools=[WEATHER_OPENAI]
        )
        message = first.choices[0].message
        assert message.tool_calls
        assert len(message.tool_calls[0].id) > 40
        tool = {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "Sunny"}
        await c.chat.completions.create(
            model="gpt-4o", messages=[ASK, echoed(message), tool], tools=[WEATHER_OPENAI]
        )
    messages = fakes.oai.requests[-1].json()["messages"]
    assert messages[1]["tool_calls"][0]["id"] == messages[2]["tool_call_id"]
    assert len(messages[2]["tool_call_id"]) <= 40
    async with anthropic_client(gateway) as a:
        request: dict[str, Any] = {"model": "gemini-3-pro", "max_tokens": 100, "messages": [ASK]}
        answer = await a.messages.create(**request)
        # the text part's signature (Gemini 3's, streamed after the text) is not a thinking block
        # after the answer: an Anthropic client has no place for it that keeps the text last
        assert [b.type for b in answer.content] == ["text"]
        turn = anthropic_turn(answer)
        # a Gemini signature in a thinking block, as a Gemini thought's is given
        signed = {"type": "thinking", "thinking": "", "signature": f"gemini-ts:{SIGNATURE}"}
        turn["content"].insert(0, signed)
        request["model"] = "claude-fake"
        request["messages"] = [ASK, turn, {"role": "user", "content": "And?"}]
        final = await a.messages.create(**request)
    assert final.content[0].text == "Hello from Claude."  # type: ignore[union-attr]
    assert fakes.claude.requests[-1].json()["messages"][1]["content"] == [
        {"type": "text", "text": "Checking."}
    ]
