"""The rest of the Responses API's surface through the official openai SDK, on every upstream kind:
``responses.compact()`` (its compaction item carries the window into the next response),
``input_tokens.count()``, ``input_items.list()``, ``responses.connect()``; reasoning items with their
raw text as ``reasoning_text`` content and signatures in ``encrypted_content`` that come back intact
(Claude's thinking, Gemini's thoughts and signed calls, DeepSeek's ``reasoning_content``); and the
rule-based fake (``proxycast.testing.rules``) the compliance suite runs against."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
import trio

from proxycast.formats.responses import inbound as responses
from proxycast.testing import (
    AnthropicScript,
    FakeAnthropic,
    FakeOpenAI,
    FakeToolCall,
    GeminiScript,
    Script,
    rules,
)
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from tests.support import CLIENT_KEY, one_provider, start_gateway
from tests.test_responses_api import KINDS, MODEL, TOOLS, Start
from tests.test_responses_api import _start as _start

ALL = sorted(KINDS)


@pytest.mark.parametrize("kind", ALL)
async def test_compact_then_continue_from_the_compaction(start: Start, kind: str) -> None:
    setup = await start(kind)
    setup.fake.script(setup.kind.text("Launch Tuesday; tell support first."))
    window: Any = [
        {"role": "user", "content": "We launch on Tuesday and tell support first."},
        {"role": "assistant", "content": "Understood."},
    ]
    compacted = await setup.sdk.responses.compact(model=MODEL, input=window)
    assert compacted.object == "response.compaction"
    *users, compaction = compacted.output
    assert [u.role for u in users] == ["user"]  # type: ignore[union-attr]
    assert compaction.type == "compaction"
    assert compaction.encrypted_content  # type: ignore[union-attr]
    asked = setup.fake.requests[-1]
    if kind == "openai-responses":
        assert asked.path == "/v1/responses/compact"
    else:  # the upstream model was asked for the summary
        assert "Summarize the conversation" in asked.body.decode()
    # the compacted window, sent back, reaches the upstream as the summary
    setup.fake.script(setup.kind.text("Tuesday."))
    follow: Any = [
        *[item.model_dump(exclude_none=True, warnings=False) for item in compacted.output],
        {"role": "user", "content": "When do we launch?"},
    ]
    answer = await setup.sdk.responses.create(model=MODEL, input=follow)
    assert answer.output_text == "Tuesday."
    if kind != "openai-responses":
        assert "Launch Tuesday; tell support first." in setup.fake.requests[-1].body.decode()


async def test_a_compaction_item_says_what_it_holds() -> None:
    content = responses.compaction_content("The summary.")
    assert content.startswith(responses.COMPACTION_PREFIX)
    assert responses.compaction_summary(content) == "The summary."
    assert responses.compaction_summary("gAAAA-openai-encrypted") is None


async def test_compact_needs_a_model(start: Start) -> None:
    setup = await start("anthropic")
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(base_url=setup.url, headers=headers) as client:
        answer = await client.post("/responses/compact", json={"input": "Hi"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "model"


@pytest.mark.parametrize("kind", ALL)
async def test_the_sdk_surface_on_every_kind(start: Start, kind: str) -> None:
    """``input_tokens.count()``, ``input_items.list()`` and ``connect()`` on one gateway."""
    setup = await start(kind)
    counted = await setup.sdk.responses.input_tokens.count(model=MODEL, input="one two three")
    assert counted.input_tokens > 0
    setup.fake.script(setup.kind.text("One."), setup.kind.text("Two."))
    first = await setup.sdk.responses.create(model=MODEL, input="Hi")
    second = await setup.sdk.responses.create(
        model=MODEL, input="And then?", previous_response_id=first.id
    )
    page = await setup.sdk.responses.input_items.list(second.id, order="asc")
    texts = [part.text for item in page.data for part in item.content]  # type: ignore[union-attr]
    # a forwarded response's earlier turns are the upstream's: its own input is listed
    assert texts[-1] == "And then?"
    if kind != "openai-responses":
        assert texts == ["Hi", "One.", "And then?"]

    setup.fake.script(setup.kind.text("Three."), setup.kind.text("Four."))

    def talk() -> tuple[str, str]:
        sdk = openai.OpenAI(base_url=setup.url, api_key=CLIENT_KEY, max_retries=0)
        with sdk.responses.connect() as connection:
            done: list[Any] = []
            for text, previous in (("Go.", None), ("On.", True)):
                more: Any = {"previous_response_id": done[-1].id} if previous else {}
                connection.response.create(model=MODEL, input=text, **more)
                for event in connection:
                    if event.type == "response.completed":
                        done.append(event.response)
                        break
                    assert event.type != "error", event
            return done[0].output_text, done[1].output_text

    assert await trio.to_thread.run_sync(talk) == ("Three.", "Four.")
    assert "Three." in setup.fake.requests[-1].body.decode()  # the connection's first turn


# Reasoning: its text as reasoning_text content, its signature in encrypted_content, back intact


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_claude_thinking_round_trips(start: Start, stream: bool) -> None:
    setup = await start("anthropic")
    setup.fake.script(
        AnthropicScript(
            blocks=(
                fa.Thinking("Paris weather: ask the tool.", signature="sig-claude-1"),
                fa.ToolUse("get_weather", {"city": "Paris"}, id="toolu_1"),
            )
        ),
        AnthropicScript(blocks=(fa.Text("Sunny."),)),
    )
    first = await _create(setup.sdk, stream, input="Weather in Paris?", tools=TOOLS)
    reasoning, call = first.output
    assert reasoning.type == "reasoning"
    assert [s.text for s in reasoning.summary] == ["Paris weather: ask the tool."]
    assert [(c.type, c.text) for c in reasoning.content or ()] == [
        ("reasoning_text", "Paris weather: ask the tool.")
    ]
    assert reasoning.encrypted_content == "sig-claude-1"
    history: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},  # type: ignore[union-attr]
    ]
    second = await setup.sdk.responses.create(
        model=MODEL, input=history, tools=TOOLS, include=["reasoning.encrypted_content"]
    )
    assert second.output_text == "Sunny."  # Claude refuses a thinking block it did not sign
    sent = setup.fake.requests[-1].json()["messages"][1]["content"][0]
    assert sent == {
        "type": "thinking",
        "thinking": "Paris weather: ask the tool.",
        "signature": "sig-claude-1",
    }


async def test_claude_redacted_thinking_round_trips(start: Start) -> None:
    setup = await start("anthropic")
    setup.fake.script(
        AnthropicScript(blocks=(fa.RedactedThinking("opaque-data"), fa.Text("Done."))),
        AnthropicScript(blocks=(fa.Text("Again."),)),
    )
    first = await setup.sdk.responses.create(model=MODEL, input="Go.")
    reasoning = first.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.encrypted_content == responses.REDACTED_MARK + "opaque-data"
    history: Any = [
        {"role": "user", "content": "Go."},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"role": "user", "content": "Again."},
    ]
    second = await setup.sdk.responses.create(model=MODEL, input=history)
    assert second.output_text == "Again."
    sent = setup.fake.requests[-1].json()["messages"][1]["content"][0]
    assert sent == {"type": "redacted_thinking", "data": "opaque-data"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_gemini_thoughts_and_a_signed_call_round_trip(start: Start, stream: bool) -> None:
    setup = await start("gemini")
    setup.fake.script(
        GeminiScript(
            parts=(
                fg.Thought("The tool knows."),
                fg.Call("get_weather", {"city": "Paris"}, thought_signature="gsig-1"),
            )
        ),
        GeminiScript(parts=(fg.Text("Sunny."),)),
    )
    first = await _create(setup.sdk, stream, input="Weather in Paris?", tools=TOOLS)
    reasoning, call = first.output
    assert [(c.type, c.text) for c in reasoning.content or ()] == [  # type: ignore[union-attr]
        ("reasoning_text", "The tool knows.")
    ]
    history: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},  # type: ignore[union-attr]
    ]
    second = await setup.sdk.responses.create(
        model=MODEL, input=history, tools=TOOLS, include=["reasoning.encrypted_content"]
    )
    assert second.output_text == "Sunny."
    model_turn = setup.fake.requests[-1].json()["contents"][1]
    signed = [p for p in model_turn["parts"] if "functionCall" in p]
    assert signed[0]["thoughtSignature"] == "gsig-1"


async def test_deepseek_reasoning_content_is_reasoning_text(start: Start) -> None:
    setup = await start("openai-chat")
    setup.fake.script(Script(reasoning="Two plus two.", text="Four."))
    async with setup.sdk.responses.stream(model=MODEL, input="2+2?") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    reasoning = final.output[0]
    assert [(c.type, c.text) for c in reasoning.content or ()] == [  # type: ignore[union-attr]
        ("reasoning_text", "Two plus two.")
    ]
    assert "response.reasoning_text.delta" in kinds
    assert "response.reasoning_text.done" in kinds
    assert final.output_text == "Four."


async def test_deepseek_thinking_mode_gets_its_reasoning_back(nursery: trio.Nursery) -> None:
    """DeepSeek's thinking mode refuses a tool call sent back without its ``reasoning_content``:
    the reasoning item brings it back."""
    fake = FakeOpenAI(reasoning_echo=True)
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("openai", fake.base_url, (MODEL,)))
    call = FakeToolCall(name="get_weather", arguments='{"city": "Paris"}', id="call_1")
    fake.script(
        Script(reasoning="Ask the tool.", text="", tool_calls=(call,)), Script(text="Sunny.")
    )
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as sdk:
        first = await sdk.responses.create(model=MODEL, input="Weather?", tools=TOOLS)
        history: Any = [
            {"role": "user", "content": "Weather?"},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        ]
        second = await sdk.responses.create(model=MODEL, input=history, tools=TOOLS)
    assert second.output_text == "Sunny."
    assert fake.requests[-1].json()["messages"][1]["reasoning_content"] == "Ask the tool."


async def _create(sdk: openai.AsyncOpenAI, stream: bool, **request: Any) -> Any:
    request = {"model": MODEL, "include": ["reasoning.encrypted_content"], **request}
    if not stream:
        return await sdk.responses.create(**request)
    async with sdk.responses.stream(**request) as events:
        async for _ in events:
            pass
        return await events.get_final_response()


# The rule-based fake


def _recorded(route: str, body: dict[str, Any]) -> Any:
    from proxycast.testing import RecordedRequest

    return RecordedRequest("POST", route, {}, json.dumps(body).encode(), 0.0)


def test_the_rules_call_the_first_tool_then_answer_its_result() -> None:
    function = {"name": "get_weather", "parameters": TOOLS[0]["parameters"]}
    tools = [{"type": "function", "function": function}]
    asked = {"model": "m", "messages": [{"role": "user", "content": "Weather?"}], "tools": tools}
    script = rules.openai_script(_recorded("/v1/chat/completions", asked))
    (call,) = script.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "example"})
    answered = {
        **asked,
        "messages": [
            *asked["messages"],
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    }
    assert rules.openai_script(_recorded("/v1/chat/completions", answered)).text == (
        "The tool answered: sunny"
    )
    plain = {"model": "m", "messages": [{"role": "user", "content": "Reply with exactly: first"}]}
    assert rules.openai_script(_recorded("/v1/chat/completions", plain)).text == "first"


def test_the_rules_read_every_format() -> None:
    anthropic = {
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "none"},
    }
    assert rules.read_anthropic(anthropic).no_calls
    gemini = {
        "contents": [{"role": "user", "parts": [{"text": "What is the code word?"}]}],
        "systemInstruction": {"parts": [{"text": "The code word: slate."}]},
    }
    script = rules.gemini_script(_recorded("/v1beta/models/m:generateContent", gemini))
    assert script.parts == (fg.Text("slate"),)
    responses_body = {"input": [{"type": "function_call_output", "call_id": "c", "output": "42"}]}
    assert rules.read_responses(responses_body).tool_result == "42"


async def test_the_fakes_follow_the_rules_when_nothing_is_queued(nursery: trio.Nursery) -> None:
    openai_fake, claude = rules.follow(FakeOpenAI()), rules.follow(FakeAnthropic())
    await nursery.start(openai_fake.serve)
    await nursery.start(claude.serve)
    async with httpx.AsyncClient() as client:
        body: Any = {
            "model": "m",
            "messages": [{"role": "user", "content": "Reply with exactly: hi"}],
        }
        answer = await client.post(openai_fake.base_url + "/chat/completions", json=body)
        assert answer.json()["choices"][0]["message"]["content"] == "hi"
        claude.script(AnthropicScript(blocks=(fa.Text("queued"),)))  # a queued script first
        body = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "Hi"}]}
        answer = await client.post(claude.base_url + "/v1/messages", json=body)
        assert answer.json()["content"][0]["text"] == "queued"
        answer = await client.post(claude.base_url + "/v1/messages", json=body)
        assert answer.json()["content"][0]["text"] == "You said: Hi"


@pytest.mark.parametrize("kind", ALL)
async def test_a_warm_up_runs_no_model(start: Start, kind: str) -> None:
    """``generate: false`` (Codex's prewarm over a WebSocket): an empty completed response, which
    the next turn continues; a converted upstream is not asked at all."""
    setup = await start(kind)
    setup.fake.script(setup.kind.text("Warm."))
    warm = await setup.sdk.responses.create(
        model=MODEL, input="Context.", extra_body={"generate": False}
    )
    assert (warm.status, warm.output) == ("completed", [])
    asked = len(setup.fake.requests)
    assert asked == (1 if kind == "openai-responses" else 0)
    answer = await setup.sdk.responses.create(
        model=MODEL, input="Go.", previous_response_id=warm.id
    )
    assert answer.output_text == "Warm."  # the queued answer was not spent on the warm-up
    if kind != "openai-responses":
        assert "Context." in setup.fake.requests[-1].body.decode()


@pytest.mark.parametrize("kind", ALL)
async def test_a_tool_output_without_its_call_is_refused(start: Start, kind: str) -> None:
    setup = await start(kind)
    with pytest.raises(openai.BadRequestError) as info:
        await setup.sdk.responses.create(
            model=MODEL,
            input=[{"type": "function_call_output", "call_id": "call_nowhere", "output": "x"}],
        )
    assert "call_nowhere" in str(info.value)
    assert info.value.body["param"] == "input"  # type: ignore[index]
    assert not setup.fake.requests or kind == "openai-responses"  # refused before any upstream


@pytest.mark.parametrize("kind", ALL)
async def test_a_failed_continuation_forgets_its_previous_response(start: Start, kind: str) -> None:
    """Over a WebSocket, as OpenAI's connection cache does; and an id nobody knows is OpenAI's
    ``previous_response_not_found``, from the gateway or from a Responses upstream."""
    setup = await start(kind, store=False)
    setup.fake.script(setup.kind.text("OK."))

    def talk() -> list[Any]:
        sdk = openai.OpenAI(base_url=setup.url, api_key=CLIENT_KEY, max_retries=0)
        ends: list[Any] = []
        orphan: Any = [{"type": "function_call_output", "call_id": "call_x", "output": "x"}]
        with sdk.responses.connect() as connection:
            # (input, continue the first response?, previous_response_id otherwise)
            for text, follow, other in (
                ("Go.", False, None),
                (orphan, True, None),  # fails: no such call
                ("Go.", True, None),  # the first response was forgotten
                ("Go.", False, "resp_unknown"),
            ):
                request: Any = {"model": MODEL, "input": text, "store": False}
                if follow or other:
                    request["previous_response_id"] = ends[0].response.id if follow else other
                connection.response.create(**request)
                for event in connection:
                    if event.type in ("response.completed", "error"):
                        ends.append(event)
                        break
        return ends

    first, failed, stale, unknown = await trio.to_thread.run_sync(talk)
    assert first.type == "response.completed"
    assert failed.type == "error"
    assert (stale.type, stale.error.code) == ("error", "previous_response_not_found")
    assert (unknown.type, unknown.error.code) == ("error", "previous_response_not_found")
