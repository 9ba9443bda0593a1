"""The contract suite: every inbound dialect x every upstream format of the registry, through the real
server with the official SDKs (text, streamed == non-streamed, a tool round trip, an upstream error).

A new upstream format joins the matrix with one entry in ``KITS`` (its fake and how to script it); a
new inbound dialect with one entry in ``CLIENTS`` (how its SDK asks, streams and calls tools). The
first two tests fail until both tables cover the registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import openai
import pytest
import trio
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from proxycast import formats
from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.testing import (
    AnthropicScript,
    BedrockScript,
    FakeAnthropic,
    FakeBedrock,
    FakeGemini,
    FakeOpenAI,
    FakeToolCall,
    FakeUpstream,
    FakeVertex,
    GeminiScript,
    Script,
)
from proxycast.testing import anthropic as fa
from proxycast.testing import bedrock as fb
from proxycast.testing import gemini as fg
from tests.support import CLIENT_KEY, UPSTREAM_KEY, Gateway, start_gateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@attrs.frozen
class Kit:
    """An upstream format's fake, and how to script it."""

    fake: Callable[[], FakeUpstream[Any]]
    text: Callable[[str], Any]
    tool: Callable[[str, dict[str, Any]], Any]
    error: Callable[[int, str], Any]
    settings: dict[str, str] = attrs.field(factory=dict)
    """Provider settings of its type (a cloud's project and location)."""


KITS: dict[str, Kit] = {
    "openai": Kit(
        fake=FakeOpenAI,
        text=lambda text: Script(text=text, chunks=3),
        tool=lambda name, args: Script(
            text="", tool_calls=(FakeToolCall(name=name, arguments=json.dumps(args)),)
        ),
        error=lambda status, message: Script(status=status, error_message=message),
    ),
    "anthropic": Kit(
        fake=FakeAnthropic,
        text=lambda text: AnthropicScript(blocks=(fa.Text(text),)),
        tool=lambda name, args: AnthropicScript(blocks=(fa.ToolUse(name, args, id="toolu_1"),)),
        error=lambda status, message: AnthropicScript(
            status=status, error_type="rate_limit_error", error_message=message
        ),
    ),
    "bedrock": Kit(
        fake=FakeBedrock,
        text=lambda text: BedrockScript(blocks=(fb.Text(text),)),
        tool=lambda name, args: BedrockScript(blocks=(fb.ToolUse(name, args, id="tooluse_1"),)),
        error=lambda status, message: BedrockScript(
            status=status, error_type="ThrottlingException", error_message=message
        ),
    ),
    "gemini": Kit(
        fake=FakeGemini,
        text=lambda text: GeminiScript(parts=(fg.Text(text),)),
        tool=lambda name, args: GeminiScript(parts=(fg.Call(name, args),)),
        error=lambda status, message: GeminiScript(
            status=status, error_status="RESOURCE_EXHAUSTED", error_message=message
        ),
    ),
    "vertex": Kit(  # Gemini on Vertex (the model is not claude-*), with a token it issued
        fake=lambda: FakeVertex(tokens=(UPSTREAM_KEY,)),
        text=lambda text: GeminiScript(parts=(fg.Text(text),)),
        tool=lambda name, args: GeminiScript(parts=(fg.Call(name, args),)),
        error=lambda status, message: GeminiScript(
            status=status, error_status="RESOURCE_EXHAUSTED", error_message=message
        ),
        settings={"project": "fake-project", "location": "us-east5"},
    ),
}

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@attrs.frozen
class Call:
    id: str
    name: str
    arguments: dict[str, Any]


