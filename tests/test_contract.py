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
    FakeAzure,
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
from proxycast.testing import azure as fz
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
    settings: dict[str, Any] = attrs.field(factory=dict)
    """Provider settings its type needs (``ProviderConfig`` fields: a cloud's ``api_version``)."""


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
    "azure": Kit(
        fake=lambda: FakeAzure(api_key=UPSTREAM_KEY),
        text=lambda text: Script(text=text, chunks=3),
        tool=lambda name, args: Script(
            text="", tool_calls=(FakeToolCall(name=name, arguments=json.dumps(args)),)
        ),
        error=lambda status, message: Script(
            status=status, error_body=json.dumps(fz.azure_error(str(status), message)).encode()
        ),
        settings={"api_version": "2025-04-01-preview"},
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
        **kit.settings,
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


# One answer in every dialect ----------------------------------------------------------------------
#
# Every dialect x upstream kind (and the Responses API forwarded to an ``openai`` provider with
# ``responses = true``): an answer that reasons then speaks, and one that reasons then calls a tool,
# asked for streamed and not. The streamed answer, as the client's SDK accumulates it, is the
# non-streamed one (kinds, order, text, tool calls, signatures); a streamed block's or item's events
# are contiguous; reasoning comes before the text it led to, and the text is last. Through Gemini the
# fake signs as Gemini 3 does (the text part, streamed after its text; the call): the call's
# signature goes back on the call, and the text part's on that text part where the client's format
# keeps it without moving what it shows (chat completions' ``thinking_blocks``, Gemini's own
# ``thoughtSignature``; an Anthropic or Responses client has no such place: docs/mappings.md).

TEXT_SIGNATURE = "Z2VtaW5pMy10ZXh0"  # base64, as Gemini's (Google's SDKs hold bytes)
CALL_SIGNATURE = "Z2VtaW5pMy1jYWxs"
REASONING = "The user wants the weather."
ANSWER = "It is sunny in Paris, 21 degrees."
ARGUMENTS = {"city": "Paris"}


def _reasoned(upstream: str, call: bool) -> Any:
    """A script of ``upstream``'s fake: reasoning, then the answer's text (or a tool call)."""
    if upstream in ("gemini", "vertex"):  # Gemini on Vertex for MODEL (not a claude-* name)
        last: Any = (
            fg.Call("get_weather", ARGUMENTS, thought_signature=CALL_SIGNATURE)
            if call
            else fg.Text(ANSWER, thought_signature=TEXT_SIGNATURE)
        )
        return GeminiScript(parts=(fg.Thought(REASONING), last))
    if upstream in ("anthropic", "bedrock"):  # Bedrock's fake takes Claude's blocks
        tail: Any = fa.ToolUse("get_weather", ARGUMENTS, id="toolu_1") if call else fa.Text(ANSWER)
        blocks = (fa.Thinking(REASONING), tail)
        return (
            AnthropicScript(blocks=blocks)
            if upstream == "anthropic"
            else BedrockScript(blocks=blocks)
        )
    if call:
        tool = FakeToolCall(name="get_weather", arguments=json.dumps(ARGUMENTS))
        return Script(reasoning=REASONING, text="", tool_calls=(tool,))
    return Script(reasoning=REASONING, text=ANSWER, chunks=3)


def _spoken_then_called(upstream: str) -> Any:
    """Reasoning, text, then two calls at once (Gemini signs the first, as Gemini 3 does)."""
    cities = ({"city": "Paris"}, {"city": "Rome"})
    if upstream in ("gemini", "vertex"):
        first = fg.Call("get_weather", cities[0], thought_signature=CALL_SIGNATURE)
        calls: tuple[Any, ...] = (first, fg.Call("get_weather", cities[1]))
        return GeminiScript(parts=(fg.Thought(REASONING), fg.Text(ANSWER), *calls))
    if upstream in ("anthropic", "bedrock"):
        uses = (fa.ToolUse("get_weather", c, id=f"toolu_{i}") for i, c in enumerate(cities))
        blocks = (fa.Thinking(REASONING), fa.Text(ANSWER), *uses)
        return (
            AnthropicScript(blocks=blocks)
            if upstream == "anthropic"
            else BedrockScript(blocks=blocks)
        )
    tools = tuple(FakeToolCall(name="get_weather", arguments=json.dumps(c)) for c in cities)
    return Script(reasoning=REASONING, text=ANSWER, chunks=3, tool_calls=tools)


async def test_one_answer_of_text_and_parallel_calls(route: Route) -> None:
    """Text then two calls at once: each item's (block's) events contiguous, whatever the
    upstream, and the streamed answer the non-streamed one."""
    route.fake.script(_spoken_then_called(route.upstream), _spoken_then_called(route.upstream))
    whole = await route.client.answer(MODEL, False, [])
    streamed = await route.client.answer(MODEL, True, [])
    assert route.client.contiguous()
    assert [s.kind for s in whole.said] == ["reasoning", "text", "call", "call"], whole.said
    assert [s.arguments for s in whole.said if s.kind == "call"] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert [_without_ids(s) for s in streamed.said] == [_without_ids(s) for s in whole.said]


@attrs.frozen
class Said:
    """One block, item or part of an answer as the client kept it: ``reasoning``, ``text`` or
    ``call`` (``signatures``: whatever opaque values the client keeps with it)."""

    kind: str
    text: str = ""
    signatures: tuple[str, ...] = ()
    name: str = ""
    arguments: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Answer:
    said: list[Said]
    kept: Any
    """The assistant turn as the client sends it back."""


def _contiguous(indices: list[int]) -> bool:
    """Each index's events in one run, the runs in order (``[0, 0, 1, 1, 1]``, never ``[0, 1, 0]``)."""
    runs = [i for n, i in enumerate(indices) if n == 0 or indices[n - 1] != i]
    return runs == sorted(set(runs))


class ChatAnswers:
    """Chat completions: one message (its reasoning, thinking blocks, content and tool calls)."""

    def __init__(self, gateway: Gateway) -> None:
        self.sdk = openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)

    def _said(self, message: dict[str, Any]) -> list[Said]:
        said = []
        blocks = message.get("thinking_blocks") or []
        if message.get("reasoning_content") or blocks:
            signatures = tuple(b.get("signature") or b.get("data") or "" for b in blocks)
            signatures = tuple(s for s in signatures if s)  # an unsigned block carries nothing
            said.append(Said("reasoning", message.get("reasoning_content") or "", signatures))
        if message.get("content"):
            said.append(Said("text", message["content"]))
        for call in message.get("tool_calls") or ():
            function = call["function"]
            arguments = json.loads(function["arguments"])
            said.append(
                Said("call", signatures=(call["id"],), name=function["name"], arguments=arguments)
            )
        return said

    async def answer(self, model: str, stream: bool, history: list[Any]) -> Answer:
        request: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": "Weather in Paris?"}, *history],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA},
                }
            ],
        }
        if not stream:
            reply = await self.sdk.chat.completions.create(**request)
            message = reply.choices[0].message.model_dump(exclude_none=True)
        else:
            message = {"role": "assistant"}
            calls: dict[int, dict[str, Any]] = {}
            async with await self.sdk.chat.completions.create(**request, stream=True) as chunks:
                async for chunk in chunks:
                    for choice in chunk.choices:
                        delta = choice.delta.model_dump(exclude_none=True)
                        for key in ("content", "reasoning_content"):
                            if delta.get(key):
                                message[key] = message.get(key, "") + delta[key]
                        blocks = message.setdefault("thinking_blocks", [])
                        for block in delta.get("thinking_blocks") or ():
                            _merge_thinking(blocks, block)
                        for call in delta.get("tool_calls") or ():
                            held = calls.setdefault(call["index"], {"function": {"arguments": ""}})
                            held["id"] = call.get("id") or held.get("id")
                            held["type"] = "function"
                            function = call.get("function") or {}
                            held["function"]["name"] = function.get("name") or held["function"].get(
                                "name"
                            )
                            held["function"]["arguments"] += function.get("arguments") or ""
            if calls:
                message["tool_calls"] = [calls[i] for i in sorted(calls)]
            if not message["thinking_blocks"]:
                del message["thinking_blocks"]
        kept = {
            k: v
            for k, v in message.items()
            if k in ("role", "content", "reasoning_content", "thinking_blocks", "tool_calls")
        }
        return Answer(self._said(message), kept)

    def next_turn(self, kept: Any, called: bool) -> list[Any]:
        if called:
            call_id = kept["tool_calls"][0]["id"]
            return [kept, {"role": "tool", "tool_call_id": call_id, "content": "sunny-21"}]
        return [kept, {"role": "user", "content": "Thanks. And tomorrow?"}]

    def contiguous(self) -> bool:
        return True  # a chat message has no blocks


