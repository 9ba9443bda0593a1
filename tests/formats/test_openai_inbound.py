"""The OpenAI codec: chat requests to the internal model, internal replies to chat completions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxycast import hub
from proxycast.errors import InvalidRequestError
from proxycast.formats.openai import inbound as codec
from proxycast.formats.openai import wire


def convert(body: dict[str, Any]) -> hub.Conversation:
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
    assert conversation.system == (hub.Text("Be brief."), hub.Text("No emojis."))
    assert conversation.messages == (hub.Message("user", (hub.Text("Hi"),)),)


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
    assert conversation.messages == (hub.Message("user", (hub.Text("a"), hub.Text("b"))),)


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
        hub.Image(media_type="image/png", data="iVBO"),
        hub.Image(url="https://x.test/a.jpg"),
        hub.Document(media_type="application/pdf", data="JVBE", filename="a.pdf"),
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
        hub.Reasoning(text="They want weather."),
        hub.Text("Let me look."),
        hub.ToolCall(id="c1", name="w", arguments={"c": "P"}),
        hub.ToolCall(id="c2", name="t", arguments={}),
    )
    assert results.parts == (
        hub.ToolResult(call_id="c1", name="w", content=(hub.Text("sunny"),)),
        hub.ToolResult(call_id="c2", name="t", content=(hub.Text("12:00"),)),
        hub.Text("thanks"),
    )
    assert conversation.tools == (hub.Tool(name="w"),)
    assert conversation.tools[0].parameters == {"type": "object", "properties": {}}
    assert conversation.tool_choice == hub.NamedTool("w")
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
        st.builds(hub.Text, TEXT.filter(bool)),
        st.builds(hub.Reasoning, text=TEXT.filter(bool)),
        st.builds(
            hub.ToolCall,
            id=st.text("abc123_", min_size=1, max_size=8),
            name=st.sampled_from(["f", "get_weather"]),
            arguments=st.dictionaries(st.text(max_size=5), st.integers() | TEXT, max_size=3),
        ),
    ),
    max_size=6,
)
USAGE = st.builds(
    hub.Usage,
    input=st.integers(0, 10**6),
    output=st.integers(0, 10**6),
    cache_read=st.integers(0, 10**6),
    cache_write=st.integers(0, 10**6),
)
STOPS = st.sampled_from(["end", "length", "tool_use", "content_filter", "stop_sequence"])


@given(PARTS, STOPS, USAGE)
def test_completion_arithmetic_and_finish_reason(
    parts: list[hub.Part], stop: hub.Stop, usage: hub.Usage
) -> None:
    reply = hub.Reply(id="msg_1", model="up", parts=tuple(parts), stop=stop, usage=usage)
    answer = codec.response_from_internal(reply, "asked", 123)
    choice = answer["choices"][0]
    calls = [p for p in parts if isinstance(p, hub.ToolCall)]
    assert answer["model"] == "asked"
    assert (choice["finish_reason"] == "tool_calls") == bool(calls)
    assert [
        json.loads(c["function"]["arguments"]) for c in choice["message"].get("tool_calls", [])
    ] == [c.arguments for c in calls]
    text = "".join(p.text for p in parts if isinstance(p, hub.Text))
    assert choice["message"]["content"] == (text or None)
    u = answer["usage"]
    assert u["prompt_tokens"] == usage.input + usage.cache_read + usage.cache_write
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["prompt_tokens_details"]["cached_tokens"] == usage.cache_read
