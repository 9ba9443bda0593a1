"""Bedrock upstreams through the real gateway: every dialect's SDK (OpenAI chat, Anthropic messages,
Responses, Gemini) against FakeBedrock, which checks each request's SigV4 signature with botocore over
its exact bytes, and answers Converse, ConverseStream (binary event stream), InvokeModel and the
control plane's listings."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import httpx
import openai
import pytest
import trio
from google import genai
from google.genai import types

from proxycast import formats
from proxycast.config import Config, ProviderConfig, ServerConfig, check_config
from proxycast.errors import ConfigError
from proxycast.formats.bedrock.auth import SigV4
from proxycast.testing import BedrockScript, FakeBedrock
from proxycast.testing import bedrock as fb
from proxycast.upstream.discovery import fetch_models
from proxycast.upstream.provider import make_client
from tests.support import CLIENT_KEY, Gateway, start_gateway
from tests.test_claude_code import FINAL, SECRET, run_claude
from tests.test_claude_code import _claude as _claude

if TYPE_CHECKING:
    from pathlib import Path

MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
PROFILE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture(autouse=True)
def _aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fake's credentials in the standard chain's variables; no shared files, no instance
    metadata lookups (the chain never leaves the machine)."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_DEFAULT_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", fb.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", fb.SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", fb.REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))


def bedrock_provider(base_url: str, **settings: Any) -> ProviderConfig:
    options: dict[str, Any] = {"region": fb.REGION, **settings}
    return ProviderConfig(
        name="bedrock",
        type="bedrock",
        base_url=base_url,
        models=("anthropic.*", "us.anthropic.*", "amazon.*"),
        **options,
    )


def config_for(*providers: ProviderConfig, **top: Any) -> Config:
    return Config(server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=providers, **top)


@pytest.fixture(name="bedrock")
async def _bedrock(nursery: trio.Nursery) -> FakeBedrock:
    fake = FakeBedrock()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, bedrock: FakeBedrock) -> Gateway:
    return await start_gateway(nursery, config_for(bedrock_provider(bedrock.base_url)))


def openai_sdk(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


def anthropic_sdk(gateway: Gateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)


def genai_sdk(gateway: Gateway) -> genai.Client:
    return genai.Client(api_key=CLIENT_KEY, http_options=types.HttpOptions(base_url=gateway.url))


# OpenAI chat


async def test_openai_chat_signed_with_sigv4(gateway: Gateway, bedrock: FakeBedrock) -> None:
    bedrock.script(
        BedrockScript(blocks=(fb.Text("Hello from Bedrock."),), cache_read_input_tokens=5)
    )
    async with openai_sdk(gateway) as sdk:
        answer = await sdk.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            max_tokens=50,
            temperature=0.5,
            stop=["END"],
        )
    assert answer.choices[0].message.content == "Hello from Bedrock."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 12 + 5
    (request,) = bedrock.requests
    assert request.route == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    assert bedrock.signed_by == [f"sigv4:{fb.ACCESS_KEY}"]
    assert request.json() == {
        "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.5, "stopSequences": ["END"]},
    }
    assert fb.SECRET_KEY.encode() not in request.body


async def test_openai_chat_streamed(gateway: Gateway, bedrock: FakeBedrock) -> None:
    bedrock.script(BedrockScript(blocks=(fb.Text("One, two, three, four."),), pieces=4))
    async with openai_sdk(gateway) as sdk:
        stream = await sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "One, two, three, four."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 9
    assert bedrock.requests[0].route.endswith("/converse-stream")


async def test_openai_tool_round_trip(gateway: Gateway, bedrock: FakeBedrock) -> None:
    bedrock.script(
        BedrockScript(blocks=(fb.ToolUse("get_weather", {"city": "Paris"}, id="tooluse_1"),)),
        BedrockScript(blocks=(fb.Text("Sunny, 21."),)),
    )
    tools: list[Any] = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
    ]
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    async with openai_sdk(gateway) as sdk:
        first = await sdk.chat.completions.create(
            model=MODEL, messages=messages, tools=tools, tool_choice="required"
        )
        (call,) = first.choices[0].message.tool_calls or []
        assert first.choices[0].finish_reason == "tool_calls"
        assert (call.function.name, json.loads(call.function.arguments)) == (
            "get_weather",
            {"city": "Paris"},
        )
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny-21"},
        ]
        second = await sdk.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    assert second.choices[0].message.content == "Sunny, 21."
    sent = bedrock.requests[0].json()
    assert sent["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER}}}],
        "toolChoice": {"any": {}},
    }
    follow = bedrock.requests[1].json()["messages"]
    assert follow[1] == {
        "role": "assistant",
        "content": [
            {
                "toolUse": {
                    "toolUseId": "tooluse_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            }
        ],
    }
    assert follow[2]["content"] == [
        {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "sunny-21"}]}}
    ]


async def test_openai_streamed_tool_call(gateway: Gateway, bedrock: FakeBedrock) -> None:
    bedrock.script(
        BedrockScript(
            blocks=(fb.Text("Let me look."), fb.ToolUse("get_weather", {"city": "Oslo"})),
            chunk_size=3,
        )
    )
    tools: list[Any] = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
    ]
    async with openai_sdk(gateway) as sdk:
        stream = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "?"}], tools=tools, stream=True
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    arguments = "".join(
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or []
        if call.function
    )
    assert text == "Let me look."
    assert json.loads(arguments) == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


# Anthropic messages


async def test_anthropic_messages_with_thinking_signature_round_trip(
    gateway: Gateway, bedrock: FakeBedrock
) -> None:
    bedrock.script(
        BedrockScript(
            blocks=(
                fb.Thinking("The user wants weather.", signature="sig-bedrock-1"),
                fb.ToolUse("get_weather", {"city": "Rome"}, id="tooluse_r"),
            ),
            cache_write_input_tokens=100,
        ),
        BedrockScript(blocks=(fb.Text("Warm."),), cache_read_input_tokens=100),
    )
    tools: list[Any] = [{"name": "get_weather", "input_schema": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": "Weather in Rome?"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    async with anthropic_sdk(gateway) as sdk:
        first = await sdk.messages.create(
            model=MODEL,
            max_tokens=4000,
            system=[
                {"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}
            ],
            messages=messages,
            tools=tools,
            thinking=thinking,
        )
        assert [b.type for b in first.content] == ["thinking", "tool_use"]
        assert first.content[0].signature == "sig-bedrock-1"  # type: ignore[union-attr]
        assert first.stop_reason == "tool_use"
        assert first.usage.cache_creation_input_tokens == 100
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "tooluse_r", "content": "25C"}],
            },
        ]
        second = await sdk.messages.create(
            model=MODEL, max_tokens=4000, messages=messages, tools=tools, thinking=thinking
        )
    assert second.content[0].text == "Warm."  # type: ignore[union-attr]
    assert second.usage.cache_read_input_tokens == 100
    sent = bedrock.requests[0].json()
    assert sent["system"] == [{"text": "Long rules."}, {"cachePoint": {"type": "default"}}]
    assert sent["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 2048}
    }
    assert "toolChoice" not in sent["toolConfig"]
    back = bedrock.requests[1].json()["messages"][1]["content"]
    assert back[0] == {
        "reasoningContent": {
            "reasoningText": {"text": "The user wants weather.", "signature": "sig-bedrock-1"}
        }
    }


async def test_anthropic_messages_streamed_thinking(gateway: Gateway, bedrock: FakeBedrock) -> None:
    bedrock.script(
        BedrockScript(
            blocks=(fb.Thinking("Hmm, let me see.", signature="sig-2"), fb.Text("Hi there.")),
            chunk_size=5,
        )
    )
    async with anthropic_sdk(gateway) as sdk:
        async with sdk.messages.stream(
            model=MODEL,
            max_tokens=4000,
            messages=[{"role": "user", "content": "Hi"}],
            thinking={"type": "enabled", "budget_tokens": 1024},
        ) as stream:
            final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Hmm, let me see."  # type: ignore[union-attr]
    assert final.content[0].signature == "sig-2"  # type: ignore[union-attr]
    assert final.content[1].text == "Hi there."  # type: ignore[union-attr]
    assert final.usage.output_tokens == 9


async def test_redacted_thinking_round_trips(gateway: Gateway, bedrock: FakeBedrock) -> None:
    bedrock.script(
        BedrockScript(blocks=(fb.RedactedThinking("opaque"), fb.Text("Done."))),
        BedrockScript(blocks=(fb.Text("Again."),)),
    )
    messages: list[Any] = [{"role": "user", "content": "Hi"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    async with anthropic_sdk(gateway) as sdk:
        first = await sdk.messages.create(
            model=MODEL, max_tokens=3000, messages=messages, thinking=thinking
        )
        assert first.content[0].type == "redacted_thinking"
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": "And?"},
        ]
        second = await sdk.messages.create(
            model=MODEL, max_tokens=3000, messages=messages, thinking=thinking
        )
    assert second.content[0].text == "Again."  # type: ignore[union-attr]
    data = base64.b64encode(b"opaque").decode()
    back = bedrock.requests[1].json()["messages"][1]["content"]
    assert back[0] == {"reasoningContent": {"redactedContent": data}}


# Responses, Gemini


async def test_responses_streamed_and_not(gateway: Gateway, bedrock: FakeBedrock) -> None:
    bedrock.script(
        BedrockScript(blocks=(fb.Text("Plain answer."),)),
        BedrockScript(blocks=(fb.Text("Streamed answer."),)),
    )
    async with openai_sdk(gateway) as sdk:
        answer = await sdk.responses.create(model=MODEL, input="Hi", store=False)
        assert answer.output_text == "Plain answer."
        stream = await sdk.responses.create(model=MODEL, input="Hi", store=False, stream=True)
        events = [e async for e in stream]
    text = "".join(
        getattr(e, "delta", "") for e in events if e.type == "response.output_text.delta"
    )
    assert text == "Streamed answer."
    assert events[-1].type == "response.completed"


async def test_gemini_streamed_and_not(nursery: trio.Nursery, bedrock: FakeBedrock) -> None:
    config = config_for(bedrock_provider(bedrock.base_url), aliases={"sonnet": MODEL})
    gateway = await start_gateway(nursery, config)
    bedrock.script(
        BedrockScript(blocks=(fb.Text("Gemini asked."),)),
        BedrockScript(blocks=(fb.Text("Gemini streamed."),)),
    )
    client = genai_sdk(gateway)  # its sync client, in a thread (its async one needs asyncio)

    def ask() -> str:
        return client.models.generate_content(model="sonnet", contents="Hi").text or ""

    def stream() -> str:
        chunks = client.models.generate_content_stream(model="sonnet", contents="Hi")
        return "".join(c.text or "" for c in chunks)

    assert await trio.to_thread.run_sync(ask) == "Gemini asked."
    assert await trio.to_thread.run_sync(stream) == "Gemini streamed."
    client.close()
    assert bedrock.requests[0].route == (
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    )


# Mid-stream failures: the client gets an error in its own dialect

STREAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": (
        "/v1/chat/completions",
        {"model": "sonnet", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
    ),
    "anthropic": (
        "/v1/messages",
        {
            "model": "sonnet",
            "stream": True,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    ),
    "responses": ("/v1/responses", {"model": "sonnet", "stream": True, "input": "Hi"}),
    "gemini": (
        "/v1beta/models/sonnet:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
    ),
}


async def stream_raw(gateway: Gateway, dialect: str) -> tuple[int, list[dict[str, Any]]]:
    """The streamed answer's JSON events, as the dialect's client receives them."""
    path, body = STREAMS[dialect]
    headers = {"x-api-key": CLIENT_KEY, "x-goog-api-key": CLIENT_KEY}
    headers["authorization"] = f"Bearer {CLIENT_KEY}"
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(gateway.url + path, json=body, headers=headers)
    events = [
        json.loads(line[len("data: ") :])
        for line in answer.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    return answer.status_code, events


def text_of(dialect: str, events: list[dict[str, Any]]) -> str:
    """The text a dialect's stream carried."""
    if dialect == "openai":
        return "".join(
            e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
        )
    if dialect == "anthropic":
        return "".join(
            e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta"
        )
    if dialect == "responses":
        return "".join(e["delta"] for e in events if e.get("type") == "response.output_text.delta")
    return "".join(
        p.get("text", "")
        for e in events
        for c in e.get("candidates", [])
        for p in c["content"]["parts"]
    )