def _merge_thinking(blocks: list[dict[str, Any]], block: dict[str, Any]) -> None:
    """A streamed ``thinking_blocks`` entry added as LiteLLM accumulates them: the fragments of
    one thinking block joined until its signature closes it."""
    last = blocks[-1] if blocks else None
    if (
        last is not None
        and last["type"] == block["type"] == "thinking"
        and not last.get("signature")
    ):
        last["thinking"] += block.get("thinking") or ""
        last["signature"] = block.get("signature") or ""
    else:
        blocks.append(dict(block))


class AnthropicAnswers:
    """Anthropic messages: content blocks."""

    def __init__(self, gateway: Gateway) -> None:
        self.sdk = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)
        self.indices: list[int] = []

    async def answer(self, model: str, stream: bool, history: list[Any]) -> Answer:
        request: dict[str, Any] = {
            "model": model,
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": "Weather in Paris?"}, *history],
            "tools": [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
        }
        if not stream:
            message = await self.sdk.messages.create(**request)
        else:
            self.indices = []
            async with self.sdk.messages.stream(**request) as events:
                async for event in events:
                    if event.type in (
                        "content_block_start",
                        "content_block_delta",
                        "content_block_stop",
                    ):
                        self.indices.append(event.index)
                message = await events.get_final_message()
        blocks = [b.model_dump(exclude_none=True) for b in message.content]
        said = []
        for block in blocks:
            if block["type"] == "thinking":
                said.append(Said("reasoning", block["thinking"], (block["signature"],)))
            elif block["type"] == "text":
                said.append(Said("text", block["text"]))
            elif block["type"] == "tool_use":
                said.append(
                    Said(
                        "call",
                        signatures=(block["id"],),
                        name=block["name"],
                        arguments=block["input"],
                    )
                )
        return Answer(said, {"role": "assistant", "content": blocks})

    def next_turn(self, kept: Any, called: bool) -> list[Any]:
        if called:
            call_id = next(b["id"] for b in kept["content"] if b["type"] == "tool_use")
            result = {"type": "tool_result", "tool_use_id": call_id, "content": "sunny-21"}
            return [kept, {"role": "user", "content": [result]}]
        return [kept, {"role": "user", "content": "Thanks. And tomorrow?"}]

    def contiguous(self) -> bool:
        return _contiguous(self.indices)


class ResponsesAnswers:
    """The Responses API: output items (the final response, and the items as ``output_item.done``
    gives them, which Codex keeps)."""

    def __init__(self, gateway: Gateway) -> None:
        self.sdk = openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)
        self.indices: list[int] = []
        self.done_items: list[dict[str, Any]] = []

    def _said(self, items: list[dict[str, Any]]) -> list[Said]:
        said = []
        for item in items:
            if item["type"] == "reasoning":
                text = "".join(s["text"] for s in item.get("summary") or ())
                signature = item.get("encrypted_content")
                said.append(Said("reasoning", text, (signature,) if signature else ()))
            elif item["type"] == "message":
                said.append(Said("text", "".join(c.get("text", "") for c in item["content"])))
            elif item["type"] == "function_call":
                said.append(
                    Said(
                        "call",
                        signatures=(item["call_id"],),
                        name=item["name"],
                        arguments=json.loads(item["arguments"]),
                    )
                )
        return said

    async def answer(self, model: str, stream: bool, history: list[Any]) -> Answer:
        request: dict[str, Any] = {
            "model": model,
            "input": [{"role": "user", "content": "Weather in Paris?"}, *history],
            "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}],
        }
        if not stream:
            response = await self.sdk.responses.create(**request)
        else:
            self.indices, self.done_items = [], []
            async with self.sdk.responses.stream(**request) as events:
                async for event in events:
                    index = getattr(event, "output_index", None)
                    if isinstance(index, int):
                        self.indices.append(index)
                    if event.type == "response.output_item.done":
                        self.done_items.append(event.item.model_dump(exclude_none=True))
                response = await events.get_final_response()
        items = [item.model_dump(exclude_none=True) for item in response.output]
        if stream:  # what Codex keeps is what the final response holds
            assert self._said(self.done_items) == self._said(items)
        return Answer(self._said(items), items)

    def next_turn(self, kept: Any, called: bool) -> list[Any]:
        if called:
            call_id = next(i["call_id"] for i in kept if i["type"] == "function_call")
            return [
                *kept,
                {"type": "function_call_output", "call_id": call_id, "output": "sunny-21"},
            ]
        return [*kept, {"role": "user", "content": "Thanks. And tomorrow?"}]

    def contiguous(self) -> bool:
        return _contiguous(self.indices)


