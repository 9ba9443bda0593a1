"""OpenAI SDK -> proxycast -> a Gemini upstream (the fake Gemini server), end to end."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import openai
import pytest

from proxycast.testing import FakeGemini, GeminiScript
from proxycast.testing.gemini import Call, Text, Thought
from tests.support import CLIENT_KEY, UPSTREAM_KEY, Gateway, collect, one_provider, start_gateway

if TYPE_CHECKING:
    import trio

MODEL = "gemini-2.0-flash"
MESSAGES = [{"role": "user", "content": "Hello"}]

# What pydantic generates for a model with a nested, optional, recursive field, as an OpenAI client sends.
PYDANTIC_SCHEMA = {
    "$defs": {
        "Address": {
            "additionalProperties": False,
            "properties": {
                "city": {"title": "City", "type": "string"},
                "zip": {
                    "anyOf": [{"type": "string"}, {"type": "null"}],
                    "default": None,
                    "title": "Zip",
                },
            },
            "required": ["city", "zip"],
            "title": "Address",
            "type": "object",
        },
        "Person": {
            "properties": {
                "name": {"type": "string"},
                "kind": {"const": "person"},
                "friends": {"type": "array", "items": {"$ref": "#/$defs/Person"}},
                "address": {"$ref": "#/$defs/Address"},
            },
            "required": ["name"],
            "type": "object",
        },
    },
    "$schema": "http://json-schema.org/draft-07/schema#",
    "additionalProperties": False,
    "properties": {
        "person": {"$ref": "#/$defs/Person"},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "mode": {"oneOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "integer"}]},
        "options": {"type": "object", "properties": {}},
        "count": {"type": "integer", "exclusiveMinimum": 0},
    },
    "required": ["person"],
    "type": "object",
}
TOOL = {
    "type": "function",
    "function": {
        "name": "save_person",
        "description": "Save a person",
        "parameters": PYDANTIC_SCHEMA,
        "strict": True,
    },
}


@pytest.fixture(name="gemini")
async def _gemini(nursery: trio.Nursery) -> FakeGemini:
    fake = FakeGemini()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, gemini: FakeGemini) -> Gateway:
    config = one_provider("gemini", gemini.base_url, ("gemini-*",))
    return await start_gateway(nursery, config)


def client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


async def test_text_and_the_request_gemini_received(gateway: Gateway, gemini: FakeGemini) -> None:
    gemini.script(
        GeminiScript(
            parts=(Text("Hi from Gemini."),), prompt_tokens=6, cached_tokens=2, candidates_tokens=4
        )
    )
    async with client(gateway) as c:
        answer = await c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": "Be brief."}, *MESSAGES],
            max_tokens=50,
            temperature=0.3,
            stop="END",
            seed=1,
        )
    assert answer.choices[0].message.content == "Hi from Gemini."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == MODEL
    assert answer.usage is not None
    assert (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
        answer.usage.total_tokens,
    ) == (6, 4, 10)
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 2
    sent = gemini.requests[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert sent.json() == {
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "maxOutputTokens": 50,
            "temperature": 0.3,
            "seed": 1,
            "stopSequences": ["END"],
        },
    }


async def test_streaming_text_thoughts_and_usage(gateway: Gateway, gemini: FakeGemini) -> None:
    gemini.script(
        GeminiScript(
            parts=(Thought("Thinking it over."), Text("Streamed from Gemini, in pieces.")),
            pieces=4,
            final_signature="c2lnbmF0dXJl",
            prompt_tokens=5,
            candidates_tokens=6,
            thoughts_tokens=3,
        )
    )
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            reasoning_effort="low",
        )
        chunks, text, calls, finish = await collect(stream)
    assert text == "Streamed from Gemini, in pieces."
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    assert reasoning == "Thinking it over."
    assert calls == {}
    assert finish == "stop"
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 9, 14)
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 3
    sent = gemini.requests[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    assert sent.json()["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 1024,
        "includeThoughts": True,
    }


async def test_real_client_schemas_are_accepted(gateway: Gateway, gemini: FakeGemini) -> None:
    gemini.script(GeminiScript(parts=(Call("save_person", {"person": {"name": "Ada"}}),)))
    async with client(gateway) as c:
        answer = await c.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "save_person"}},
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": PYDANTIC_SCHEMA},
            },
        )
    (call,) = answer.choices[0].message.tool_calls or []
    assert call.function.name == "save_person"
    assert json.loads(call.function.arguments) == {"person": {"name": "Ada"}}
    assert call.id.startswith("call_")
    assert answer.choices[0].finish_reason == "tool_calls"
    sent = gemini.requests[-1].json()
    assert sent["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["save_person"]}
    }
    assert sent["generationConfig"]["responseMimeType"] == "application/json"
    declaration = sent["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "save_person"
    assert declaration["parameters"]["properties"]["tags"] == {
        "type": "ARRAY",
        "items": {"type": "STRING"},
        "nullable": True,
    }


async def test_streamed_parallel_calls_and_a_round_trip_with_signatures(
    gateway: Gateway, gemini: FakeGemini
) -> None:
    gemini.script(
        GeminiScript(
            parts=(
                Text("Checking both."),
                Call("get_weather", {"city": "Rome"}, thought_signature="sig-A"),
                Call("get_time", {}),
            )
        ),
        GeminiScript(parts=(Text("Sunny, and noon."),)),
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {
            "type": "function",
            "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    async with client(gateway) as c:
        stream = await c.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=tools, stream=True
        )
        _, text, calls, finish = await collect(stream)
        assert text == "Checking both."
        assert finish == "tool_calls"
        assert [(calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)] == [
            ("get_weather", {"city": "Rome"}),
            ("get_time", {}),
        ]
        assert sorted(calls) == [0, 1]
        history: list[dict[str, Any]] = [
            *MESSAGES,
            {
                "role": "assistant",
                "content": text,
                "tool_calls": [
                    {
                        "id": calls[i]["id"],
                        "type": "function",
                        "function": {"name": calls[i]["name"], "arguments": calls[i]["arguments"]},
                    }
                    for i in sorted(calls)
                ],
            },
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"sky": "sunny"}'},
            {"role": "tool", "tool_call_id": calls[1]["id"], "content": "12:00"},
        ]
        final = await c.chat.completions.create(model=MODEL, messages=history, tools=tools)
    assert final.choices[0].message.content == "Sunny, and noon."
    contents = gemini.requests[-1].json()["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [
            {"text": "Checking both."},
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Rome"}},
                "thoughtSignature": "sig-A",
            },
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "12:00"}}},
        ],
    }
    declarations = gemini.requests[-1].json()["tools"][0]["functionDeclarations"]
    assert declarations[1] == {"name": "get_time"}  # no arguments: no (empty OBJECT) parameters


async def test_several_candidates_become_several_choices(
    gateway: Gateway, gemini: FakeGemini
) -> None:
    gemini.script(GeminiScript(parts=(Text("One of two."),), candidates=2))
    async with client(gateway) as c:
        answer = await c.chat.completions.create(model=MODEL, messages=MESSAGES, n=2)
        with pytest.raises(openai.BadRequestError):
            await c.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, stream=True)
    assert [ch.index for ch in answer.choices] == [0, 1]
    assert [ch.message.content for ch in answer.choices] == ["One of two.", "One of two."]
    assert gemini.requests[0].json()["generationConfig"]["candidateCount"] == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_a_blocked_prompt_is_content_filter(
    gateway: Gateway, gemini: FakeGemini, stream: bool
) -> None:
    gemini.script(GeminiScript(block_reason="SAFETY"))
    async with client(gateway) as c:
        if stream:
            s = await c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
            _, text, _, finish = await collect(s)
            assert (text, finish) == ("", "content_filter")
        else:
            answer = await c.chat.completions.create(model=MODEL, messages=MESSAGES)
            assert answer.choices[0].message.content is None
            assert answer.choices[0].finish_reason == "content_filter"


async def test_an_image_url_gemini_cannot_read_is_a_400(
    gateway: Gateway, gemini: FakeGemini
) -> None:
    async with client(gateway) as c:
        await c.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
                    ],
                }
            ],
        )
        with pytest.raises(openai.BadRequestError) as info:
            await c.chat.completions.create(
                model=MODEL,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "http://x.test/a.png"}}
                        ],
                    }
                ],
            )
    assert "base64 data URL" in info.value.message
    assert gemini.requests[0].json()["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}
    ]
    assert len(gemini.requests) == 1


@pytest.mark.parametrize(
    ("status", "name", "exception", "client_status"),
    [
        (400, "INVALID_ARGUMENT", openai.BadRequestError, 400),
        (404, "NOT_FOUND", openai.NotFoundError, 404),
        (429, "RESOURCE_EXHAUSTED", openai.RateLimitError, 429),
        (500, "INTERNAL", openai.InternalServerError, 500),
        (503, "UNAVAILABLE", openai.InternalServerError, 503),
        (403, "PERMISSION_DENIED", openai.InternalServerError, 502),
    ],
)
async def test_error_statuses(
    gateway: Gateway,
    gemini: FakeGemini,
    status: int,
    name: str,
    exception: type[openai.APIStatusError],
    client_status: int,
) -> None:
    gemini.script(GeminiScript(status=status, error_status=name, error_message="gemini says no"))
    async with client(gateway) as c:
        with pytest.raises(exception) as info:
            await c.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert info.value.status_code == client_status
    if status == 404:  # a 404 says whose it is and where it was asked
        message = info.value.body["message"]  # type: ignore[index]
        assert message.startswith("Provider 'gemini' answered 404 to POST /v1beta/models/")
        assert message.endswith(":generateContent: gemini says no")
    elif status != 403:
        assert info.value.body["message"] == "gemini says no"  # type: ignore[index]


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(GeminiScript(error_after=1), id="error-chunk"),
        pytest.param(GeminiScript(end_without_finish=True), id="no-finish-reason"),
        pytest.param(GeminiScript(drop_after=1), id="cut-off"),
    ],
)
async def test_mid_stream_failures_raise_in_the_sdk(
    gateway: Gateway, gemini: FakeGemini, script: GeminiScript
) -> None:
    gemini.script(script)
    async with client(gateway) as c:
        stream = await c.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