def error_of(dialect: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The error event a dialect's stream ended with (its error object)."""
    last = events[-1]
    if dialect == "anthropic":
        assert last["type"] == "error"
        return dict(last["error"])
    if dialect == "responses":
        assert last["type"] in ("error", "response.failed")
        return dict(last.get("response", {}).get("error") or last)
    return dict(last["error"])


@pytest.fixture(name="aliased")
async def _aliased(nursery: trio.Nursery, bedrock: FakeBedrock) -> Gateway:
    config = config_for(bedrock_provider(bedrock.base_url), aliases={"sonnet": MODEL})
    return await start_gateway(nursery, config)


@pytest.mark.parametrize("dialect", sorted(STREAMS))
async def test_mid_stream_throttling_ends_the_stream_with_an_error(
    aliased: Gateway, bedrock: FakeBedrock, dialect: str
) -> None:
    bedrock.script(
        BedrockScript(
            blocks=(fb.Text("Partial answer that goes on."),),
            exception_after=3,
            error_message="Too many requests, please wait before trying again.",
        )
    )
    status, events = await stream_raw(aliased, dialect)
    assert status == 200
    before = text_of(dialect, events[:-1])
    assert before  # part of the answer came first
    assert "Partial answer that goes on.".startswith(before)
    error = error_of(dialect, events)
    assert "Too many requests, please wait" in json.dumps(error)
    if dialect == "gemini":
        assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    if dialect == "anthropic":
        assert error["type"] == "rate_limit_error"
    assert len(bedrock.requests) == 1  # content had gone out: no retry


@pytest.mark.parametrize("dialect", sorted(STREAMS))
async def test_a_bad_crc_is_an_error_frame(
    aliased: Gateway, bedrock: FakeBedrock, dialect: str
) -> None:
    bedrock.script(BedrockScript(blocks=(fb.Text("Some words, then noise."),), corrupt_after=3))
    status, events = await stream_raw(aliased, dialect)
    assert status == 200
    error = error_of(dialect, events)
    assert "CRC" in json.dumps(error)


async def test_throttling_before_content_is_retried_with_the_next_key(
    nursery: trio.Nursery, bedrock: FakeBedrock
) -> None:
    provider = attrs.evolve(bedrock_provider(bedrock.base_url), api_keys=("key-a", "key-b"))
    gateway = await start_gateway(nursery, config_for(provider, aliases={"sonnet": MODEL}))
    bedrock.script(
        BedrockScript(exception_after=1, error_message="Slow down."),
        BedrockScript(blocks=(fb.Text("Second try."),)),
    )
    status, events = await stream_raw(gateway, "openai")
    assert status == 200
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Second try."
    keys = [r.headers["authorization"] for r in bedrock.requests]
    assert keys == ["Bearer key-a", "Bearer key-b"]


async def test_throttling_is_retried_with_the_next_api_key(
    nursery: trio.Nursery, bedrock: FakeBedrock
) -> None:
    provider = attrs.evolve(
        bedrock_provider(bedrock.base_url), api_keys=("bedrock-key-a", "bedrock-key-b")
    )
    gateway = await start_gateway(nursery, config_for(provider))
    bedrock.script(
        BedrockScript(status=429, error_type="ThrottlingException", error_message="Rate exceeded."),
        BedrockScript(blocks=(fb.Text("From the second key."),)),
    )
    async with openai_sdk(gateway) as sdk:
        answer = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}]
        )
    assert answer.choices[0].message.content == "From the second key."
    keys = [r.headers["authorization"] for r in bedrock.requests]
    assert keys == ["Bearer bedrock-key-a", "Bearer bedrock-key-b"]
    assert "x-amz-date" not in bedrock.requests[0].headers


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("ThrottlingException", 429),
        ("ServiceUnavailableException", 503),
        ("ModelNotReadyException", 429),
    ],
)
async def test_an_error_answer_keeps_its_status_and_message(
    nursery: trio.Nursery, bedrock: FakeBedrock, kind: str, status: int
) -> None:
    config = config_for(bedrock_provider(bedrock.base_url))
    config = attrs.evolve(config, routing=attrs.evolve(config.routing, retries=0))
    gateway = await start_gateway(nursery, config)
    bedrock.script(
        BedrockScript(status=status, error_type=kind, error_message="Try later, please.")
    )
    async with openai_sdk(gateway) as sdk:
        with pytest.raises(openai.APIStatusError) as info:
            await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}]
            )
    assert info.value.status_code == status
    assert "Try later, please." in str(info.value)


