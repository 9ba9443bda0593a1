"""Gemini API clients: properties of the conversions both ways (streamed answers accumulate to the
non-streamed one; what a reply carries in ``thoughtSignature``s and function call ids comes back
whole on the next turn; field names in either case)."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxycast.formats import internal
from proxycast.formats.gemini import inbound as codec

TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
ARGS = st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), st.integers() | TEXT, max_size=3)
REASONING = st.builds(
    internal.Reasoning,
    text=TEXT,
    signature=st.none() | st.text("abcdefXYZ0123456789+/=", min_size=1, max_size=16),
    source=st.none() | st.just("anthropic-like"),
)
CALLS = st.builds(
    internal.ToolCall,
    id=st.text("abcdef0123456789", min_size=4, max_size=8).map(lambda s: "toolu_" + s),
    name=st.sampled_from(["get_weather", "read_file"]),
    arguments=ARGS,
)
SIGNED_TEXT = st.builds(
    internal.Text,
    TEXT,
    signature=st.text("abcdefXYZ0123456789+/", min_size=4, max_size=12),
    source=st.just("gemini"),
)
"""Gemini 3's signed text parts."""


def _as_gemini_3_signs(parts: list[internal.Part]) -> bool:
    """Gemini 3 signs one text part of an answer, its first, and the answer is Gemini's alone (no
    Claude thinking in it): streamed, the signature comes after the text and cannot say where the
    part began (hidden thoughts between two text parts leave them one text to a client)."""
    texts = [p for p in parts if isinstance(p, internal.Text)]
    if not any(p.signature for p in texts):
        return True
    claude = any(isinstance(p, internal.Reasoning) and p.signature for p in parts)
    return not claude and not any(p.signature for p in texts[1:])


PARTS: st.SearchStrategy[list[internal.Part]] = st.lists(
    st.one_of(TEXT.map(internal.Text), SIGNED_TEXT, REASONING, CALLS), max_size=6
).filter(_as_gemini_3_signs)
STOPS = st.sampled_from(["end", "length", "tool_use", "content_filter"])


def _pieces(text: str, cuts: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, cuts)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def events_of(reply: internal.Reply, cuts: int) -> list[internal.StreamEvent]:
    """The stream events an upstream's decoder would make of ``reply``."""
    events: list[internal.StreamEvent] = [internal.Start(id=reply.id, model=reply.model)]
    tools = 0
    for part in reply.parts:
        if isinstance(part, internal.Text):
            events += [internal.TextDelta(p) for p in _pieces(part.text, cuts)]
            if part.signature:  # as Gemini 3 streams it: after the text
                events.append(internal.TextDelta("", signature=part.signature, source="gemini"))
        elif isinstance(part, internal.Reasoning):
            pieces = _pieces(part.text, cuts)
            events += [internal.ReasoningDelta(text=p) for p in pieces[:-1]]
            last = pieces[-1] if pieces else ""
            events.append(
                internal.ReasoningDelta(text=last, signature=part.signature, source=part.source)
            )
        elif isinstance(part, internal.ToolCall):
            events.append(internal.ToolCallStart(index=tools, id=part.id, name=part.name))
            args = json.dumps(part.arguments)
            events += [internal.ToolArgsDelta(index=tools, fragment=f) for f in _pieces(args, cuts)]
            tools += 1
    events.append(internal.Finish(stop=reply.stop, usage=reply.usage))
    return events


def _chunks(data: bytes, sse: bool) -> list[dict[str, Any]]:
    if sse:
        return [
            json.loads(line[6:])
            for line in data.decode().split("\r\n")
            if line.startswith("data: ")
        ]
    value = json.loads(data)
    assert isinstance(value, list)
    return value


