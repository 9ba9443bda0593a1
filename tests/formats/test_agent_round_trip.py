"""Property: a tool-calling answer with reasoning, as each upstream gives it, goes to each client format
and comes back in that client's next request with ids, signatures and reasoning intact: the upstream
request satisfies the fakes' checks of the provider's rules."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxycast import formats
from proxycast.formats import internal
from proxycast.formats.anthropic import inbound as anthropic_inbound
from proxycast.formats.anthropic import wire as anthropic_wire
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.openai import inbound as openai_inbound
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from proxycast.testing import openai as fo

MODELS = {"anthropic": "claude-sonnet-4-5", "openai": "deepseek-v4", "gemini": "gemini-3-pro"}
WORDS = st.text("abcxyz ", min_size=1, max_size=12)
SIGNATURES = st.text("AZaz09+/=_-", min_size=1, max_size=40)
NAMES = st.sampled_from(["get_weather", "search"])
ARGS = st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2)


@st.composite
def answers(draw: st.DrawFn, kind: str) -> tuple[dict[str, Any], set[Any]]:
    """An upstream's answer with reasoning and at least one tool call, and what it issued (the
    signatures, or thinking blocks, it accepts back)."""
    calls = draw(st.integers(1, 3))
    if kind == "anthropic":
        blocks: list[Any] = [fa.Thinking(draw(WORDS), draw(SIGNATURES))]
        if draw(st.booleans()):
            blocks.append(fa.RedactedThinking(draw(SIGNATURES)))
        if draw(st.booleans()):
            blocks.append(fa.Text(draw(WORDS)))
        ids = draw(
            st.lists(
                st.text("abc019_-", min_size=1, max_size=20),
                min_size=calls,
                max_size=calls,
                unique=True,
            )
        )
        blocks += [fa.ToolUse(draw(NAMES), draw(ARGS), id=f"toolu_{i}") for i in ids]
        message = fa.message(fa.AnthropicScript(blocks=tuple(blocks)), MODELS[kind], "msg_1")
        issued: set[Any] = {
            (b["thinking"], b["signature"]) for b in message["content"] if b["type"] == "thinking"
        }
        issued |= {("", b["data"]) for b in message["content"] if b["type"] == "redacted_thinking"}
        return message, issued
    if kind == "gemini":
        parts: list[Any] = [fg.Thought(draw(WORDS))]
        if draw(st.booleans()):
            parts.append(fg.Text(draw(WORDS)))
        for index in range(calls):  # Gemini 3 signs the first call of a step; later ones may be
            signature = draw(SIGNATURES) if index == 0 else draw(st.none() | SIGNATURES)
            parts.append(fg.Call(draw(NAMES), draw(ARGS), signature))
        gemini = fg.GeminiScript(parts=tuple(parts), final_signature=draw(st.none() | SIGNATURES))
        signed = {p.thought_signature for p in parts if isinstance(p, fg.Call)}
        return fg.response(gemini, MODELS[kind]), signed | {gemini.final_signature}
    tool_calls = tuple(
        fo.FakeToolCall(name=draw(NAMES), arguments=json.dumps(draw(ARGS)), id=f"call_{i}")
        for i in draw(
            st.lists(
                st.text("abc019", min_size=1, max_size=30),
                min_size=calls,
                max_size=calls,
                unique=True,
            )
        )
    )
    script = fo.Script(
        text=draw(st.sampled_from(["", "Checking."])), reasoning=draw(WORDS), tool_calls=tool_calls
    )
    return fo.completion(script, MODELS[kind], "chatcmpl-1"), set()


def next_request(dialect: str, answer: dict[str, Any]) -> Any:
    """The client's next request: its answer sent back as it came, then a result for each call."""
    if dialect == "openai":
        message = answer["choices"][0]["message"]
        results = [
            {"role": "tool", "tool_call_id": c["id"], "content": "done"}
            for c in message["tool_calls"]
        ]
        request: dict[str, Any] = {
            "model": "m",
            "reasoning_effort": "high",
            "messages": [{"role": "user", "content": "Go"}, message, *results],
        }
        return openai_inbound.request_to_internal(openai_inbound.validate(request))
    results = [
        {"type": "tool_result", "tool_use_id": b["id"], "content": "done"}
        for b in answer["content"]
        if b["type"] == "tool_use"
    ]
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 4096},
        "messages": [
            {"role": "user", "content": "Go"},
            {"role": "assistant", "content": answer["content"]},
            {"role": "user", "content": results},
        ],
    }
    parsed = anthropic_wire.converter.structure(body, anthropic_wire.MessagesRequest)
    return anthropic_inbound.request_to_internal(parsed)


@pytest.mark.parametrize("upstream", ["anthropic", "openai", "gemini"])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@given(data=st.data())
@settings(max_examples=60)
def test_tool_loops_round_trip_every_pair(dialect: str, upstream: str, data: st.DataObject) -> None:
    wire_answer, issued = data.draw(answers(upstream))
    spoke = formats.UPSTREAMS[upstream]
    client = next(d for d in formats.DIALECTS if d.name == dialect)
    replies = spoke.reply_to_internal(wire_answer, UpstreamRequest(path="/"))
    answer = client.reply_from_internal(replies, "m", internal.Conversation())
    conversation = next_request(dialect, json.loads(json.dumps(answer)))
    body = dict(spoke.request_from_internal(conversation, MODELS[upstream]).body)

    if upstream == "anthropic":
        assert fa.problem(body, issued) is None
        assert "thinking" in body  # the thinking blocks came back, so thinking stayed on
        sent = body["messages"][1]["content"]
        assert sent[: len(issued)] == [
            b for b in wire_answer["content"] if b["type"] in ("thinking", "redacted_thinking")
        ]
        assert [b["id"] for b in sent if b["type"] == "tool_use"] == [
            b["id"] for b in wire_answer["content"] if b["type"] == "tool_use"
        ]
    elif upstream == "gemini":
        assert fg.validate(body) is None
        assert fg.signature_problem(body, MODELS[upstream], issued) is None
        got = [
            p.get("thoughtSignature") for p in body["contents"][1]["parts"] if "functionCall" in p
        ]
        wanted = [
            p.get("thoughtSignature")
            for p in wire_answer["candidates"][0]["content"]["parts"]
            if "functionCall" in p
        ]
        assert got == wanted
    else:
        assert fo.problem(body, 40, reasoning_echo=True) is None
        assistant, *tools = body["messages"][1:]
        message = wire_answer["choices"][0]["message"]
        assert assistant["reasoning_content"] == message["reasoning_content"]
        assert [c["id"] for c in assistant["tool_calls"]] == [
            c["id"] for c in message["tool_calls"]
        ]
        assert [t["tool_call_id"] for t in tools] == [c["id"] for c in message["tool_calls"]]


@given(
    st.text("abcXYZ019_-", min_size=1, max_size=30).filter(lambda i: "__ts" not in i),
    st.none() | st.text(min_size=1, max_size=60),
)
def test_signed_ids_are_lossless_and_pattern_safe(call_id: str, signature: str | None) -> None:
    signed = internal.signed_id(call_id, signature)
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", signed)
    assert internal.split_id(signed) == (call_id, signature)


def test_ids_signed_the_old_way_still_split() -> None:
    assert internal.split_id("call_1__ts_Cs4B+/ab==") == ("call_1", "Cs4B+/ab==")