class GeminiAnswers:
    """The Gemini API: a candidate's parts (streamed: every chunk's parts, as google-genai's chat
    keeps them)."""

    def __init__(self, gateway: Gateway) -> None:
        self.sdk = _GenaiSDK(gateway)

    def _said(self, parts: list[dict[str, Any]]) -> list[Said]:
        said: list[Said] = []
        for part in parts:
            signature = part.get("thought_signature")
            signatures = (str(signature),) if signature else ()
            if part.get("function_call"):
                call = part["function_call"]
                said.append(
                    Said(
                        "call",
                        signatures=signatures,
                        name=call["name"],
                        arguments=call.get("args") or {},
                    )
                )
                continue
            kind = "reasoning" if part.get("thought") else "text"
            text = part.get("text") or ""
            last = said[-1] if said else None
            if last is not None and last.kind == kind and not (signatures and last.signatures):
                said[-1] = attrs.evolve(
                    last, text=last.text + text, signatures=last.signatures + signatures
                )
            elif text or signatures:
                said.append(Said(kind, text, signatures))
        return said

    async def answer(self, model: str, stream: bool, history: list[Any]) -> Answer:
        contents = [
            types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
            *history,
        ]
        declaration = types.FunctionDeclaration(
            name="get_weather", parameters_json_schema=WEATHER_SCHEMA
        )
        config = types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[declaration])],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            thinking_config=types.ThinkingConfig(include_thoughts=True),
        )
        client = self.sdk.client

        def ask() -> list[types.Part]:
            if not stream:
                answer = client.models.generate_content(
                    model=model, contents=contents, config=config
                )
                return list(answer.candidates[0].content.parts or ())  # type: ignore[index,union-attr]
            parts: list[types.Part] = []
            for chunk in client.models.generate_content_stream(
                model=model, contents=contents, config=config
            ):
                for candidate in chunk.candidates or ():
                    parts += candidate.content.parts or () if candidate.content else ()
            return parts

        parts = await trio.to_thread.run_sync(ask)
        dumped = [p.model_dump(exclude_none=True) for p in parts]
        return Answer(self._said(dumped), types.Content(role="model", parts=parts))

    def next_turn(self, kept: Any, called: bool) -> list[Any]:
        if called:
            call = next(p.function_call for p in kept.parts if p.function_call)
            response = types.FunctionResponse(
                id=call.id, name=call.name, response={"output": "sunny-21"}
            )
            return [
                kept,
                types.Content(role="user", parts=[types.Part(function_response=response)]),
            ]
        return [kept, types.Content(role="user", parts=[types.Part(text="Thanks. And tomorrow?")])]

    def contiguous(self) -> bool:
        return True  # a Gemini stream has no blocks: each chunk's parts are whole