class OpenAIClient:
    """The openai SDK's chat completions."""

    def __init__(self, gateway: Gateway) -> None:
        self.sdk = openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)

    async def ask(self, model: str, messages: list[Any] | None = None) -> tuple[str, list[Call]]:
        answer = await self.sdk.chat.completions.create(
            model=model,
            messages=messages or [{"role": "user", "content": "Hi"}],
            tools=[
                {
                    "type": "function",
                    "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA},
                }
            ],
        )
        message = answer.choices[0].message
        calls = [
            Call(c.id, c.function.name, json.loads(c.function.arguments))
            for c in message.tool_calls or ()
        ]
        return message.content or "", calls

    async def stream(self, model: str) -> str:
        text = ""
        async with await self.sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], stream=True
        ) as chunks:
            async for chunk in chunks:
                text += "".join(c.delta.content or "" for c in chunk.choices)
        return text

    def follow_up(self, call: Call, result: str) -> list[Any]:
        return [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]


class AnthropicClient:
    """The anthropic SDK's messages."""

    def __init__(self, gateway: Gateway) -> None:
        self.sdk = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)

    async def ask(self, model: str, messages: list[Any] | None = None) -> tuple[str, list[Call]]:
        answer = await self.sdk.messages.create(
            model=model,
            max_tokens=100,
            messages=messages or [{"role": "user", "content": "Hi"}],
            tools=[{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
        )
        text = "".join(b.text for b in answer.content if b.type == "text")
        calls = [Call(b.id, b.name, dict(b.input)) for b in answer.content if b.type == "tool_use"]  # type: ignore[arg-type]
        return text, calls

    async def stream(self, model: str) -> str:
        async with self.sdk.messages.stream(
            model=model, max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
        ) as events:
            message = await events.get_final_message()
        return "".join(b.text for b in message.content if b.type == "text")

    def follow_up(self, call: Call, result: str) -> list[Any]:
        return [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result}],
            },
        ]


class ResponsesClient:
    """The openai SDK's responses (what Codex CLI and the Agents SDK speak)."""

    def __init__(self, gateway: Gateway) -> None:
        self.sdk = openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)

    async def ask(self, model: str, messages: list[Any] | None = None) -> tuple[str, list[Call]]:
        answer = await self.sdk.responses.create(
            model=model,
            input=messages or "Hi",
            tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}],
        )
        calls = [
            Call(item.call_id, item.name, json.loads(item.arguments))
            for item in answer.output
            if item.type == "function_call"
        ]
        return answer.output_text, calls

    async def stream(self, model: str) -> str:
        async with self.sdk.responses.stream(model=model, input="Hi") as events:
            response = await events.get_final_response()
        return response.output_text

    def follow_up(self, call: Call, result: str) -> list[Any]:
        return [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": json.dumps(call.arguments),
            },
            {"type": "function_call_output", "call_id": call.id, "output": result},
        ]


class GeminiClient:
    """Google's google-genai SDK (what the Gemini CLI speaks too); its sync client in a thread (the
    async one runs on asyncio)."""

    def __init__(self, gateway: Gateway) -> None:
        self.sdk = _GenaiSDK(gateway)

    def _config(self) -> types.GenerateContentConfig:
        declaration = types.FunctionDeclaration(
            name="get_weather", parameters_json_schema=WEATHER_SCHEMA
        )
        return types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[declaration])],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    async def ask(self, model: str, messages: list[Any] | None = None) -> tuple[str, list[Call]]:
        contents = messages or "Hi"
        answer = await trio.to_thread.run_sync(
            lambda: self.sdk.client.models.generate_content(
                model=model, contents=contents, config=self._config()
            )
        )
        calls = [
            Call(c.id or "", c.name or "", dict(c.args or {})) for c in answer.function_calls or ()
        ]
        parts = answer.candidates[0].content.parts if answer.candidates else None
        text = "".join(p.text or "" for p in parts or () if not p.thought)
        return text, calls

    async def stream(self, model: str) -> str:
        def chunks() -> str:
            stream = self.sdk.client.models.generate_content_stream(model=model, contents="Hi")
            return "".join(chunk.text or "" for chunk in stream)

        return str(await trio.to_thread.run_sync(chunks))

    def follow_up(self, call: Call, result: str) -> list[Any]:
        called = types.Part(
            function_call=types.FunctionCall(id=call.id, name=call.name, args=call.arguments)
        )
        answered = types.Part(
            function_response=types.FunctionResponse(
                id=call.id, name=call.name, response={"output": result}
            )
        )
        return [
            types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
            types.Content(role="model", parts=[called]),
            types.Content(role="user", parts=[answered]),
        ]


