"""The Gemini codec: mapping rows, and properties over generated conversations and responses."""

from __future__ import annotations

import itertools
import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxycast.core.relay import Converting
from proxycast.errors import InvalidRequestError
from proxycast.formats import internal
from proxycast.formats.gemini import outbound as codec
from proxycast.formats.openai import inbound as openai_codec
from proxycast.formats.openai import wire
from proxycast.testing import GeminiScript
from proxycast.testing.gemini import Call, Text, Thought, response, stream_chunks, validate
from tests.support import accumulate_openai, conversations


def to_gemini(body: dict[str, Any], model: str = "gemini-2.5-flash") -> dict[str, Any]:
    request = wire.converter.structure({"model": "m", **body}, wire.ChatCompletionRequest)
    return dict(codec.request_from_internal(openai_codec.request_to_internal(request), model).body)


USER = [{"role": "user", "content": "x"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    }
]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "f"}},
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    sent = to_gemini({"messages": USER, "tools": TOOLS, "tool_choice": choice})
    assert sent["toolConfig"] == {"functionCallingConfig": expected}
    assert sent["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "OBJECT",
        "properties": {"a": {"type": "STRING"}},
    }


def test_generation_config() -> None:
    sent = to_gemini(
        {
            "messages": USER,
            "max_completion_tokens": 9,
            "temperature": 1.5,
            "top_p": 0.5,
            "stop": ["a", "b"],
            "n": 2,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "seed": 7,
            "response_format": {"type": "json_object"},
            "parallel_tool_calls": False,
            "user": "u",
        }
    )
    assert sent["generationConfig"] == {
        "maxOutputTokens": 9,
        "temperature": 1.5,
        "topP": 0.5,
        "candidateCount": 2,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "seed": 7,
        "stopSequences": ["a", "b"],
        "responseMimeType": "application/json",
    }


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("gemini-2.5-pro", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gemini-2.5-flash", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "low", "includeThoughts": True}),
        ("gemini-3-pro-preview", "medium", {"thinkingLevel": "high", "includeThoughts": True}),
    ],
)
def test_reasoning_effort(model: str, effort: str, expected: dict[str, Any]) -> None:
    sent = to_gemini({"messages": USER, "reasoning_effort": effort}, model)
    assert sent["generationConfig"]["thinkingConfig"] == expected


def test_unanswered_calls_get_responses_and_results_need_their_call() -> None:
    sent = to_gemini(
        {
            "messages": [
                *USER,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        },
                        {
                            "id": "2",
                            "type": "function",
                            "function": {"name": "g", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "1", "content": "[1, 2]"},
            ]
        }
    )
    assert sent["contents"][2]["parts"] == [
        {"functionResponse": {"name": "f", "response": {"content": "[1, 2]"}}},
        {"functionResponse": {"name": "g", "response": {"error": "no result"}}},
    ]
    with pytest.raises(InvalidRequestError, match="answers no tool call"):
        to_gemini({"messages": [*USER, {"role": "tool", "tool_call_id": "9", "content": "x"}]})