ANSWERERS: dict[str, type[ChatAnswers | AnthropicAnswers | ResponsesAnswers | GeminiAnswers]] = {
    "openai": ChatAnswers,
    "anthropic": AnthropicAnswers,
    "responses": ResponsesAnswers,
    "gemini": GeminiAnswers,
}
UPSTREAM_KINDS = [(u, False) for u in sorted(KITS)]


def test_every_dialect_has_an_answerer() -> None:
    assert set(ANSWERERS) == {d.name for d in formats.DIALECTS}


@attrs.frozen
class Route:
    client: ChatAnswers | AnthropicAnswers | ResponsesAnswers | GeminiAnswers
    fake: FakeUpstream[Any]
    upstream: str
    dialect: str


@pytest.fixture(
    name="route",
    params=[
        *[(d, u, False) for d in sorted(ANSWERERS) for u in sorted(KITS)],
        ("responses", "openai", True),
    ],
    ids=lambda p: f"{p[0]}-client-{p[1]}{'-responses' if p[2] else ''}-upstream",
)
async def _route(request: pytest.FixtureRequest, nursery: trio.Nursery) -> AsyncIterator[Route]:
    dialect, upstream, responses = request.param
    fake = KITS[upstream].fake()
    await nursery.start(fake.serve)
    provider = ProviderConfig(
        name="up",
        type=upstream,
        base_url=fake.base_url,
        api_keys=(UPSTREAM_KEY,),
        models=(MODEL,),
        responses=responses,
        **KITS[upstream].settings,
    )
    config = Config(server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(provider,))
    gateway = await start_gateway(nursery, config)
    client = ANSWERERS[dialect](gateway)
    yield Route(client, fake, upstream, dialect)
    await client.sdk.close()


