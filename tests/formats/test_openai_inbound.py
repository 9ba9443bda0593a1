"""The OpenAI codec: chat requests to the internal model, internal replies to chat completions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxycast.errors import InvalidRequestError
from proxycast.formats import internal
from proxycast.formats.openai import inbound as codec
from proxycast.formats.openai import wire


def convert(body: dict[str, Any]) -> internal.Conversation:
    request = wire.converter.structure({"model": "m", **body}, wire.ChatCompletionRequest)
    return codec.request_to_internal(request)


def test_system_and_developer_messages_become_the_system_prompt() -> None:
    conversation = convert(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
            ]
        }
    )
    assert conversation.system == (internal.Text("Be brief."), internal.Text("No emojis."))
    assert conversation.messages == (internal.Message("user", (internal.Text("Hi"),)),)


def test_consecutive_turns_merge_and_empty_text_is_dropped() -> None:
    conversation = convert(
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": ""},
                {"role": "user", "content": [{"type": "text", "text": "b"}]},
                {"role": "assistant", "content": ""},
            ]
        }
    )
    assert conversation.messages == (
        internal.Message("user", (internal.Text("a"), internal.Text("b"))),
    )


def test_images_and_documents() -> None:
    conversation = convert(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                        {
                            "type": "file",
                            "file": {
                                "file_data": "data:application/pdf;base64,JVBE",
                                "filename": "a.pdf",
                            },
                        },
                    ],
                }
            ]
        }
    )
    assert conversation.messages[0].parts == (
        internal.Image(media_type="image/png", data="iVBO"),
        internal.Image(url="https://x.test/a.jpg"),
        internal.Document(media_type="application/pdf", data="JVBE", filename="a.pdf"),
    )


def test_tool_turns() -> None:
    conversation = convert(
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": "Let me look.",
                    "reasoning_content": "They want weather.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"c": "P"}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "t", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "c2",
                    "content": [{"type": "text", "text": "12:00"}],
                },
                {"role": "user", "content": "thanks"},
            ],
            "tools": [{"type": "function", "function": {"name": "w"}}],
            "tool_choice": {"type": "function", "function": {"name": "w"}},
            "parallel_tool_calls": False,
        }
    )
    _user, assistant, results = conversation.messages
    assert assistant.parts == (
        internal.Reasoning(text="They want weather."),
        internal.Text("Let me look."),
        internal.ToolCall(id="c1", name="w", arguments={"c": "P"}),
        internal.ToolCall(id="c2", name="t", arguments={}),
    )
    assert results.parts == (
        internal.ToolResult(call_id="c1", name="w", content=(internal.Text("sunny"),)),
        internal.ToolResult(call_id="c2", name="t", content=(internal.Text("12:00"),)),
        internal.Text("thanks"),
    )
    assert conversation.tools == (internal.Tool(name="w"),)
    assert conversation.tools[0].parameters == {"type": "object", "properties": {}}
    assert conversation.tool_choice == internal.NamedTool("w")
    assert conversation.parallel_tool_calls is False


def test_parameters() -> None:
    conversation = convert(
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stop": "END",
            "temperature": 0.5,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u",
            "reasoning_effort": "high",
        }
    )
    assert conversation.params.max_tokens == 20
    assert conversation.params.stop == ("END",)
    assert conversation.params.temperature == 0.5
    assert (conversation.params.user, conversation.params.reasoning_effort) == ("u", "high")
    assert conversation.stream
    assert conversation.include_usage


@pytest.mark.parametrize(
    ("message", "param"),
    [
        pytest.param(
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                ],
            },
            "messages[0].tool_calls[0].function.arguments",
            id="bad-arguments",
        ),
        pytest.param(
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}}
                ],
            },
            "messages[0].content[0]",
            id="audio",
        ),
        pytest.param(
            {"role": "function", "content": "x", "name": "f"}, "messages[0].role", id="role"
        ),
        pytest.param(
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]},
            "messages[0].content[0].image_url.url",
            id="image-url",
        ),
    ],
)
def test_what_cannot_convert_is_a_400_naming_the_field(message: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        convert({"messages": [message]})
    assert info.value.param == param
    assert info.value.status == 400


TEXT = st.text(max_size=20)
PARTS = st.lists(
    st.one_of(
        st.builds(internal.Text, TEXT.filter(bool)),
        st.builds(internal.Reasoning, text=TEXT.filter(bool)),
        st.builds(
            internal.ToolCall,
            id=st.text("abc123_", min_size=1, max_size=8),
            name=st.sampled_from(["f", "get_weather"]),
            arguments=st.dictionaries(st.text(max_size=5), st.integers() | TEXT, max_size=3),
        ),
    ),
    max_size=6,
)
USAGE = st.builds(
    internal.Usage,
    input=st.integers(0, 10**6),
    output=st.integers(0, 10**6),
    cache_read=st.integers(0, 10**6),
    cache_write=st.integers(0, 10**6),
)
STOPS = st.sampled_from(["end", "length", "tool_use", "content_filter", "stop_sequence"])


@given(PARTS, STOPS, USAGE)
def test_completion_arithmetic_and_finish_reason(
    parts: list[internal.Part], stop: internal.Stop, usage: internal.Usage
) -> None:
    reply = internal.Reply(id="msg_1", model="up", parts=tuple(parts), stop=stop, usage=usage)
    answer = codec.response_from_internal(reply, "asked", 123)
    choice = answer["choices"][0]
    calls = [p for p in parts if isinstance(p, internal.ToolCall)]
    assert answer["model"] == "asked"
    assert (choice["finish_reason"] == "tool_calls") == bool(calls)
    assert [
        json.loads(c["function"]["arguments"]) for c in choice["message"].get("tool_calls", [])
    ] == [c.arguments for c in calls]
    text = "".join(p.text for p in parts if isinstance(p, internal.Text))
    assert choice["message"]["content"] == (text or None)
    u = answer["usage"]
    assert u["prompt_tokens"] == usage.input + usage.cache_read + usage.cache_write
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["prompt_tokens_details"]["cached_tokens"] == usage.cache_read