def normalized(parts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Parts as a client that joins consecutive text (and thought) increments reads them: a thought
    part with a signature of its own starts a new one, a text part only if the text before it is
    signed already."""
    out: list[tuple[Any, ...]] = []
    for part in parts:
        signature = part.get("thoughtSignature")
        if "functionCall" in part:
            call = part["functionCall"]
            out.append(("call", call["id"], call["name"], call["args"], signature))
            continue
        kind = "thought" if part.get("thought") else "text"
        if kind == "text" and out and out[-1][0] == "text" and not (signature and out[-1][2]):
            # a model turn's text parts are one text, signed by the signature among them (as
            # proxycast reads them back; Gemini 3 streams it after the text)
            out[-1] = ("text", out[-1][1] + part["text"], out[-1][2] or signature)
            continue
        if out and out[-1][0] == kind and signature is None and out[-1][2] is None:
            out[-1] = (kind, out[-1][1] + part["text"], None)
        elif out and out[-1][0] == kind and signature is None:
            out[-1] = (kind, out[-1][1] + part["text"], out[-1][2])
        else:
            out.append((kind, part["text"], signature))
    return [p for p in out if p[0] == "call" or p[1] or p[2]]


@given(parts=PARTS, stop=STOPS, cuts=st.integers(1, 4), thoughts=st.booleans(), sse=st.booleans())
@settings(max_examples=150)
def test_a_stream_accumulates_to_the_whole_answer(
    parts: list[internal.Part], stop: internal.Stop, cuts: int, thoughts: bool, sse: bool
) -> None:
    reply = internal.Reply(
        id="r1", model="m", parts=tuple(parts), stop=stop, usage=internal.Usage(input=5, output=3)
    )
    events = events_of(reply, cuts)
    # the non-streamed answer to what the events mean (a stream joins reasoning up to a signature)
    whole = codec.response_from_internal([internal.accumulate(events)], "m", thoughts)
    encoder = codec.StreamEncoder("m", codec.Request(body={}, sse=sse, thoughts=thoughts))
    data = b"".join(encoder.encode(e) for e in events)
    assert encoder.finished
    chunks = _chunks(data, sse)
    streamed = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert normalized(streamed) == normalized(whole["candidates"][0]["content"]["parts"])
    assert chunks[-1]["candidates"][0]["finishReason"] == whole["candidates"][0]["finishReason"]
    assert chunks[-1]["usageMetadata"] == whole["usageMetadata"]


@given(parts=PARTS, thoughts=st.booleans())
@settings(max_examples=150)
def test_what_an_answer_carries_comes_back_on_the_next_turn(
    parts: list[internal.Part], thoughts: bool
) -> None:
    reply = internal.Reply(id="r1", model="m", parts=tuple(parts), stop="end")
    answer = codec.response_from_internal([reply], "m", thoughts)
    model_turn = answer["candidates"][0]["content"]
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            json.loads(json.dumps(model_turn)),
        ]
    }
    conversation = codec.request_to_internal(codec.Request(body=codec.camel(body)), stream=False)
    back = conversation.messages[-1].parts if len(conversation.messages) > 1 else ()
    signed = [p for p in parts if isinstance(p, internal.Reasoning) and p.signature]
    assert [p for p in back if isinstance(p, internal.Reasoning) and p.signature] == signed
    texts_signed = [p.signature for p in parts if isinstance(p, internal.Text) and p.signature]
    assert [p.signature for p in back if isinstance(p, internal.Text) and p.signature] == (
        texts_signed
    )
    calls = [p for p in parts if isinstance(p, internal.ToolCall)]
    assert [p for p in back if isinstance(p, internal.ToolCall)] == calls
    texts = "".join(p.text for p in parts if isinstance(p, internal.Text))
    assert "".join(p.text for p in back if isinstance(p, internal.Text)) == texts


@given(reasoning=REASONING, urlsafe=st.booleans())
def test_a_packed_signature_survives_googles_bytes_handling(
    reasoning: internal.Reasoning, urlsafe: bool
) -> None:
    packed = codec.pack(reasoning)
    if urlsafe:  # an SDK that holds the field as bytes may send it back URL-safe, unpadded
        packed = base64.urlsafe_b64encode(base64.b64decode(packed)).decode().rstrip("=")
    part = {"text": "", "thoughtSignature": packed}
    body = {"contents": [{"role": "model", "parts": [part]}]}
    conversation = codec.request_to_internal(codec.Request(body=body), stream=False)
    assert conversation.messages[0].parts == (reasoning,)


def test_field_names_in_either_case() -> None:
    body = {
        "generation_config": {"max_output_tokens": 7, "thinking_config": {"thinking_budget": 0}},
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "f",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"snake_case_name": {"type": "STRING", "nullable": True}},
                        },
                    }
                ]
            }
        ],
        "contents": [
            {"role": "model", "parts": [{"function_call": {"name": "f", "args": {"keep_me": 1}}}]}
        ],
    }
    conversation = codec.request_to_internal(codec.Request(body=codec.camel(body)), stream=False)
    assert conversation.params.max_tokens == 7
    assert conversation.params.reasoning_effort == "none"
    assert conversation.tools[0].parameters == {
        "type": "object",
        "properties": {"snake_case_name": {"type": ["string", "null"]}},
    }
    (call,) = conversation.messages[0].parts
    assert isinstance(call, internal.ToolCall)
    assert call.arguments == {"keep_me": 1}