async def test_a_validation_error_is_the_clients_400(
    gateway: Gateway, bedrock: FakeBedrock
) -> None:
    async with openai_sdk(gateway) as sdk:
        with pytest.raises(openai.BadRequestError) as info:
            await sdk.chat.completions.create(
                model=MODEL,
                messages=[
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
                    {"role": "assistant", "content": "twice"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                        ],
                    },
                ],
            )
    assert "http(s) URLs" in str(info.value)
    assert not bedrock.requests  # refused before any call


# SigV4, credentials, configuration


async def _signed(url: str, body: bytes, loader: Any = None) -> httpx.Request:
    """A request signed by the gateway's SigV4 auth, as it would go out."""
    signer = SigV4(fb.REGION, loader=loader) if loader else SigV4(fb.REGION)
    request = httpx.Request("POST", url, content=body, headers={"content-type": "application/json"})
    flow = signer.async_auth_flow(request)
    signed = await flow.__anext__()
    await flow.aclose()
    return signed


async def test_the_fake_refuses_a_tampered_request(bedrock: FakeBedrock) -> None:
    url = bedrock.base_url + "/model/amazon.nova-pro-v1%3A0/converse"
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}).encode()
    signed = await _signed(url, body)
    async with httpx.AsyncClient() as client:
        good = await client.send(signed)
        assert good.status_code == 200, good.text
        tampered_body = httpx.Request(
            "POST", url, content=body.replace(b"Hi", b"Yo"), headers=signed.headers
        )
        tampered_path = httpx.Request(
            "POST", url.replace("converse", "converse-stream"), content=body, headers=signed.headers
        )
        other_key = dict(signed.headers)
        other_key["authorization"] = other_key["authorization"].replace(fb.ACCESS_KEY, "AKIAOTHER")
        for tampered in (tampered_body, tampered_path):
            refused = await client.send(tampered)
            assert refused.status_code == 403
            assert refused.headers["x-amzn-errortype"].startswith("InvalidSignatureException")
            assert "signature we calculated does not match" in refused.json()["message"]
        unknown = await client.post(url, content=body, headers=other_key)
        assert unknown.headers["x-amzn-errortype"].startswith("UnrecognizedClientException")
    assert len(bedrock.signed_by) == 1


