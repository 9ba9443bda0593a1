"""Anthropic clients served by OpenAI-compatible upstreams: properties of the conversions both ways."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import given, settings
from hypothesis import strategies as st

from proxycast.core.relay import Converting
from proxycast.formats import internal, sse
from proxycast.formats.anthropic import inbound as codec
from proxycast.formats.anthropic import outbound as anthropic_outbound
from proxycast.formats.anthropic import wire as anthropic_wire
from proxycast.formats.openai import inbound as openai_inbound
from proxycast.formats.openai import outbound as openai_codec
from proxycast.formats.openai import wire as openai_wire
from proxycast.testing.openai import FakeToolCall, Script, completion, stream_chunks

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
ARGS = st.dictionaries(
    st.text("abcxyz", max_size=4), st.integers() | st.text(max_size=5) | st.booleans(), max_size=3
)
SCRIPTS = st.builds(
    Script,
    text=TEXT,
    reasoning=TEXT,
    tool_calls=st.lists(
        st.builds(
            FakeToolCall,
            name=st.sampled_from(["f", "get_weather"]),
            arguments=ARGS.map(json.dumps),
            id=st.text("abcdef0123456789", min_size=4, max_size=8).map(lambda s: "call_" + s),
        ),
        max_size=3,
        unique_by=lambda c: c.id,
    ).map(tuple),
    chunks=st.integers(0, 4),
    prompt_tokens=st.integers(0, 1000),
    completion_tokens=st.integers(0, 1000),
    finish_reason=st.sampled_from([None, "stop", "length", "content_filter"]),
)


def snapshot(message: Any) -> dict[str, Any]:
    data = message if isinstance(message, dict) else message.to_dict()
    return {
        "content": [
            {k: v for k, v in b.items() if k != "citations" and v is not None}
            for b in data["content"]
        ],
        "stop_reason": data["stop_reason"],
        "model": data["model"],
        "usage": {
            k: data["usage"].get(k) or 0
            for k in ("input_tokens", "output_tokens", "cache_read_input_tokens")
        },
    }


@given(SCRIPTS, st.data())
@settings(max_examples=300)
def test_openai_streams_become_anthropic_events_the_sdk_accumulates_like_the_message(
    script: Script, data: st.DataObject
) -> None:
    chunks = stream_chunks(script, "gpt", "chatcmpl-1", include_usage=True)
    raw = (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))

    translator = Converting(
        openai_codec.StreamDecoder(), codec.StreamEncoder("claude-like"), "openai"
    )
    out = b""
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        out += translator.feed(raw[start:end])
    out += translator.end()
    assert translator.finished

    parser = sse.SSEParser()
    snapshot_: Any = None
    json_bufs: dict[int, bytes] = {}
    names: list[str] = []
    for item in parser.feed(out):
        assert isinstance(item, sse.Event)
        event = json.loads(item.data)
        assert event["type"] == item.event  # every frame carries its event line
        names.append(item.event)
        snapshot_ = accumulate_event(event=event, current_snapshot=snapshot_, json_bufs=json_bufs)
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    starts = [
        json.loads(i.data)["index"]
        for i in sse.SSEParser().feed(out)
        if isinstance(i, sse.Event) and i.event == "content_block_start"
    ]
    assert starts == list(range(len(starts)))  # blocks numbered 0, 1, 2... across kinds
    indices = [
        json.loads(i.data)["index"]
        for i in sse.SSEParser().feed(out)
        if isinstance(i, sse.Event) and i.event.startswith("content_block_")
    ]
    runs = [i for n, i in enumerate(indices) if n == 0 or indices[n - 1] != i]
    assert runs == sorted(set(runs))  # each block's events contiguous, as Claude sends them

    reply = openai_codec.response_to_internal(completion(script, "gpt", "chatcmpl-1"))
    expected = codec.response_from_internal(reply, "claude-like")
    assert snapshot(snapshot_) == snapshot(expected)


BLOCK_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=10)
TOOL_IDS = st.text("abcdefXYZ_-0123", min_size=1, max_size=8).map(lambda s: "toolu_" + s)


@st.composite
def anthropic_conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": draw(BLOCK_TEXT)}]
    for _ in range(draw(st.integers(0, 3))):
        ids = draw(st.lists(TOOL_IDS, min_size=1, max_size=3, unique=True))
        ids = [i for i in ids if all(i not in str(m) for m in messages)] or [
            f"toolu_{len(messages)}"
        ]
        text = draw(st.none() | BLOCK_TEXT)
        assistant = ([{"type": "text", "text": text}] if text else []) + [
            {
                "type": "tool_use",
                "id": i,
                "name": draw(st.sampled_from(["f", "g"])),
                "input": draw(ARGS),
            }
            for i in ids
        ]
        messages.append({"role": "assistant", "content": assistant})
        results = [
            {
                "type": "tool_result",
                "tool_use_id": i,
                "content": draw(BLOCK_TEXT),
                "is_error": draw(st.booleans()),
            }
            for i in ids
        ]
        follow = draw(st.none() | BLOCK_TEXT)
        messages.append(
            {
                "role": "user",
                "content": results + ([{"type": "text", "text": follow}] if follow else []),
            }
        )
    return messages


def tool_facts(conversation: internal.Conversation) -> tuple[list[Any], list[Any]]:
    calls = [
        (p.id, p.name, p.arguments)
        for m in conversation.messages
        for p in m.parts
        if isinstance(p, internal.ToolCall)
    ]
    results = [
        (p.call_id, "".join(c.text for c in p.content if isinstance(c, internal.Text)), p.is_error)
        for m in conversation.messages
        for p in m.parts
        if isinstance(p, internal.ToolResult)
    ]
    return calls, results


@given(anthropic_conversations())
@settings(max_examples=300)
def test_anthropic_to_openai_to_anthropic_keeps_every_tool_call_result_and_id(
    messages: list[dict[str, Any]],
) -> None:
    request = anthropic_wire.converter.structure(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": messages,
            "tools": [{"name": "f"}, {"name": "g"}],
        },
        anthropic_wire.MessagesRequest,
    )
    first = codec.request_to_internal(request)
    openai_body = openai_codec.request_from_internal(first, "gpt").body
    again = openai_inbound.request_to_internal(
        openai_wire.converter.structure(openai_body, openai_wire.ChatCompletionRequest)
    )
    calls, results = tool_facts(first)
    calls_again, results_again = tool_facts(again)
    assert calls_again == calls
    # is_error travels as an "Error: " prefix on the OpenAI side
    assert [(i, t) for i, t, _ in results_again] == [
        (i, f"Error: {t}" if e else t) for i, t, e in results
    ]
    back = anthropic_outbound.request_from_internal(again, "claude").body
    ids = [b["id"] for m in back["messages"] for b in m["content"] if b["type"] == "tool_use"]
    assert ids == [c[0] for c in calls]  # Anthropic-shaped ids survive unchanged
    answered = [
        b["tool_use_id"]
        for m in back["messages"]
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert answered == [r[0] for r in results]


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "5", "completion_tokens": None},
        {"prompt_tokens_details": "x", "completion_tokens_details": [1], "prompt_tokens": True},
        {"prompt_tokens": -3, "completion_tokens": 2.5},
        "not an object",
    ],
)
def test_usage_an_upstream_garbles_counts_as_zero_never_an_error(usage: Any) -> None:
    # usage is read from every forwarded answer for the ledger: it must never fail a good answer
    assert openai_codec.usage_to_internal(usage) == internal.Usage()
