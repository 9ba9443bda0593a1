"""The Bedrock Converse codec: mapping rows, the event-stream framing, and two properties: any
conversation converts to a request Converse accepts, and a stream cut anywhere accumulates to the
non-streamed reply."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxycast.errors import InvalidRequestError, UpstreamError
from proxycast.formats import internal
from proxycast.formats.bedrock import converse, eventstream, invoke
from proxycast.formats.openai import inbound as openai_codec
from proxycast.formats.openai import wire
from proxycast.testing import BedrockScript
from proxycast.testing import bedrock as fb
from tests.support import TEXT, conversations

ID = re.compile(r"^[a-zA-Z0-9_.:-]+$")
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"


def to_converse(body: dict[str, Any], model: str = MODEL) -> dict[str, Any]:
    request = wire.converter.structure({"model": "gpt", **body}, wire.ChatCompletionRequest)
    conversation = openai_codec.request_to_internal(request)
    return dict(converse.request_from_internal(conversation, model).body)


def test_parameters_and_cache_points() -> None:
    conversation = internal.Conversation(
        system=(internal.Text("Rules.", cache_control={"type": "ephemeral", "ttl": "1h"}),),
        messages=(
            internal.Message(
                "user",
                (
                    internal.Image(media_type="image/png", data="aGk="),
                    internal.Document(media_type="application/pdf", data="aGk=", filename="a.pdf"),
                    internal.Text("Read these.", cache_control={"type": "ephemeral"}),
                ),
            ),
        ),
        tools=(
            internal.Tool(name="f", description="Does f.", cache_control={"type": "ephemeral"}),
        ),
        tool_choice=internal.NamedTool("f"),
        params=internal.Params(max_tokens=99, temperature=1.5, top_p=0.9, stop=("X", " ")),
    )
    body = converse.request_from_internal(conversation, "amazon.nova-pro-v1:0").body
    assert body == {
        "system": [{"text": "Rules."}, {"cachePoint": {"type": "default", "ttl": "1h"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"image": {"format": "png", "source": {"bytes": "aGk="}}},
                    {"document": {"format": "pdf", "name": "a-pdf", "source": {"bytes": "aGk="}}},
                    {"text": "Read these."},
                    {"cachePoint": {"type": "default"}},
                ],
            }
        ],
        "inferenceConfig": {
            "maxTokens": 99,
            "temperature": 1.5,
            "topP": 0.9,
            "stopSequences": ["X"],
        },
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "f",
                        "description": "Does f.",
                        "inputSchema": {"json": {"type": "object", "properties": {}}},
                    }
                },
                {"cachePoint": {"type": "default"}},
            ],
            "toolChoice": {"tool": {"name": "f"}},
        },
    }


def test_thinking_is_claudes_alone() -> None:
    conversation = internal.Conversation(
        messages=(internal.Message("user", (internal.Text("Hi"),)),),
        params=internal.Params(reasoning_effort="high", temperature=0.3, max_tokens=100),
    )
    claude = converse.request_from_internal(conversation, "us.anthropic.claude-opus-4-1-v1:0").body
    assert claude["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 4096}
    }
    assert claude["inferenceConfig"] == {"maxTokens": 4096 + 1024}  # no temperature with thinking
    nova = converse.request_from_internal(conversation, "amazon.nova-pro-v1:0").body
    assert "additionalModelRequestFields" not in nova
    assert nova["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.3}


def test_what_converse_cannot_carry_is_a_400() -> None:
    url_image = internal.Image(url="https://example.com/cat.png")
    with pytest.raises(InvalidRequestError, match="s3:// locations"):
        converse.request_from_internal(
            internal.Conversation(messages=(internal.Message("user", (url_image,)),)), MODEL
        )
    bmp = internal.Image(media_type="image/bmp", data="aGk=")
    with pytest.raises(InvalidRequestError, match="image/bmp"):
        converse.request_from_internal(
            internal.Conversation(messages=(internal.Message("user", (bmp,)),)), MODEL
        )
    with pytest.raises(InvalidRequestError, match="n > 1"):
        converse.request_from_internal(internal.Conversation(params=internal.Params(n=2)), MODEL)


def test_an_empty_tool_result_is_never_a_blank_text() -> None:
    call = internal.ToolCall(id="c1", name="f", arguments={})
    result = internal.ToolResult(call_id="c1", content=(internal.Text("  "),))
    conversation = internal.Conversation(
        messages=(
            internal.Message("user", (internal.Text("Go"),)),
            internal.Message("assistant", (call,)),
            internal.Message("user", (result,)),
        )
    )
    body = converse.request_from_internal(conversation, MODEL).body
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "c1", "content": [{"text": "(no output)"}]}}
    ]
    assert fb.converse_problem(dict(body), set()) is None


def test_document_names_are_what_bedrock_allows() -> None:
    assert converse.document_name("Q3 report (final).v2.pdf", 1) == "Q3 report (final)-v2-pdf"
    assert converse.document_name("  ", 2) == "document-2"
    assert converse.document_name("a\t\tb", 3) == "a b"


@pytest.mark.parametrize(
    ("reason", "stop"),
    [
        ("end_turn", "end"),
        ("tool_use", "tool_use"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop_sequence"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons(reason: str, stop: str) -> None:
    assert converse.stop_to_internal(reason) == stop


def test_usage_with_cache() -> None:
    usage = {
        "inputTokens": 10,
        "outputTokens": 5,
        "totalTokens": 65,
        "cacheReadInputTokens": 30,
        "cacheWriteInputTokens": 20,
    }
    assert converse.usage_to_internal(usage) == internal.Usage(
        input=10, output=5, cache_read=30, cache_write=20
    )


def test_invoke_body() -> None:
    conversation = internal.Conversation(
        messages=(internal.Message("user", (internal.Text("Hi"),)),),
        params=internal.Params(user="someone@example.com", service_tier="auto"),
        stream=True,
    )
    request = invoke.request_from_internal(conversation, "us.anthropic.claude-x-v1:0")
    assert request.path == "/model/us.anthropic.claude-x-v1%3A0/invoke-with-response-stream"
    assert request.body["anthropic_version"] == "bedrock-2023-05-31"
    assert not {"model", "stream", "metadata", "service_tier"} & set(request.body)


# The framing


def test_frames_round_trip_across_any_cut() -> None:
    frames = b"".join(
        eventstream.encode_frame({":event-type": f"e{i}", ":message-type": "event"}, b"x" * i)
        for i in range(5)
    )
    for size in (1, 3, 7, 100):
        decoder = eventstream.FrameDecoder()
        got = [
            f for at in range(0, len(frames), size) for f in decoder.feed(frames[at : at + size])
        ]
        assert [(f.event_type, f.payload) for f in got] == [(f"e{i}", b"x" * i) for i in range(5)]
        assert decoder.pending == 0


def test_a_corrupt_frame_is_a_failure_never_a_crash() -> None:
    request = converse.request_from_internal(internal.Conversation(stream=True), MODEL)
    good = fb.event_frame("messageStart", {"role": "assistant"})
    bad = fb.event_frame("contentBlockDelta", {"delta": {"text": "x"}}, corrupt=True)
    decoder = converse.StreamDecoder(request)
    events = decoder.feed(good + bad + good)
    assert isinstance(events[0], internal.Start)
    assert isinstance(events[1], internal.Failure)
    assert "CRC" in str(events[1].error)
    assert len(events) == 2
    assert decoder.feed(good) == []  # over
    garbage = converse.StreamDecoder(request).feed(b"\x00\x00\x00\x05" + b"\x00" * 20)
    assert isinstance(garbage[0], internal.Failure)


def test_an_exception_frame_is_the_error_its_status_says() -> None:
    request = converse.request_from_internal(internal.Conversation(stream=True), MODEL)
    (event,) = converse.StreamDecoder(request).feed(
        fb.exception_frame("throttlingException", "Too many tokens.")
    )
    assert isinstance(event, internal.Failure)
    assert isinstance(event.error, UpstreamError)
    assert (event.error.status, event.error.message) == (429, "Too many tokens.")
    assert event.error.native == ("bedrock", "ThrottlingException")


def test_frame_sizes_hold_the_limit() -> None:
    small = eventstream.encode_frame({":event-type": "a"}, b"x" * 10)
    big = eventstream.encode_frame({":event-type": "a"}, b"x" * 200)
    sizes = eventstream.FrameSizes(100)
    assert all(sizes.fits(small[i : i + 3]) for i in range(0, len(small), 3))
    assert sizes.fits(big[:3])
    assert not sizes.fits(big[3:5])


# Property (a): any conversation converts to a request Converse accepts


@given(conversations(), st.booleans())
@settings(max_examples=300)
def test_any_conversation_converts_to_a_valid_converse_request(
    messages: list[dict[str, Any]], with_tools: bool
) -> None:
    body: dict[str, Any] = {"messages": messages}
    if with_tools:
        body["tools"] = [{"type": "function", "function": {"name": "f"}}]
    request = to_converse(body)
    sent = request["messages"]
    roles = [m["role"] for m in sent]
    assert all(a != b for a, b in itertools.pairwise(roles)), roles
    problem = fb.converse_problem(request, set())
    if sent and sent[0]["role"] == "user":
        assert problem is None, problem
    for i, message in enumerate(sent):
        blocks = [b for b in message["content"] if "cachePoint" not in b]
        assert blocks, "an empty message"
        assert all(len(b) == 1 for b in message["content"])
        assert all(b["text"].strip() for b in blocks if "text" in b), "a blank text block"
        uses = [b["toolUse"]["toolUseId"] for b in blocks if "toolUse" in b]
        assert all(ID.match(u) for u in uses)
        if uses:
            following = sent[i + 1]["content"]
            results = [b["toolResult"]["toolUseId"] for b in following if "toolResult" in b]
            assert results == uses
            assert all("toolResult" in b for b in following[: len(results)])  # results first


# Property (b): streamed (cut anywhere) and accumulated == the non-streamed reply

BLOCKS = st.lists(
    st.one_of(
        st.builds(fb.Text, TEXT.filter(bool)),
        st.builds(fb.Thinking, TEXT, st.text("abcdef0123", min_size=1, max_size=8)),
        st.builds(fb.RedactedThinking, st.text("xyz", min_size=1, max_size=5)),
        st.builds(
            fb.ToolUse,
            st.sampled_from(["f", "get_weather"]),
            st.dictionaries(st.text(max_size=4), st.integers() | TEXT | st.booleans(), max_size=3),
        ),
    ),
    max_size=5,
).filter(
    lambda blocks: all(
        not (isinstance(a, fb.Text) and isinstance(b, fb.Text))
        for a, b in itertools.pairwise(blocks)
    )
)


@given(
    BLOCKS,
    st.sampled_from([None, "end_turn", "max_tokens", "guardrail_intervened", "stop_sequence"]),
    st.integers(0, 500),
    st.integers(0, 50),
    st.integers(1, 4),
    st.data(),
)
@settings(max_examples=300)
def test_streamed_equals_non_streamed(
    blocks: list[Any],
    stop_reason: str | None,
    input_tokens: int,
    cache_read: int,
    pieces: int,
    data: st.DataObject,
) -> None:
    script = BedrockScript(
        blocks=tuple(blocks),
        stop_reason=stop_reason,
        input_tokens=input_tokens,
        cache_read_input_tokens=cache_read,
        pieces=pieces,
    )
    raw = b"".join(fb.event_frame(name, payload) for name, payload in fb.converse_events(script))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))
    request = converse.request_from_internal(internal.Conversation(stream=True), MODEL)
    decoder = converse.StreamDecoder(request)
    events: list[internal.StreamEvent] = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        events += decoder.feed(raw[start:end])
    events += decoder.end()
    assert decoder.finished
    streamed = internal.accumulate(events)
    reply = converse.response_to_internal(fb.converse_reply(script), request)
    assert attrs.evolve(streamed, id=reply.id) == reply
    assert reply.model == MODEL
    assert json.dumps([attrs.asdict(p) for p in reply.parts])  # plain data all the way