async def test_wrong_credentials_are_the_gateways_problem(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeBedrock(credentials={fb.ACCESS_KEY: ("another-secret", None)})
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, config_for(bedrock_provider(fake.base_url)))
    async with openai_sdk(gateway) as sdk:
        with pytest.raises(openai.APIStatusError) as info:
            await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}]
            )
    assert info.value.status_code == 502
    assert "rejected proxycast's credentials" in str(info.value)
    assert fb.SECRET_KEY not in str(info.value)


async def test_session_tokens_and_refreshed_credentials(bedrock: FakeBedrock) -> None:
    """Temporary credentials: each signature carries the current token; botocore's refresh runs
    (off the event loop) when they are due, once for concurrent requests."""
    from botocore.credentials import RefreshableCredentials

    issued = iter(["token-1", "token-2", "token-3"])
    refreshes: list[str] = []

    def refresh() -> dict[str, str]:
        token = next(issued)
        refreshes.append(token)
        bedrock.credentials = {fb.ACCESS_KEY: (fb.SECRET_KEY, token)}
        expiry = "2000-01-01T00:00:00Z" if token == "token-1" else "2999-01-01T00:00:00Z"
        return {
            "access_key": fb.ACCESS_KEY,
            "secret_key": fb.SECRET_KEY,
            "token": token,
            "expiry_time": expiry,
        }

    credentials = RefreshableCredentials.create_from_metadata(
        refresh(), refresh_using=refresh, method="test"
    )
    signer = SigV4(fb.REGION, loader=lambda profile: credentials)
    url = bedrock.base_url + "/model/amazon.nova-pro-v1%3A0/converse"
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}).encode()
    async with httpx.AsyncClient() as client:
        answers: list[int] = []

        async def one() -> None:
            request = httpx.Request(
                "POST", url, content=body, headers={"content-type": "application/json"}
            )
            answers.append((await client.send(request, auth=signer)).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
    assert answers == [200, 200, 200]
    assert refreshes == ["token-1", "token-2"]  # expired once, refreshed once
    assert {r.headers["x-amz-security-token"] for r in bedrock.requests} == {"token-2"}
    assert "token" not in repr(signer)
    assert fb.SECRET_KEY not in repr(signer)


def test_check_names_a_missing_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    provider = ProviderConfig(name="aws", type="bedrock", models=("anthropic.*",))
    with pytest.raises(ConfigError) as info:
        check_config(config_for(provider))
    assert "region" in str(info.value)
    assert "AWS_REGION / AWS_DEFAULT_REGION" in str(info.value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    check_config(config_for(provider))  # the region from the variable
    assert provider.url == "https://bedrock-runtime.eu-west-1.amazonaws.com"


def test_check_names_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    provider = ProviderConfig(name="aws", type="bedrock", region="us-west-2", models=("a*",))
    with pytest.raises(ConfigError) as info:
        check_config(config_for(provider))
    message = str(info.value)
    assert "AWS_ACCESS_KEY_ID" in message
    assert "AWS_BEARER_TOKEN_BEDROCK" in message
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key")
    check_config(config_for(provider))  # a Bedrock API key instead
    (credential,) = formats.UPSTREAMS["bedrock"].credentials(provider)
    assert "bedrock-api-key" not in repr(credential)


def test_check_names_a_missing_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "aws-credentials").write_text(
        "[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = s3cret\n"
    )
    provider = ProviderConfig(name="aws", type="bedrock", region="us-west-2", profile="wrok")
    with pytest.raises(ConfigError) as info:
        check_config(config_for(provider))
    assert "wrok" in str(info.value)
    assert "profile" in str(info.value)
    check_config(config_for(attrs.evolve(provider, profile="work")))


def test_check_cli_names_the_missing_region(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxycast.cli import main

    monkeypatch.delenv("AWS_REGION")
    path = tmp_path / "proxycast.toml"
    path.write_text('[[providers]]\nname = "aws"\ntype = "bedrock"\nmodels = ["anthropic.*"]\n')
    assert main(["check", "--config", str(path)]) == 1
    assert "AWS_REGION" in capsys.readouterr().err


async def test_models_from_the_control_plane(bedrock: FakeBedrock) -> None:
    bedrock.profiles = tuple(f"us.vendor.model-{i}" for i in range(1500))
    provider = bedrock_provider(bedrock.base_url)
    async with make_client(ServerConfig()) as client:
        models = await fetch_models(client, provider, ServerConfig())
    assert models[:2] == bedrock.models
    assert models[2:] == bedrock.profiles  # both listings, the second in two pages
    assert [r.route for r in bedrock.requests] == [
        "/foundation-models",
        "/inference-profiles",
        "/inference-profiles",
    ]
    assert set(bedrock.signed_by) == {f"sigv4:{fb.ACCESS_KEY}"}


def test_the_control_plane_is_beside_the_runtime() -> None:
    upstream = formats.UPSTREAMS["bedrock"]
    provider = ProviderConfig(name="aws", type="bedrock", region="eu-central-1")
    assert upstream.models_url(provider) == (
        "https://bedrock.eu-central-1.amazonaws.com/foundation-models"
    )


# api = "invoke": Anthropic models through InvokeModel with the Messages body


@pytest.fixture(name="invoking")
async def _invoking(nursery: trio.Nursery, bedrock: FakeBedrock) -> Gateway:
    provider = bedrock_provider(bedrock.base_url, api="invoke")
    return await start_gateway(nursery, config_for(provider, aliases={"sonnet": PROFILE}))


async def test_invoke_messages_body(invoking: Gateway, bedrock: FakeBedrock) -> None:
    bedrock.script(
        BedrockScript(
            blocks=(
                fb.Thinking("Think.", signature="sig-i"),
                fb.ToolUse("get_weather", {"city": "Nice"}, id="toolu_i"),
            ),
        ),
        BedrockScript(blocks=(fb.Text("Mild."),)),
    )
    tools: list[Any] = [{"name": "get_weather", "input_schema": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": "Weather in Nice?"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    async with anthropic_sdk(invoking) as sdk:
        first = await sdk.messages.create(
            model="sonnet", max_tokens=3000, messages=messages, tools=tools, thinking=thinking
        )
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_i", "content": "20C"}],
            },
        ]
        second = await sdk.messages.create(
            model="sonnet", max_tokens=3000, messages=messages, tools=tools, thinking=thinking
        )
    assert first.content[0].signature == "sig-i"  # type: ignore[union-attr]
    assert second.content[0].text == "Mild."  # type: ignore[union-attr]
    request = bedrock.requests[0]
    assert request.route == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    body = request.json()
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in body
    assert "stream" not in body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "responses", "gemini"])
