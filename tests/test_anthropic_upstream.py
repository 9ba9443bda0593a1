"""OpenAI SDK -> proxycast -> a Claude upstream (the fake Anthropic server), end to end."""

from __future__ import annotations

import hashlib
import json

import openai
import pytest
import trio

from proxycast.testing import AnthropicScript, FakeAnthropic
from proxycast.testing.anthropic import Text, Thinking, ToolUse
from tests.support import CLIENT_KEY, UPSTREAM_KEY, Gateway, collect, one_provider, start_gateway

MODEL = "claude-sonnet-4-20250514"
MESSAGES = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(name="claude")
async def _claude(nursery: trio.Nursery) -> FakeAnthropic:
    fake = FakeAnthropic()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, claude: FakeAnthropic) -> Gateway:
    config = one_provider("anthropic", claude.base_url, ("claude-*",), {"gpt-4o": MODEL})
    return await start_gateway(nursery, config)


def client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


async def test_text_reply_and_the_request_claude_received(
    gateway: Gateway, claude: FakeAnthropic
) -> None:
    claude.script(
        AnthropicScript(
            blocks=(Text("Hi, I am Claude."),),
            input_tokens=10,
            cache_read_input_tokens=5,
            cache_creation_input_tokens=3,
            output_tokens=7,
        )
    )
    async with client(gateway) as c:
        answer = await c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "system", "content": "Be kind."}, *MESSAGES],
            temperature=1.5,
            stop=["END", " "],
            user="user-7",
            presence_penalty=0.5,
            seed=3,
        )
    assert answer.choices[0].message.content == "Hi, I am Claude."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "gpt-4o"
    assert answer.object == "chat.completion"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 18
    assert answer.usage.completion_tokens == 7
    assert answer.usage.total_tokens == 25
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 5
    sent = claude.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json() == {
        "model": MODEL,
        "system": [{"type": "text", "text": "Be kind."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "max_tokens": 4096,
        "temperature": 1.0,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u_" + hashlib.sha256(b"user-7").hexdigest()[:32]},
    }


async def test_streaming_text_and_usage(gateway: Gateway, claude: FakeAnthropic) -> None:
    text = "Streaming from Claude, in pieces: ünïcødé ✓."
    claude.script(
        AnthropicScript(
            blocks=(Text(text),),
            pieces=7,
            input_tokens=9,
            output_tokens=4,
            usage_in_message_delta=True,
        )
    )
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks, streamed, calls, finish = await collect(stream)
    assert streamed == text
    assert calls == {}
    assert finish == "stop"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 4)
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.model for c in chunks} == {MODEL}
    assert len({c.id for c in chunks}) == 1
    assert claude.requests[-1].json()["stream"] is True


async def test_no_usage_chunk_unless_asked(gateway: Gateway, claude: FakeAnthropic) -> None:
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        chunks, *_ = await collect(stream)
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


async def test_streamed_tool_call_after_a_text_block(
    gateway: Gateway, claude: FakeAnthropic
) -> None:
    claude.script(
        AnthropicScript(
            blocks=(
                Thinking("The user wants weather."),
                Text("Let me check."),
                ToolUse("get_weather", {"city": "Paris"}, id="toolu_01"),
            )
        )
    )
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=[WEATHER], stream=True
        )
        chunks, text, calls, finish = await collect(stream)
    assert text == "Let me check."
    assert calls == {0: {"id": "toolu_01", "name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert finish == "tool_calls"
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    assert reasoning == "The user wants weather."
    sent = claude.requests[-1].json()
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
        }
    ]


async def test_parallel_tool_calls_and_a_tool_without_arguments(
    gateway: Gateway, claude: FakeAnthropic
) -> None:
    blocks = (
        Text("Two things."),
        ToolUse("get_weather", {"city": "Oslo"}, id="toolu_a"),
        ToolUse("get_time", {}, id="toolu_b"),
    )
    claude.script(AnthropicScript(blocks=blocks), AnthropicScript(blocks=blocks))
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=[WEATHER], stream=True, parallel_tool_calls=False
        )
        _, _, calls, finish = await collect(stream)
        answer = await c.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER])
    expected = {
        0: {"id": "toolu_a", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        1: {"id": "toolu_b", "name": "get_time", "arguments": "{}"},
    }
    assert calls == expected
    assert finish == "tool_calls"
    message = answer.choices[0].message
    assert message.content == "Two things."
    assert [
        {"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
        for t in message.tool_calls or []
    ] == list(expected.values())
    assert answer.choices[0].finish_reason == "tool_calls"
    assert claude.requests[0].json()["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }


async def test_full_tool_round_trip(gateway: Gateway, claude: FakeAnthropic) -> None:
    claude.script(
        AnthropicScript(blocks=(ToolUse("get_weather", {"city": "Paris"}, id="toolu_9"),)),
        AnthropicScript(blocks=(Text("It is sunny in Paris."),)),
    )
    async with client(gateway) as c:
        first = await c.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=[WEATHER], tool_choice="required"
        )
        call = (first.choices[0].message.tool_calls or [])[0]
        final = await c.chat.completions.create(
            model=MODEL,
            tools=[WEATHER],
            messages=[
                *MESSAGES,
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny"})},
            ],
        )
    assert first.choices[0].message.content is None
    assert final.choices[0].message.content == "It is sunny in Paris."
    assert claude.requests[0].json()["tool_choice"] == {"type": "any"}
    assert claude.requests[1].json()["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_9",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_9",
                    "content": [{"type": "text", "text": '{"sky": "sunny"}'}],
                }
            ],
        },
    ]


