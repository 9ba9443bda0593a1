"""The Anthropic codec: mapping rows, and two properties over generated conversations and messages."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxycast.errors import InvalidRequestError
from proxycast.formats import internal, sse
from proxycast.formats.anthropic import outbound as codec
from proxycast.formats.openai import inbound as openai_codec
from proxycast.formats.openai import wire
from proxycast.testing import AnthropicScript
from proxycast.testing.anthropic import (
    Text,
    Thinking,
    ToolUse,
    encode_events,
    message,
    stream_events,
)
from tests.support import TEXT, accumulate_openai, conversations

ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def to_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    request = wire.converter.structure({"model": "gpt", **body}, wire.ChatCompletionRequest)
    return dict(
        codec.request_from_internal(openai_codec.request_to_internal(request), "claude").body
    )


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        pytest.param("auto", None, {"type": "auto"}, id="auto"),
        pytest.param("none", None, {"type": "none"}, id="none"),
        pytest.param("none", False, {"type": "none"}, id="none-never-disables-parallel"),
        pytest.param("required", None, {"type": "any"}, id="required"),
        pytest.param(
            {"type": "function", "function": {"name": "f"}},
            None,
            {"type": "tool", "name": "f"},
            id="named",
        ),
        pytest.param(
            None, False, {"type": "auto", "disable_parallel_tool_use": True}, id="no-parallel"
        ),
        pytest.param(
            "required",
            False,
            {"type": "any", "disable_parallel_tool_use": True},
            id="required-no-parallel",
        ),
        pytest.param(None, None, None, id="absent"),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    sent = to_anthropic(body)
    assert sent.get("tool_choice") == expected
    assert sent["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_parameters() -> None:
    sent = to_anthropic(
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 100,
            "max_tokens": 50,
            "temperature": 0.7,
            "top_p": 0.9,
            "frequency_penalty": 1,
            "stop": "\n",
        }
    )
    assert sent["max_tokens"] == 100
    assert sent["temperature"] == 0.7
    assert "top_p" not in sent
    assert "stop_sequences" not in sent  # whitespace-only stops are dropped
    assert set(sent) == {"model", "messages", "max_tokens", "temperature"}
    only_top_p = to_anthropic({"messages": [{"role": "user", "content": "x"}], "top_p": 0.5})
    assert only_top_p["top_p"] == 0.5


def test_thinking_budget_raises_max_tokens_and_unforces_tools() -> None:
    sent = to_anthropic(
        {
            "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "high",
            "max_tokens": 100,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "required",
        }
    )
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["max_tokens"] == 4096 + 1024
    assert sent["tool_choice"] == {"type": "auto"}


def test_prefill_and_history_without_tools() -> None:
    sent = to_anthropic(
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "functions.Bash:0",
                            "type": "function",
                            "function": {"name": "Bash", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "functions.Bash:0", "content": "ok"},
                {"role": "assistant", "content": "The answer is  "},
            ]
        }
    )
    assert sent["messages"][-1]["content"] == [{"type": "text", "text": "The answer is"}]
    assert sent["tools"] == [{"name": "Bash", "input_schema": {"type": "object"}}]
    assert sent["tool_choice"] == {"type": "none"}
    call_id = sent["messages"][1]["content"][0]["id"]
    assert ID.match(call_id)
    assert sent["messages"][2]["content"][0]["tool_use_id"] == call_id


def test_unsupported_inputs_are_400s() -> None:
    with pytest.raises(InvalidRequestError, match="image type 'image/bmp'"):
        to_anthropic(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/bmp;base64,Qk0="},
                            }
                        ],
                    }
                ]
            }
        )
    with pytest.raises(InvalidRequestError, match="logprobs") as info:
        to_anthropic({"messages": [{"role": "user", "content": "x"}], "logprobs": True})
    assert info.value.param == "logprobs"
    with pytest.raises(InvalidRequestError, match="response_format"):
        to_anthropic(
            {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_object"},
                "reasoning_effort": "low",
            }
        )


def test_response_mapping() -> None:
    reply = codec.response_to_internal(
        {
            "id": "msg_1",
            "model": "claude",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "a"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 2},
        }
    )
    assert reply.parts == (
        internal.Reasoning(text="hm", signature="s"),
        internal.Text("a"),
        internal.ToolCall(id="toolu_1", name="f", arguments={"x": 1}),
    )
    assert reply.usage == internal.Usage(input=3, output=4, cache_read=2)
    answer = openai_codec.response_from_internal(reply, "gpt-4o", 0)
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["choices"][0]["message"]["reasoning_content"] == "hm"
    assert answer["usage"]["total_tokens"] == 9


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "length"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        ("tool_use", "stop"),  # tool_use without a tool call: the finish agrees with the content
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    reply = codec.response_to_internal(
        {"content": [{"type": "text", "text": "x"}], "stop_reason": reason}
    )
    assert (
        openai_codec.response_from_internal(reply, "m", 0)["choices"][0]["finish_reason"] == finish
    )


def test_tool_ids_clean_deterministically_and_stay_distinct() -> None:
    ids = ["functions.Bash:0", "functions.Bash_0", "functions_Bash:0", "call_ok-1", "a b", "a.b"]
    cleaned = [codec.clean_tool_id(i) for i in ids]
    assert all(ID.match(c) for c in cleaned)
    assert len(set(cleaned)) == len(ids)
    assert cleaned == [codec.clean_tool_id(i) for i in ids]
    assert codec.clean_tool_id("call_ok-1") == "call_ok-1"


# Property (a): any OpenAI conversation converts to a request that obeys Anthropic's rules.


def all_blocks(request: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(request.get("system", []))
    for m in request["messages"]:
        for block in m["content"]:
            out.append(block)
            out.extend(block.get("content", []) if block["type"] == "tool_result" else [])
    return out


@given(conversations(), st.booleans())
@settings(max_examples=300)
def test_any_conversation_converts_to_a_valid_anthropic_request(
    messages: list[dict[str, Any]], with_tools: bool
) -> None:
    body: dict[str, Any] = {"messages": messages}
    if with_tools:
        body["tools"] = [{"type": "function", "function": {"name": "f"}}]
    request = to_anthropic(body)
    assert request["max_tokens"] > 0
    roles = [m["role"] for m in request["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles)), roles
    for block in all_blocks(request):
        if block["type"] == "text":
            assert block["text"], "an empty text block"
    for i, m in enumerate(request["messages"]):
        assert m["content"], "an empty message"
        uses = [b["id"] for b in m["content"] if b["type"] == "tool_use"]
        assert all(ID.match(u) for u in uses)
        if uses:
            following = request["messages"][i + 1]
            results = [b["tool_use_id"] for b in following["content"] if b["type"] == "tool_result"]
            kinds = [b["type"] for b in following["content"]]
            assert results == uses
            assert kinds[: len(results)] == ["tool_result"] * len(results)  # results first
    original = {c["id"] for m in messages for c in m.get("tool_calls", [])}
    sent = {b["id"] for b in all_blocks(request) if b["type"] == "tool_use"}
    assert len(sent) == len(original)
    if any(b["type"] in ("tool_use", "tool_result") for b in all_blocks(request)):
        assert request["tools"]


# Property (b): streamed (split anywhere) and accumulated == the non-streaming conversion.

BLOCKS = st.lists(
    st.one_of(
        st.builds(Text, TEXT),
        st.builds(Thinking, TEXT, st.text("abcdef0123", min_size=1, max_size=8)),
        st.builds(
            ToolUse,
            st.sampled_from(["f", "get_weather"]),
            st.dictionaries(st.text(max_size=4), st.integers() | TEXT | st.booleans(), max_size=3),
        ),
    ),
    max_size=5,
)


@given(
    BLOCKS,
    st.sampled_from([None, "end_turn", "max_tokens", "refusal", "stop_sequence"]),
    st.integers(0, 500),
    st.integers(0, 50),
    st.integers(1, 4),
    st.booleans(),
    st.data(),
)
@settings(max_examples=300)
def test_streamed_equals_non_streamed(
    blocks: list[Any],
    stop_reason: str | None,
    input_tokens: int,
    cache_read: int,
    pieces: int,
    usage_in_delta: bool,
    data: st.DataObject,
) -> None:
    script = AnthropicScript(
        blocks=tuple(blocks),
        stop_reason=stop_reason,
        input_tokens=input_tokens,
        cache_read_input_tokens=cache_read,
    )
    full = message(script, "claude", "msg_x")
    raw = encode_events(stream_events(full, pieces, usage_in_delta))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))

    decoder = codec.StreamDecoder()
    encoder = openai_codec.StreamEncoder("gpt-4o", 0, include_usage=True)
    events: list[internal.StreamEvent] = []
    out = b""
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        for event in decoder.feed(raw[start:end]):
            events.append(event)
            out += encoder.encode(event)
    assert encoder.finished
    assert out.endswith(b"data: [DONE]\n\n")

    reply = codec.response_to_internal(full)
    assert internal.accumulate(events) == reply

    frames = [json.loads(f[6:]) for f in out.decode().split("\n\n") if f.startswith("data: {")]
    streamed = accumulate_openai(frames)
    answer = openai_codec.response_from_internal(reply, "gpt-4o", 0)
    message_ = answer["choices"][0]["message"]
    assert streamed == {
        "content": message_["content"],
        "reasoning": message_.get("reasoning_content"),
        "tool_calls": [
            {
                "id": c["id"],
                "name": c["function"]["name"],
                "arguments": json.loads(c["function"]["arguments"]),
            }
            for c in message_.get("tool_calls", [])
        ],
        "finish": answer["choices"][0]["finish_reason"],
        "usage": answer["usage"],
    }


def test_documents_and_tool_result_errors() -> None:
    conversation = internal.Conversation(
        messages=(
            internal.Message(
                "user",
                (
                    internal.Document(media_type="application/pdf", data="JVBE"),
                    internal.ToolResult(call_id="c", content=(), is_error=True),
                ),
            ),
        ),
    )
    sent = codec.request_from_internal(conversation, "claude").body
    assert sent["messages"][0]["content"] == [
        {"type": "tool_result", "tool_use_id": "c", "is_error": True},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
    ]


def test_decoder_ignores_pings_and_unknown_events_and_reports_errors() -> None:
    decoder = codec.StreamDecoder()
    assert decoder.event(sse.Event('{"type": "ping"}', "ping")) == []
    assert decoder.event(sse.Event('{"type": "brand_new_event", "x": 1}', "brand_new_event")) == []
    assert decoder.event(sse.Event("not json")) == []
    (failure,) = decoder.event(
        sse.Event(
            '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
            "error",
        )
    )
    assert isinstance(failure, internal.Failure)
    assert getattr(failure.error, "status", None) == 503
    assert decoder.finished


def test_a_stream_that_ends_before_message_stop_is_an_error_frame() -> None:
    from proxycast.core.relay import Converting

    translator = Converting(
        codec.StreamDecoder(), openai_codec.StreamEncoder("m", 0, include_usage=False), "anthropic"
    )
    full = message(AnthropicScript(), "claude", "msg_1")
    events = stream_events(full)
    out = translator.feed(encode_events(events[:-2]))  # no message_delta, no message_stop
    assert b'"content": "Hello' in out
    assert not translator.finished
    end = translator.end()
    assert json.loads(end.decode().removeprefix("data: "))["error"]["message"].endswith(
        "ended the stream before the completion was finished."
    )
    assert b"[DONE]" not in out + end