async def test_invoke_streamed_in_every_dialect(
    invoking: Gateway, bedrock: FakeBedrock, dialect: str
) -> None:
    bedrock.script(BedrockScript(blocks=(fb.Text("Invoked and streamed."),), chunk_size=11))
    status, events = await stream_raw(invoking, dialect)
    assert status == 200
    assert text_of(dialect, events) == "Invoked and streamed."
    assert bedrock.requests[0].route.endswith("/invoke-with-response-stream")


async def test_invoke_mid_stream_exception(invoking: Gateway, bedrock: FakeBedrock) -> None:
    bedrock.script(
        BedrockScript(
            blocks=(fb.Text("Partial invoke answer."),),
            exception_after=4,
            exception_type="modelStreamErrorException",
            error_message="The model stream failed.",
        )
    )
    status, events = await stream_raw(invoking, "anthropic")
    assert status == 200
    assert "The model stream failed." in json.dumps(error_of("anthropic", events))


async def test_invoke_leaves_other_models_on_converse(
    invoking: Gateway, bedrock: FakeBedrock
) -> None:
    async with openai_sdk(invoking) as sdk:
        await sdk.chat.completions.create(
            model="amazon.nova-pro-v1:0", messages=[{"role": "user", "content": "Hi"}]
        )
    assert bedrock.requests[0].route == "/model/amazon.nova-pro-v1%3A0/converse"