def _last_model_turn(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in body["contents"] if c["role"] == "model" for p in c["parts"]]


@pytest.mark.parametrize("called", [False, True], ids=["text", "tool-call"])
async def test_one_answer_streamed_or_not(route: Route, called: bool) -> None:
    route.fake.script(_reasoned(route.upstream, called), _reasoned(route.upstream, called))
    whole = await route.client.answer(MODEL, False, [])
    streamed = await route.client.answer(MODEL, True, [])
    assert route.client.contiguous()
    kinds = [s.kind for s in whole.said]
    assert kinds[0] == "reasoning", whole.said  # reasoning before the text it led to
    assert kinds.count("reasoning") == 1, whole.said
    assert kinds[-1] == ("call" if called else "text"), whole.said  # the answer comes last
    if called:
        (call,) = [s for s in whole.said if s.kind == "call"]
        assert (call.name, call.arguments) == ("get_weather", ARGUMENTS)
    else:
        assert whole.said[-1].text == ANSWER
    # call ids are the upstream's or made up per answer: the same kind, name, arguments and signature
    assert [_without_ids(s) for s in streamed.said] == [_without_ids(s) for s in whole.said]
    assert [s.signatures for s in streamed.said if s.kind != "call"] == [
        s.signatures for s in whole.said if s.kind != "call"
    ]

    # the next turn, from what the client kept of the streamed answer
    route.fake.script(_reasoned(route.upstream, False))
    await route.client.answer(MODEL, False, route.client.next_turn(streamed.kept, called))
    if route.upstream not in ("gemini", "vertex"):
        return
    parts = _last_model_turn(route.fake.requests[-1].json())
    if called:  # Gemini 3 validates it: the call's signature is back on the call
        assert [p.get("thoughtSignature") for p in parts if "functionCall" in p] == [CALL_SIGNATURE]
        return
    texts = [p for p in parts if "text" in p and not p.get("thought")]
    assert "".join(p["text"] for p in texts) == ANSWER
    # every dialect: chat and Gemini clients carry it, the gateway keeps it for the others
    assert [p["thoughtSignature"] for p in texts if "thoughtSignature" in p] == [TEXT_SIGNATURE]
    if route.dialect == "openai":  # converted: on the text part itself
        assert texts == [{"text": ANSWER, "thoughtSignature": TEXT_SIGNATURE}]


def _without_ids(said: Said) -> Said:
    if said.kind != "call":
        return attrs.evolve(said, signatures=())
    signatures = tuple(
        s.partition("__ts")[2] for s in said.signatures
    )  # the signature an id carries
    return attrs.evolve(said, signatures=signatures)


@pytest.mark.parametrize("dialect", ["anthropic", "responses"])
async def test_assistant_text_parts_keep_their_boundaries_upstream(
    nursery: trio.Nursery, dialect: str
) -> None:
    """Two text parts of an assistant turn (Anthropic text blocks, Responses message items) reach an
    OpenAI-compatible upstream as two paragraphs, not glued into one word."""
    fake = FakeOpenAI(Script(text="Four."))
    await nursery.start(fake.serve)
    provider = ProviderConfig(
        name="up", type="openai", base_url=fake.base_url, api_keys=(UPSTREAM_KEY,), models=(MODEL,)
    )
    config = Config(server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(provider,))
    gateway = await start_gateway(nursery, config)
    said = ["I saved the number.", "The number", "is four."]
    ask = {"role": "user", "content": "Which number did you save?"}
    if dialect == "anthropic":
        blocks = [{"type": "text", "text": t} for t in said]
        turn = {"role": "assistant", "content": blocks}
        async with anthropic.AsyncAnthropic(
            base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0
        ) as claude:
            await claude.messages.create(model=MODEL, max_tokens=50, messages=[ask, turn, ask])
    else:
        items = [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": t}],
            }
            for t in said
        ]
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as sdk:
            await sdk.responses.create(model=MODEL, input=[ask, *items, ask])  # type: ignore[list-item]
    messages = fake.requests[-1].json()["messages"]
    assistant = [m for m in messages if m["role"] == "assistant"]
    assert [m["content"] for m in assistant] == ["I saved the number.\nThe number\nis four."]
