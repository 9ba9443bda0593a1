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
from google.genai import errors as genai_errors
from google.genai import types

from proxycast import formats
from proxycast.config import Config, ConfigError, ProviderConfig, ServerConfig, check_config
from proxycast.testing import BedrockScript, FakeBedrock
from proxycast.testing import bedrock as fb
from proxycast.upstream.discovery import fetch_models
from proxycast.upstream.provider import make_client
from tests.support import CLIENT_KEY, Gateway, start_gateway

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
    bedrock.script(BedrockScript(blocks=(fb.Text("Hello from Bedrock."),), cache_read_input_tokens=5))
    async with openai_sdk(gateway) as sdk:
        answer = await sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            max_tokens=50,
            temperature=0.5,
            stop=["END"],
        )
    assert answer.choices[0].message.content == "Hello from Bedrock."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens == 12 + 5
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
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9
    assert bedrock.requests[0].route.endswith("/converse-stream")
