"""The Anthropic Messages API, driven by the official anthropic SDK, served by every upstream kind."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import httpx
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

KINDS = ["anthropic", "openai", "gemini"]
MODELS = {"anthropic": "claude-sonnet-4-20250514", "openai": "gpt-4o", "gemini": "gemini-2.0-flash"}
MESSAGES = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@attrs.define
class Upstreams:
    anthropic: FakeAnthropic
    openai: FakeOpenAI
    gemini: FakeGemini

    def requests(self, kind: str) -> list[Any]:
        return getattr(self, kind).requests  # type: ignore[no-any-return]

    def text(self, kind: str, text: str, reasoning: str = "") -> None:
        if kind == "anthropic":
            blocks: tuple[Any, ...] = (fa.Thinking(reasoning, "sig"),) if reasoning else ()
            self.anthropic.script(
                AnthropicScript(blocks=(*blocks, fa.Text(text)), input_tokens=11, output_tokens=5)
            )
        elif kind == "openai":
            self.openai.script(
                Script(text=text, reasoning=reasoning, prompt_tokens=11, completion_tokens=5)
            )
        else:
            thoughts: tuple[Any, ...] = (fg.Thought(reasoning),) if reasoning else ()
            self.gemini.script(
                GeminiScript(
                    parts=(*thoughts, fg.Text(text)),
                    prompt_tokens=11,
                    candidates_tokens=5,
                    thoughts_tokens=0,
                )
            )

    def tool(self, kind: str, text: str, name: str, args: dict[str, Any]) -> None:
        if kind == "anthropic":
            self.anthropic.script(
                AnthropicScript(blocks=(fa.Text(text), fa.ToolUse(name, args, id="toolu_1")))
            )
        elif kind == "openai":
            self.openai.script(
                Script(
                    text=text,
                    tool_calls=(FakeToolCall(id="call_1", name=name, arguments=json.dumps(args)),),
                )
            )
        else:
            self.gemini.script(GeminiScript(parts=(fg.Text(text), fg.Call(name, args))))


@pytest.fixture(name="upstreams")
async def _upstreams(nursery: trio.Nursery) -> Upstreams:
    fakes = Upstreams(FakeAnthropic(), FakeOpenAI(), FakeGemini())
    for fake in (fakes.anthropic, fakes.openai, fakes.gemini):
        await nursery.start(fake.serve)
    return fakes


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, upstreams: Upstreams) -> Gateway:
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            ProviderConfig(
                name="claude",
                type="anthropic",
                base_url=upstreams.anthropic.base_url,
                api_keys=(UPSTREAM_KEY,),
                models=("claude-*",),
            ),
            ProviderConfig(
                name="oai",
                type="openai",
                base_url=upstreams.openai.base_url,
                api_keys=(UPSTREAM_KEY,),
                models=("gpt-*",),
            ),
            ProviderConfig(
                name="gem",
                type="gemini",
                base_url=upstreams.gemini.base_url,
                api_keys=(UPSTREAM_KEY,),
                models=("gemini-*",),
            ),
        ),
        aliases={"claude-alias": "claude-sonnet-4-20250514"},
    )
    return await start_gateway(nursery, config)


def client(gateway: Gateway, key: str = CLIENT_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0)


def essentials(message: Any) -> dict[str, Any]:
    return {
        "content": [block.model_dump(exclude_none=True) for block in message.content],
        "stop_reason": message.stop_reason,
        "model": message.model,
        "usage": (message.usage.input_tokens, message.usage.output_tokens),
    }


@pytest.mark.parametrize("kind", KINDS)
async def test_text(gateway: Gateway, upstreams: Upstreams, kind: str) -> None:
    upstreams.text(kind, "Hello from upstream.")
    async with client(gateway) as c:
        message = await c.messages.create(
            model=MODELS[kind], max_tokens=100, messages=MESSAGES, system="Be brief."
        )
    assert message.type == "message"
    assert message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello from upstream."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.model == MODELS[kind]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 5)


@pytest.mark.parametrize("kind", KINDS)
async def test_streaming_accumulates_the_non_streamed_message(
    gateway: Gateway, upstreams: Upstreams, kind: str
) -> None:
    upstreams.text(kind, "One answer, streamed or not.")
    upstreams.text(kind, "One answer, streamed or not.")
    async with client(gateway) as c:
        whole = await c.messages.create(model=MODELS[kind], max_tokens=100, messages=MESSAGES)
        async with c.messages.stream(
            model=MODELS[kind], max_tokens=100, messages=MESSAGES
        ) as stream:
            texts = [t async for t in stream.text_stream]
            streamed = await stream.get_final_message()
    assert "".join(texts) == "One answer, streamed or not."
    assert essentials(streamed) == essentials(whole)


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_round_trip(gateway: Gateway, upstreams: Upstreams, kind: str) -> None:
    upstreams.tool(kind, "Let me check.", "get_weather", {"city": "Paris"})
    upstreams.text(kind, "Sunny in Paris.")
    async with client(gateway) as c:
        async with c.messages.stream(
            model=MODELS[kind], max_tokens=100, messages=MESSAGES, tools=[WEATHER]
        ) as stream:
            first = await stream.get_final_message()
        assert first.stop_reason == "tool_use"
        text, use = first.content
        assert text.type == "text"
        assert text.text == "Let me check."
        assert use.type == "tool_use"
        assert (use.name, use.input) == ("get_weather", {"city": "Paris"})
        final = await c.messages.create(
            model=MODELS[kind],
            max_tokens=100,
            tools=[WEATHER],
            messages=[
                *MESSAGES,
                {  # type: ignore[misc]
                    "role": "assistant",
                    "content": [b.model_dump(exclude_none=True) for b in first.content],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
                },
            ],
        )
    assert final.content[0].text == "Sunny in Paris."  # type: ignore[union-attr]
    sent = upstreams.requests(kind)[-1].json()
    if kind == "openai":
        assert sent["messages"][-2]["tool_calls"][0]["id"] == use.id
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}
        assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    elif kind == "gemini":
        assert sent["contents"][-1]["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}
        ]
    else:
        assert sent["messages"][-1]["content"][0]["tool_use_id"] == "toolu_1"


@pytest.mark.parametrize("kind", KINDS)
async def test_thinking(gateway: Gateway, upstreams: Upstreams, kind: str) -> None:
    upstreams.text(kind, "42", reasoning="Let me think.")
    async with client(gateway) as c:
        async with c.messages.stream(
            model=MODELS[kind],
            max_tokens=5000,
            messages=MESSAGES,
            thinking={"type": "enabled", "budget_tokens": 3000},
        ) as stream:
            message = await stream.get_final_message()
    thinking, text = message.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "Let me think."
    assert text.type == "text"
    assert text.text == "42"
    sent = upstreams.requests(kind)[-1].json()
    if kind == "openai":
        assert sent["reasoning_effort"] == "medium"
    elif kind == "gemini":
        assert sent["generationConfig"]["thinkingConfig"]["includeThoughts"] is True


@pytest.mark.parametrize("kind", KINDS)
async def test_count_tokens(gateway: Gateway, upstreams: Upstreams, kind: str) -> None:
    async with client(gateway) as c:
        short = await c.messages.with_raw_response.count_tokens(
            model=MODELS[kind], messages=MESSAGES
        )
        long = await c.messages.count_tokens(
            model=MODELS[kind],
            messages=[{"role": "user", "content": "word " * 400}],
            tools=[WEATHER],
        )
    counted = await short.parse()
    assert 0 < counted.input_tokens < long.input_tokens
    assert (short.headers.get("x-proxycast-token-count") == "estimate") == (kind == "openai")
    if kind != "openai":
        assert upstreams.requests(kind)  # the upstream's own count was asked


async def test_anthropic_upstream_gets_the_body_byte_for_byte(
    gateway: Gateway, upstreams: Upstreams
) -> None:
    raw = (
        b'{"model" :"claude-alias","max_tokens":9, '
        b'"messages":[{"role":"user","content":"caf\\u00e9"}],"x_new":1}'
    )
    async with httpx.AsyncClient() as h:
        response = await h.post(
            gateway.url + "/v1/messages",
            content=raw,
            headers={
                "x-api-key": CLIENT_KEY,
                "anthropic-version": "2023-06-01",
                "anthropic-beta": "beta-x",
            },
        )
        streamed = await h.post(
            gateway.url + "/v1/messages",
            json={"model": "claude-alias", "max_tokens": 9, "messages": MESSAGES, "stream": True},
            headers={"x-api-key": CLIENT_KEY},
        )
    assert response.json()["model"] == "claude-alias"
    sent = upstreams.anthropic.requests[0]
    assert sent.body == raw.replace(b'"claude-alias"', b'"claude-sonnet-4-20250514"')
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert sent.headers["anthropic-beta"] == "beta-x"
    events = [
        line.removeprefix("event: ")
        for line in streamed.text.splitlines()
        if line.startswith("event: ")
    ]
    assert events[:2] == [
        "message_start",
        "ping",
    ]  # every event, ping included, with its event line
    assert events[-1] == "message_stop"
    assert '"model": "claude-alias"' in streamed.text


async def test_errors_in_anthropic_shape(gateway: Gateway, upstreams: Upstreams) -> None:
    async with client(gateway, key="wrong") as c:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await c.messages.create(model="gpt-4o", max_tokens=5, messages=MESSAGES)
    body: Any = auth.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert "client keys" in body["error"]["message"]
    async with client(gateway) as c:
        with pytest.raises(anthropic.NotFoundError) as missing:
            await c.messages.create(model="nope", max_tokens=5, messages=MESSAGES)
        assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        async with httpx.AsyncClient() as h:  # the SDK itself refuses to send this one
            bad = await h.post(
                gateway.url + "/v1/messages",
                json={"model": "gpt-4o", "messages": MESSAGES},
                headers={"x-api-key": CLIENT_KEY},
            )
        assert bad.status_code == 400
        assert bad.json()["type"] == "error"
        assert bad.json()["error"]["type"] == "invalid_request_error"
        assert "'max_tokens' is required" in bad.json()["error"]["message"]
        upstreams.openai.script(Script(status=503, error_message="busy"))
        with pytest.raises(anthropic.OverloadedError) as busy:
            await c.messages.create(model="gpt-4o", max_tokens=5, messages=MESSAGES)
        assert busy.value.status_code == 529
        assert busy.value.body["error"] == {"type": "overloaded_error", "message": "busy"}  # type: ignore[index]
        upstreams.gemini.script(
            GeminiScript(status=429, error_status="RESOURCE_EXHAUSTED", error_message="quota")
        )
        with pytest.raises(anthropic.RateLimitError):
            await c.messages.create(model="gemini-2.0-flash", max_tokens=5, messages=MESSAGES)


@pytest.mark.parametrize("kind", KINDS)
async def test_mid_stream_errors_are_error_events(
    gateway: Gateway, upstreams: Upstreams, kind: str
) -> None:
    if kind == "anthropic":
        upstreams.anthropic.script(AnthropicScript(error_after=4))
    elif kind == "openai":
        upstreams.openai.script(Script(text="a b c d", error_after=2, error_message="gone"))
    else:
        upstreams.gemini.script(GeminiScript(error_after=1))

    async def consume() -> None:
        async with (
            client(gateway) as c,
            c.messages.stream(model=MODELS[kind], max_tokens=10, messages=MESSAGES) as stream,
        ):
            async for _ in stream:
                pass

    with pytest.raises(anthropic.APIStatusError):
        await consume()


@pytest.mark.parametrize("stream", [False, True])
async def test_long_tool_names_are_shortened_for_openai_and_restored(
    gateway: Gateway, upstreams: Upstreams, stream: bool
) -> None:
    from proxycast.formats.openai.outbound import short_tool_name

    long = "mcp__workspace_server__" + "search_the_whole_repository_for_symbols" * 2
    short = short_tool_name(long)
    assert len(long) > 64 >= len(short)
    upstreams.openai.script(Script(text="", tool_calls=(FakeToolCall(id="call_9", name=short),)))
    tool = {"name": long, "input_schema": {"type": "object"}}
    message: Any
    async with client(gateway) as c:
        if stream:
            async with c.messages.stream(
                model="gpt-4o", max_tokens=10, messages=MESSAGES, tools=[tool]
            ) as s:
                message = await s.get_final_message()
        else:
            message = await c.messages.create(
                model="gpt-4o", max_tokens=10, messages=MESSAGES, tools=[tool]
            )
    (use,) = message.content
    assert use.type == "tool_use"
    assert use.name == long
    assert upstreams.openai.requests[-1].json()["tools"][0]["function"]["name"] == short