async def test_count_tokens(gateway: Gateway, bedrock: FakeBedrock) -> None:
    async with anthropic_sdk(gateway) as sdk:
        counted = await sdk.messages.count_tokens(
            model=PROFILE, messages=[{"role": "user", "content": "Count these words."}]
        )
    assert counted.input_tokens > 0
    request = bedrock.requests[0]
    assert request.route == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    assert request.json()["input"]["converse"]["messages"][0]["content"] == [
        {"text": "Count these words."}
    ]


# The real Claude Code CLI through Bedrock

CLAUDE_CODE_DEFAULT = "claude-opus-4-8"
"""The model the pinned Claude Code asks for by default (tests/clients/claude_code)."""
OPUS_PROFILE = "us.anthropic.claude-opus-4-8-v1:0"


@pytest.mark.parametrize("api", ["converse", "invoke"])
async def test_claude_code_through_bedrock(
    nursery: trio.Nursery, claude: Path, tmp_path: Path, bedrock: FakeBedrock, api: str
) -> None:
    """Claude Code's default model mapped to a Bedrock inference profile with an alias, as
    docs/configuration.md shows; SigV4 from the environment's credentials."""
    note = tmp_path / "note.txt"
    note.write_text(f"{SECRET}\n")
    bedrock.default = BedrockScript(blocks=(fb.Text(FINAL),))
    bedrock.script(
        BedrockScript(
            blocks=(
                fb.Thinking("I should read the file.", signature="sig-cc"),
                fb.ToolUse("Read", {"file_path": str(note)}, id="tooluse_cc"),
            )
        )
    )
    config = config_for(
        bedrock_provider(bedrock.base_url, api=api), aliases={CLAUDE_CODE_DEFAULT: OPUS_PROFILE}
    )
    gateway = await start_gateway(nursery, config)
    result = await run_claude(
        claude, gateway.url, CLIENT_KEY, tmp_path, "Read note.txt and tell me what it says."
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert FINAL in result.stdout.decode()
    actions = ("/converse", "/converse-stream", "/invoke", "/invoke-with-response-stream")
    calls = [r for r in bedrock.requests if r.route.endswith(actions)]
    assert all(f"/{api}" in r.route for r in calls)
    assert len(calls) >= 2, [r.route for r in bedrock.requests]
    assert all("us.anthropic.claude-opus-4-8-v1%3A0" in r.route for r in calls)
    assert SECRET not in calls[0].body.decode()
    assert SECRET in calls[-1].body.decode()
    assert set(bedrock.signed_by) == {f"sigv4:{fb.ACCESS_KEY}"}


def test_environment_only_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from proxycast.config import load_config

    monkeypatch.chdir(tmp_path)  # no ./proxycast.toml
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    config = load_config(generate_key=False)
    (provider,) = config.providers  # the access keys and AWS_REGION: the credential chain
    assert (provider.type, provider.api_keys) == ("bedrock", ())
    assert provider.url == "https://bedrock-runtime.us-east-1.amazonaws.com"
    monkeypatch.delenv("AWS_REGION")
    assert load_config(generate_key=False).providers == ()  # keys alone add nothing
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    (provider,) = load_config(generate_key=False).providers
    assert provider.api_keys == ("bedrock-api-key",)
    assert provider.url == "https://bedrock-runtime.eu-west-3.amazonaws.com"


async def test_check_online_and_the_models_list(bedrock: FakeBedrock, gateway: Gateway) -> None:
    from proxycast.upstream.diagnostics import probe_all

    (probe,) = await probe_all(gateway.config)
    assert (probe.outcome, probe.models) == ("reachable", (*bedrock.models, *bedrock.profiles))
    async with openai_sdk(gateway) as sdk:
        listed = [m.id async for m in sdk.models.list()]
    assert set(listed) >= {MODEL, PROFILE, "amazon.nova-pro-v1:0"}


async def test_gemini_model_ids_with_a_version_colon(
    gateway: Gateway, bedrock: FakeBedrock
) -> None:
    """A Bedrock id's ``:0`` in Gemini's ``models/{model}:generateContent`` path."""
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            f"{gateway.url}/v1beta/models/{MODEL}:generateContent",
            json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
            headers={"x-goog-api-key": CLIENT_KEY},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["candidates"][0]["content"]["parts"][0]["text"] == "Hello from Bedrock."
