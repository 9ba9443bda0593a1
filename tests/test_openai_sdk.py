"""End to end with the official openai SDK (async and sync) through the real gateway."""

from __future__ import annotations

import json

import openai
import pytest
import trio

from proxycast.testing import FakeOpenAI, FakeToolCall, Script
from tests.support import CLIENT_KEY, UPSTREAM_KEY, Gateway

MESSAGES = [{"role": "user", "content": "Say hello"}]


def client(gateway: Gateway, key: str = CLIENT_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0)


async def test_chat_answers_with_the_upstream_text_under_the_requested_model(
    gateway: Gateway, fake: FakeOpenAI
) -> None:
    fake.script(Script(text="Hello from llama", prompt_tokens=5))
    async with client(gateway) as c:
        answer = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "Hello from llama"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "gpt-4o"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 3)
    sent = fake.requests[-1]
    assert sent.json()["model"] == "llama3.2"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.path == "/v1/chat/completions"


async def test_sync_client(gateway: Gateway, fake: FakeOpenAI) -> None:
    fake.script(Script(text="sync hello"))

    def call() -> tuple[str | None, list[str]]:
        with openai.OpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as c:
            answer = c.chat.completions.create(model="llama3.2", messages=MESSAGES)  # type: ignore[arg-type]
            fake.script(Script(text="streamed sync hello", chunks=4))
            stream = c.chat.completions.create(
                model="llama3.2",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
            pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        return answer.choices[0].message.content, pieces

    content, pieces = await trio.to_thread.run_sync(call)
    assert content == "sync hello"
    assert "".join(pieces) == "streamed sync hello"
    assert len([p for p in pieces if p]) == 4


async def test_streaming_accumulates_the_upstream_text(gateway: Gateway, fake: FakeOpenAI) -> None:
    text = "The quick brown fox jumps over the lazy dog, twice: ünïcødé ✓."
    fake.script(Script(text=text, chunks=9))
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model="qwen2.5",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {ch.model for ch in chunks} == {"qwen2.5"}
    assert fake.requests[-1].json()["stream"] is True


async def test_include_usage_gives_the_usage_chunk(gateway: Gateway, fake: FakeOpenAI) -> None:
    fake.script(Script(text="a b c", prompt_tokens=7))
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        7,
        3,
        10,
    )
    assert all(ch.usage is None for ch in chunks[:-1])


async def test_tool_call_round_trip(gateway: Gateway, fake: FakeOpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    fake.script(
        Script(
            text="",
            tool_calls=(
                FakeToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
            ),
        ),
        Script(text="It is sunny in Paris."),
    )
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=tools,  # type: ignore[arg-type]
            tool_choice="auto",
            stream=True,
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            for delta in chunk.choices[0].delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        assert finish == "tool_calls"
        assert calls == {
            0: {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
        }
        messages = [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"sky": "sunny"})},
        ]
        final = await c.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)  # type: ignore[arg-type]
    assert final.choices[0].message.content == "It is sunny in Paris."
    sent = fake.requests[-1].json()
    assert sent["messages"] == messages
    assert sent["tools"] == tools


async def test_non_streamed_tool_calls(gateway: Gateway, fake: FakeOpenAI) -> None:
    fake.script(
        Script(
            text="",
            tool_calls=(
                FakeToolCall(id="call_a", name="f", arguments='{"x": 1}'),
                FakeToolCall(id="call_b", name="g"),
            ),
        )
    )
    async with client(gateway) as c:
        answer = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    calls = answer.choices[0].message.tool_calls or []
    assert [(t.id, t.function.name, t.function.arguments) for t in calls] == [  # type: ignore[union-attr]
        ("call_a", "f", '{"x": 1}'),
        ("call_b", "g", "{}"),
    ]
    assert answer.choices[0].finish_reason == "tool_calls"


async def test_every_parameter_reaches_the_upstream_unchanged(
    gateway: Gateway, fake: FakeOpenAI
) -> None:
    params = {
        "temperature": 0.3,
        "max_tokens": 77,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.2,
        "stop": ["END", "\n\n"],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "seed": 42,
        "logit_bias": {"50256": -100},
        "user": "u-1",
        "n": 1,
    }
    async with client(gateway) as c:
        await c.chat.completions.create(
            model="llama3.2",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_body={"vendor_extension": {"keep": [1, 2]}},
            **params,  # type: ignore[arg-type]
        )
    sent = fake.requests[-1].json()
    for name, value in params.items():
        assert sent[name] == value, name
    assert sent["vendor_extension"] == {"keep": [1, 2]}


async def test_body_is_forwarded_byte_for_byte_except_model(
    gateway: Gateway, fake: FakeOpenAI
) -> None:
    import httpx

    raw = (
        b'{ "messages" : [ {"role":"user","content":"caf\\u00e9 \xe2\x9c\x93"} ],\n'
        b'  "model":   "gpt-4o", "temperature": 1.50, "x-custom": {"a": [1,2.0,3e2]} }'
    )
    async with httpx.AsyncClient() as h:
        response = await h.post(
            gateway.v1 + "/chat/completions",
            content=raw,
            headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
        )
    assert response.status_code == 200
    assert fake.requests[-1].body == raw.replace(b'"gpt-4o"', b'"llama3.2"')


async def test_models_list_and_retrieve(gateway: Gateway) -> None:
    async with client(gateway) as c:
        models = await c.models.list()
        ids = [m.id for m in models.data]
        assert ids == ["llama3.2", "gpt-4o", "fast"]
        assert {m.owned_by for m in models.data} == {"local"}
        assert all(m.object == "model" and isinstance(m.created, int) for m in models.data)
        one = await c.models.retrieve("gpt-4o")
        assert (one.id, one.owned_by) == ("gpt-4o", "local")
        with pytest.raises(openai.NotFoundError):
            await c.models.retrieve("no-such-model")


async def test_bad_key_raises_authentication_error(gateway: Gateway, fake: FakeOpenAI) -> None:
    async with client(gateway, key="wrong") as c:
        with pytest.raises(openai.AuthenticationError) as info:
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert fake.requests == []


async def test_x_api_key_header_is_accepted(gateway: Gateway) -> None:
    import httpx

    async with httpx.AsyncClient() as h:
        ok = await h.get(gateway.v1 + "/models", headers={"x-api-key": CLIENT_KEY})
        missing = await h.get(gateway.v1 + "/models")
    assert ok.status_code == 200
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"


async def test_unknown_model_raises_not_found(gateway: Gateway, fake: FakeOpenAI) -> None:
    async with client(gateway) as c:
        with pytest.raises(openai.NotFoundError) as info:
            await c.chat.completions.create(model="gpt-5-nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"
    assert "gpt-5-nope" in info.value.message
    assert fake.requests == []


async def test_upstream_cookies_are_not_kept_for_other_requests(
    gateway: Gateway, fake: FakeOpenAI
) -> None:
    fake.script(Script(headers=(("set-cookie", "__cf_bm=abc; Path=/"),)), Script())
    async with client(gateway) as c:
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
        await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert "cookie" not in fake.requests[-1].headers