async def test_images(gateway: Gateway, claude: FakeAnthropic) -> None:
    async with client(gateway) as c:
        await c.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in these?"},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": "data:image/png;base64,iVBORw0K",
                                "detail": "high",
                            },
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ],
                }
            ],
        )
    assert claude.requests[-1].json()["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


async def test_thinking_and_refusal(gateway: Gateway, claude: FakeAnthropic) -> None:
    claude.script(
        AnthropicScript(blocks=(Thinking("Let me think.", "sig-1"), Text("42"))),
        AnthropicScript(blocks=(Text("I can't help with that."),), stop_reason="refusal"),
    )
    async with client(gateway) as c:
        answer = await c.chat.completions.create(
            model=MODEL, messages=MESSAGES, reasoning_effort="medium", temperature=0.2
        )
        refused = await c.chat.completions.create(model=MODEL, messages=MESSAGES)
    message = answer.choices[0].message
    assert message.content == "42"
    assert getattr(message, "reasoning_content", None) == "Let me think."
    sent = claude.requests[0].json()
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "temperature" not in sent
    assert refused.choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize(
    ("status", "error_type", "exception", "client_status"),
    [
        (400, "invalid_request_error", openai.BadRequestError, 400),
        (404, "not_found_error", openai.NotFoundError, 404),
        (429, "rate_limit_error", openai.RateLimitError, 429),
        (500, "api_error", openai.InternalServerError, 500),
        (529, "overloaded_error", openai.InternalServerError, 503),
        (401, "authentication_error", openai.InternalServerError, 502),
    ],
)
async def test_error_statuses_map_to_the_sdk_exceptions(
    gateway: Gateway,
    claude: FakeAnthropic,
    status: int,
    error_type: str,
    exception: type[openai.APIStatusError],
    client_status: int,
) -> None:
    claude.script(
        AnthropicScript(
            status=status,
            error_type=error_type,
            error_message="upstream says no",
            headers=(("retry-after", "3"),),
        )
    )
    async with client(gateway) as c:
        with pytest.raises(exception) as info:
            await c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert info.value.status_code == client_status
    if status == 401:
        assert "'anthropic'" in info.value.message
        assert "upstream says no" not in info.value.message
    elif status == 404:  # a 404 says whose it is and where it was asked
        message = info.value.body["message"]  # type: ignore[index]
        assert message == "Provider 'anthropic' answered 404 to POST /v1/messages: upstream says no"
    else:
        assert info.value.body["message"] == "upstream says no"  # type: ignore[index]
    if status == 429:
        assert info.value.response.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(AnthropicScript(error_after=5), id="error-event"),
        pytest.param(AnthropicScript(drop_after=5), id="cut-off"),
    ],
)
async def test_mid_stream_failures_raise_in_the_sdk(
    gateway: Gateway, claude: FakeAnthropic, script: AnthropicScript
) -> None:
    claude.script(script)
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_what_claude_cannot_do_is_a_400(gateway: Gateway, claude: FakeAnthropic) -> None:
    async with client(gateway) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(model=MODEL, messages=MESSAGES, n=2)
    assert info.value.body["param"] == "n"  # type: ignore[index]
    assert claude.requests == []


async def test_client_disconnect_mid_stream_cancels_the_claude_request(
    gateway: Gateway, claude: FakeAnthropic
) -> None:
    import httpx

    claude.script(AnthropicScript(blocks=(Text("word " * 400),), pieces=400, interval=0.05))
    async with httpx.AsyncClient() as h:
        async with h.stream(
            "POST",
            gateway.v1 + "/chat/completions",
            json={"model": MODEL, "messages": MESSAGES, "stream": True},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        ) as response:
            lines = response.aiter_lines()
            async for line in lines:
                if '"content": "word' in line:
                    break
            closed_at = trio.current_time()
            await lines.aclose()  # type: ignore[attr-defined]
    upstream = claude.requests[-1]
    with trio.fail_after(5):
        await upstream.ended.wait()
    assert upstream.abandoned_at is not None
    assert not upstream.completed
    assert upstream.abandoned_at - closed_at < 0.5