def test_response_mapping_and_signatures_round_trip() -> None:
    (reply,) = codec.response_to_internal(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "plan", "thought": True},
                            {"text": "Hi "},
                            {"text": "there"},
                            {
                                "functionCall": {"name": "f", "args": {"a": 1}},
                                "thoughtSignature": "S1",
                            },
                        ],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 10,
                "toolUsePromptTokenCount": 2,
                "cachedContentTokenCount": 4,
                "candidatesTokenCount": 5,
                "thoughtsTokenCount": 3,
                "totalTokenCount": 20,
            },
        }
    )
    reasoning, text, call = reply.parts
    assert reasoning == internal.Reasoning(text="plan")
    assert text == internal.Text("Hi there")
    assert isinstance(call, internal.ToolCall)
    assert call.id.startswith("call_")
    assert call.signature == "S1"
    assert reply.stop == "tool_use"
    answer = openai_codec.response_from_internal(reply, "m", 0)
    assert answer["usage"]["prompt_tokens"] == 12
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["usage"]["total_tokens"] == 20
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
    assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    back = codec.request_from_internal(
        internal.Conversation(messages=(internal.Message("assistant", (call,)),)), "m"
    ).body
    assert back["contents"][0]["parts"] == [
        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "S1"}
    ]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        *[("STOP", "stop"), ("MAX_TOKENS", "length"), ("SOMETHING_NEW", "stop")],
        *[(r, "content_filter") for r in ("SAFETY", "RECITATION", "PROHIBITED_CONTENT", "SPII")],
        *[(r, "content_filter") for r in ("OTHER", "BLOCKLIST", "LANGUAGE")],
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    (reply,) = codec.response_to_internal(
        {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    )
    assert (
        openai_codec.response_from_internal(reply, "m", 0)["choices"][0]["finish_reason"] == finish
    )


def test_gemini_error_bodies() -> None:
    error = codec.stream_error(
        {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    )
    assert (error.status, error.message) == (429, "quota")
    assert codec.stream_error({"error": {"message": "x", "status": "UNAVAILABLE"}}).status == 503


@given(conversations(), st.booleans())
@settings(max_examples=300)
def test_any_conversation_converts_to_a_valid_gemini_request(
    messages: list[dict[str, Any]], with_tools: bool
) -> None:
    body: dict[str, Any] = {"messages": messages}
    if with_tools:
        body["tools"] = TOOLS
    request = to_gemini(body)
    assert validate(request) is None
    roles = [c["role"] for c in request["contents"]]
    assert all(a != b for a, b in itertools.pairwise(roles))
    for content in request["contents"]:
        assert all(p != {"text": ""} for p in content["parts"])


PARTS = st.lists(
    st.one_of(
        st.builds(Text, st.text(min_size=1, max_size=15), st.none() | st.just("dGV4dA")),
        st.builds(Thought, st.text(min_size=1, max_size=15)),
        st.builds(
            Call,
            st.sampled_from(["f", "g"]),
            st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3),
            st.none() | st.text("abc", min_size=1, max_size=5),
        ),
    ),
    min_size=1,
    max_size=5,
).filter(lambda parts: _one_signature_a_text(parts))


def _one_signature_a_text(parts: list[Any]) -> bool:
    """At most one signed part in a run of text parts: Gemini 3 streams a text part's signature
    after its text, so two signed parts in a row could not be told apart from one."""
    signed = 0
    for part in parts:
        signed = signed + bool(part.thought_signature) if isinstance(part, Text) else 0
        if signed > 1:
            return False
    return True


def without_ids(reply: internal.Reply) -> internal.Reply:
    parts = tuple(
        attrs.evolve(p, id="") if isinstance(p, internal.ToolCall) else p for p in reply.parts
    )
    return attrs.evolve(reply, id="", parts=parts)


@given(
    PARTS,
    st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY"]),
    st.integers(1, 4),
    st.none() | st.just("c2ln"),
    st.data(),
)
@settings(max_examples=300)
def test_streamed_equals_non_streamed(
    parts: list[Any], reason: str, pieces: int, final_signature: str | None, data: st.DataObject
) -> None:
    script = GeminiScript(
        parts=tuple(parts), finish_reason=reason, pieces=pieces, final_signature=final_signature
    )
    raw = b"".join(
        b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in stream_chunks(script, "gemini")
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))

    decoder = codec.StreamDecoder()
    events: list[internal.StreamEvent] = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        events += decoder.feed(raw[start:end])
    events += decoder.end()
    (reply,) = codec.response_to_internal(response(script, "gemini"))
    assert without_ids(internal.accumulate(events)) == without_ids(reply)

    translator = Converting(
        codec.StreamDecoder(), openai_codec.StreamEncoder("m", 0, True), "gemini"
    )
    out = translator.feed(raw) + translator.end()
    frames = [json.loads(f[6:]) for f in out.decode().split("\n\n") if f.startswith("data: {")]
    streamed = accumulate_openai(frames)
    answer = openai_codec.response_from_internal(reply, "m", 0)
    choice = answer["choices"][0]
    assert streamed["usage"] == answer["usage"]
    assert streamed["content"] == choice["message"]["content"]
    assert streamed["reasoning"] == choice["message"].get("reasoning_content")
    assert streamed["finish"] == choice["finish_reason"]
    assert [(c["name"], c["arguments"]) for c in streamed["tool_calls"]] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in choice["message"].get("tool_calls", [])
    ]
    assert out.endswith(b"data: [DONE]\n\n")