class _GenaiSDK:
    def __init__(self, gateway: Gateway) -> None:
        options = types.HttpOptions(base_url=gateway.url)
        self.client = genai.Client(api_key=CLIENT_KEY, http_options=options)

    async def close(self) -> None:
        self.client.close()


CLIENTS: dict[str, type[OpenAIClient | AnthropicClient | ResponsesClient | GeminiClient]] = {
    "openai": OpenAIClient,
    "anthropic": AnthropicClient,
    "responses": ResponsesClient,
    "gemini": GeminiClient,
}
MODEL = "the-model"


def test_every_upstream_format_has_a_kit() -> None:
    assert set(KITS) == set(formats.UPSTREAMS)


def test_every_inbound_dialect_has_a_client() -> None:
    assert set(CLIENTS) == {d.name for d in formats.DIALECTS}


@attrs.frozen
class Pair:
    client: OpenAIClient | AnthropicClient | ResponsesClient | GeminiClient
    fake: FakeUpstream[Any]
    kit: Kit


@pytest.fixture(
    name="pair",
    params=[(d, u) for d in sorted(CLIENTS) for u in sorted(KITS)],
    ids=lambda p: f"{p[0]}-client-{p[1]}-upstream",
)
async def _pair(request: pytest.FixtureRequest, nursery: trio.Nursery) -> AsyncIterator[Pair]:
    dialect, upstream = request.param
    kit = KITS[upstream]
    fake = kit.fake()
    await nursery.start(fake.serve)
    provider = ProviderConfig(
        name="up",
        type=upstream,
        base_url=fake.base_url,
        api_keys=(UPSTREAM_KEY,),
        models=(MODEL,),
        **kit.settings,  # type: ignore[arg-type]
    )
    config = Config(server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(provider,))
    gateway = await start_gateway(nursery, config)
    client = CLIENTS[dialect](gateway)
    yield Pair(client, fake, kit)
    await client.sdk.close()


async def test_text(pair: Pair) -> None:
    pair.fake.script(pair.kit.text("Hello from upstream."))
    text, calls = await pair.client.ask(MODEL)
    assert (text, calls) == ("Hello from upstream.", [])
    assert UPSTREAM_KEY.encode() not in pair.fake.requests[-1].body


async def test_streamed_equals_non_streamed(pair: Pair) -> None:
    pair.fake.script(
        pair.kit.text("One, two, three, four."), pair.kit.text("One, two, three, four.")
    )
    text, _ = await pair.client.ask(MODEL)
    assert await pair.client.stream(MODEL) == text == "One, two, three, four."


async def test_tool_round_trip(pair: Pair) -> None:
    pair.fake.script(pair.kit.tool("get_weather", {"city": "Paris"}), pair.kit.text("Sunny, 21."))
    _, (call,) = await pair.client.ask(MODEL)
    assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
    text, calls = await pair.client.ask(MODEL, pair.client.follow_up(call, "sunny-21-celsius"))
    assert (text, calls) == ("Sunny, 21.", [])
    second = pair.fake.requests[-1].body.decode()
    assert "sunny-21-celsius" in second  # the tool result reached the upstream
    assert "get_weather" in second  # and so did the call it answers


async def test_an_upstream_error_keeps_its_status_and_message(pair: Pair) -> None:
    pair.fake.script(pair.kit.error(429, "Slow down, please."))
    with pytest.raises(
        (openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError)
    ) as info:
        await pair.client.ask(MODEL)
    assert getattr(info.value, "status_code", getattr(info.value, "code", None)) == 429
    assert "Slow down, please." in str(info.value)
