"""The bad-input corpus, through the running gateway over HTTP: a known field missing or of the wrong
JSON type is refused on every path (forwarded to an upstream of the client's format, or converted),
with a 400 naming the field in the client's dialect, and no upstream is called; what is only newer
than proxycast (a field it does not declare, a new enum value, tool type, block type or item type)
still reaches an upstream of the client's format (docs/guarantees.md, "Passthrough checks only what
no upstream could accept").

One gateway serves every path: ``c-*`` on an OpenAI-compatible provider (chat completions), ``r-*``
on one that serves the Responses API itself, ``a-*`` on Anthropic. Each test walks its corpus in a
loop (one gateway, not one per case) and reports every case that failed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.testing import FakeAnthropic, FakeOpenAI
from tests.support import CLIENT_KEY, UPSTREAM_KEY, start_gateway

if TYPE_CHECKING:
    import trio

    from tests.support import Gateway

HI = [{"role": "user", "content": "Hi"}]
Case = tuple[str, dict[str, Any], str]
"""``(id, change to a valid body, the field the 400 names)``; a change to None removes the key."""

OPENAI_REFUSED: list[Case] = [
    ("no-messages", {"messages": None}, "messages"),
    ("messages-string", {"messages": "hello"}, "messages"),
    ("messages-object", {"messages": {"role": "user", "content": "hi"}}, "messages"),
    ("message-number", {"messages": [5]}, "messages[0]"),
    ("no-content", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("content-number", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (
        "text-number",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text",
    ),
    (
        "tool-calls-string",
        {"messages": [{"role": "assistant", "tool_calls": "get_weather"}]},
        "messages[0].tool_calls",
    ),
    ("temperature-hot", {"temperature": "hot"}, "temperature"),
    ("top-p-string", {"top_p": "1"}, "top_p"),
    ("max-tokens-many", {"max_tokens": "many"}, "max_tokens"),
    ("max-completion-bool", {"max_completion_tokens": True}, "max_completion_tokens"),
    ("n-string", {"n": "2"}, "n"),
    ("seed-fraction", {"seed": 1.5}, "seed"),
    ("presence-string", {"presence_penalty": "0"}, "presence_penalty"),
    ("stop-number", {"stop": 5}, "stop"),
    ("stop-numbers", {"stop": [1, 2]}, "stop[0]"),
    ("tools-string", {"tools": "get_weather"}, "tools"),
    ("tool-not-object", {"tools": ["get_weather"]}, "tools[0]"),
    ("tool-no-function", {"tools": [{"type": "function"}]}, "tools[0].function"),
    (
        "tool-name-number",
        {"tools": [{"type": "function", "function": {"name": 5}}]},
        "tools[0].function.name",
    ),
    ("tool-choice-number", {"tool_choice": 42}, "tool_choice"),
    ("tool-choice-no-function", {"tool_choice": {"type": "function"}}, "tool_choice.function"),
    ("parallel-number", {"parallel_tool_calls": 1}, "parallel_tool_calls"),
    ("logprobs-string", {"logprobs": "true"}, "logprobs"),
    ("stream-options-string", {"stream_options": "yes"}, "stream_options"),
    ("response-format-string", {"response_format": "json"}, "response_format"),
    ("metadata-number", {"metadata": {"a": 1}}, "metadata.a"),
    ("user-number", {"user": 42}, "user"),
    ("stream-string", {"stream": "yes"}, "stream"),
    ("model-number", {"model": 5}, "model"),
]

OPENAI_FORWARDED: list[tuple[str, dict[str, Any]]] = [
    ("unknown-fields", {"verbosity": "low", "prediction": {"type": "content", "content": "x"}}),
    ("tool-choice-new-value", {"tool_choice": "sometimes"}),
    ("custom-tool", {"tools": [{"type": "custom", "custom": {"name": "grep"}}]}),
    (
        "allowed-tools-choice",
        {"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}},
    ),
    (
        "custom-tool-call",
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "custom", "custom": {"name": "grep", "input": "x"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "found"},
            ]
        },
    ),
]

ANTHROPIC_REFUSED: list[Case] = [
    ("messages-nope", {"messages": "nope"}, "messages"),
    ("no-messages", {"messages": None}, "messages"),
    ("no-max-tokens", {"max_tokens": None}, "max_tokens"),
    ("max-tokens-many", {"max_tokens": "many"}, "max_tokens"),
    ("temperature-hot", {"temperature": "hot"}, "temperature"),
    ("top-k-string", {"top_k": "5"}, "top_k"),
    ("stop-string", {"stop_sequences": "STOP"}, "stop_sequences"),
    ("system-number", {"system": 5}, "system"),
    ("tools-string", {"tools": "get_weather"}, "tools"),
    ("tool-no-name", {"tools": [{"input_schema": {"type": "object"}}]}, "tools[0].name"),
    ("tool-choice-number", {"tool_choice": 42}, "tool_choice"),
    ("tool-choice-name-number", {"tool_choice": {"type": "tool", "name": 5}}, "tool_choice.name"),
    ("content-number", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("no-content", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("role-number", {"messages": [{"role": 5, "content": "hi"}]}, "messages[0].role"),
    (
        "text-number",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text",
    ),
    (
        "tool-use-input-string",
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": "x"}],
                }
            ]
        },
        "messages[0].content[0].input",
    ),
    ("thinking-string", {"thinking": "on"}, "thinking"),
    ("metadata-user-number", {"metadata": {"user_id": 5}}, "metadata.user_id"),
    ("stream-string", {"stream": "yes"}, "stream"),
]

ANTHROPIC_FORWARDED: list[tuple[str, dict[str, Any]]] = [
    ("unknown-fields", {"context_management": {"edits": []}, "service_tier": "auto"}),
    ("tool-choice-new-type", {"tool_choice": {"type": "sometimes"}}),
    ("new-role", {"messages": [{"role": "narrator", "content": "Once upon a time"}, *HI]}),
    (
        "new-block-type",
        {"messages": [{"role": "user", "content": [{"type": "container_upload", "file_id": "f"}]}]},
    ),
    ("new-thinking-type", {"thinking": {"type": "between_tools"}}),
    ("server-tool", {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
]

RESPONSES_REFUSED: list[Case] = [
    ("input-number", {"input": 5}, "input"),
    ("input-item-number", {"input": [5]}, "input[0]"),
    ("instructions-number", {"instructions": 5}, "instructions"),
    ("temperature-hot", {"temperature": "hot"}, "temperature"),
    ("max-output-many", {"max_output_tokens": "many"}, "max_output_tokens"),
    ("tools-string", {"tools": "get_weather"}, "tools"),
    ("tool-choice-number", {"tool_choice": 42}, "tool_choice"),
    ("parallel-string", {"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ("reasoning-string", {"reasoning": "high"}, "reasoning"),
    ("text-string", {"text": "json"}, "text"),
    ("include-string", {"include": "reasoning.encrypted_content"}, "include"),
    ("metadata-number", {"metadata": {"a": 1}}, "metadata.a"),
    ("stream-string", {"stream": "yes"}, "stream"),
    ("model-missing", {"model": None}, "model"),
]

RESPONSES_FORWARDED: list[tuple[str, dict[str, Any]]] = [
    ("unknown-fields", {"prompt_cache_key": "k", "service_tier": "flex"}),
    ("new-tool-type", {"tools": [{"type": "image_generation_v9"}]}),
    ("new-item-type", {"input": [{"type": "compaction_summary", "summary": "earlier"}]}),
    ("new-effort", {"reasoning": {"effort": "ultra"}}),
    ("tool-choice-new-value", {"tool_choice": "sometimes"}),
]


def changed(body: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = {**body, **change}
    return {k: v for k, v in out.items() if v is not None}


@pytest.fixture(name="upstreams")
async def _upstreams(nursery: trio.Nursery) -> tuple[FakeOpenAI, FakeAnthropic]:
    openai_fake, claude_fake = FakeOpenAI(), FakeAnthropic()
    await nursery.start(openai_fake.serve)
    await nursery.start(claude_fake.serve)
    return openai_fake, claude_fake


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, upstreams: tuple[FakeOpenAI, FakeAnthropic]) -> Gateway:
    openai_fake, claude_fake = upstreams

    def provider(name: str, type_: str, url: str, model: str, responses: bool = False) -> Any:
        return ProviderConfig(
            name=name,
            type=type_,
            base_url=url,
            api_keys=(UPSTREAM_KEY,),
            models=(model,),
            responses=responses,
        )

    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            provider("chat", "openai", openai_fake.base_url, "c-*"),
            provider("resp", "openai", openai_fake.base_url, "r-*", responses=True),
            provider("claude", "anthropic", claude_fake.base_url, "a-*"),
        ),
    )
    return await start_gateway(nursery, config)


async def walk(
    gateway: Gateway,
    upstreams: tuple[FakeOpenAI, FakeAnthropic],
    path: str,
    valid: dict[str, Any],
    models: dict[str, str],
    refused: list[Case],
    forwarded: list[tuple[str, dict[str, Any]]],
    named: Any,
) -> list[str]:
    """Every case on every path (``models``: path name -> model); the failures, described."""
    failures: list[str] = []
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "x-api-key": CLIENT_KEY}
    openai_fake, claude_fake = upstreams

    def calls() -> int:
        return len(openai_fake.requests) + len(claude_fake.requests)

    async with httpx.AsyncClient(timeout=10) as client:
        for where, model in models.items():
            for case, change, param in refused:
                before = calls()
                response = await client.post(
                    gateway.url + path,
                    json=changed({**valid, "model": model}, change),
                    headers=headers,
                )
                if response.status_code != 400 or not named(response.json(), param):
                    failures.append(f"{where} {case}: {response.status_code} {response.text[:200]}")
                if calls() != before:
                    failures.append(f"{where} {case}: the upstream was called")
        passthrough = models["passthrough"]
        for case, change in forwarded:
            before = calls()
            response = await client.post(
                gateway.url + path,
                json=changed({**valid, "model": passthrough}, change),
                headers=headers,
            )
            if calls() != before + 1:
                failures.append(f"passthrough {case}: not forwarded ({response.status_code})")
    return failures


def openai_names(body: dict[str, Any], param: str) -> bool:
    error = body["error"]
    return bool(
        error["param"] == param
        and error["type"] == "invalid_request_error"
        and f"'{param}'" in error["message"]
    )


def anthropic_names(body: dict[str, Any], param: str) -> bool:
    error = body["error"]
    return bool(
        body["type"] == "error"
        and error["type"] == "invalid_request_error"
        and f"'{param}'" in error["message"]
    )


async def test_openai_chat_corpus(
    gateway: Gateway, upstreams: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    failures = await walk(
        gateway,
        upstreams,
        "/v1/chat/completions",
        {"messages": HI},
        {"passthrough": "c-m", "converted": "a-m"},
        OPENAI_REFUSED,
        OPENAI_FORWARDED,
        openai_names,
    )
    assert failures == []


async def test_anthropic_messages_corpus(
    gateway: Gateway, upstreams: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    failures = await walk(
        gateway,
        upstreams,
        "/v1/messages",
        {"max_tokens": 10, "messages": HI},
        {"passthrough": "a-m", "converted": "c-m"},
        ANTHROPIC_REFUSED,
        ANTHROPIC_FORWARDED,
        anthropic_names,
    )
    assert failures == []


async def test_responses_corpus(
    gateway: Gateway, upstreams: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    failures = await walk(
        gateway,
        upstreams,
        "/v1/responses",
        {"input": "Hi"},
        {"passthrough": "r-m", "converted": "c-m"},
        RESPONSES_REFUSED,
        RESPONSES_FORWARDED,
        openai_names,
    )
    assert failures == []
