"""The OpenAI passthrough's scan of a chunk's bytes (content in the middle of an answer) gives what
the parse of the chunk gives: the same frame, the same state."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxycast.formats import sse
from proxycast.formats.openai.passthrough import OpenAIPassthrough

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
MODELS = st.sampled_from(["gpt-4o", "gpt-4o-2024-08-06", "café", 'a"b', "model"])


@st.composite
def chunks(draw: st.DrawFn) -> str:
    chunk: dict[str, object] = {"id": "chatcmpl-1", "object": "chat.completion.chunk"}
    if draw(st.booleans()):
        chunk["model"] = draw(MODELS)
    delta: dict[str, object] = {}
    if draw(st.booleans()):
        delta["content"] = draw(TEXT)
    if draw(st.booleans()):
        delta["tool_calls"] = [{"index": 0, "function": {"arguments": draw(TEXT)}}]
    choice = {"index": 0, "delta": delta, "finish_reason": draw(st.sampled_from([None, "stop"]))}
    choices: list[object] = [choice] if draw(st.booleans()) else []
    chunk["choices"] = choices
    usage = draw(st.sampled_from(["absent", "null", "object"]))
    if usage == "null":
        chunk["usage"] = None
    elif usage == "object":
        chunk["usage"] = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    if draw(st.booleans()) and draw(st.booleans()):
        chunk["error"] = {"message": "overloaded", "type": "server_error"}
    if draw(st.booleans()):  # a nested "model" key the scan must not take for the top-level one
        choices.append({"index": 1, "delta": {"model": draw(MODELS)}})
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (",", " : ")]))
    return json.dumps(chunk, separators=separators, ensure_ascii=draw(st.booleans()))


@given(st.lists(chunks(), min_size=1, max_size=5), MODELS, st.booleans())
def test_the_scan_gives_what_the_parse_gives(data: list[str], model: str, hide_usage: bool) -> None:
    fast = OpenAIPassthrough(model, "p", hide_usage=hide_usage)
    slow = OpenAIPassthrough(model, "p", hide_usage=hide_usage)
    fast.started = slow.started = True  # past the opening chunks, where the scan applies
    for text in data:
        if fast.finished:
            break
        got = fast._data(text.encode())
        expected = slow._event(sse.Event(text))
        assert got == expected
        assert (fast.finished, fast.usage, fast.error is None) == (
            slow.finished,
            slow.usage,
            slow.error is None,
        )
        assert fast._saw_finish == slow._saw_finish


def test_a_chunk_in_the_middle_is_forwarded_after_a_scan() -> None:
    passthrough = OpenAIPassthrough("gpt-4o", "p", hide_usage=True)
    passthrough.started = True
    choices = b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]'
    chunk = b'{"id":"c","model":"gpt-4o-2024-08-06",' + choices + b',"usage":null}'
    renamed = b'{"id":"c","model":"gpt-4o",' + choices + b"}"
    assert passthrough._plain(chunk) == b"data: " + renamed + b"\n\n"  # the scan, not the parse


@pytest.mark.parametrize(
    "chunk",
    [
        # a nested "usage": null stays (only the top-level one include_usage added goes)
        b'{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null,"usage":null}]}',
        # a model string JSON does not accept: the parse path decides, the stream goes on
        b'{"model":"gpt\\x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}',
        b'{"model":"a\tb","choices":[]}',
        b'{"choices":[],"model":"late"}',
        b'{"model":"m","choices":[{"delta":{"content":"\xff"}}]}',
    ],
)
def test_unusual_chunks_get_what_the_parse_gives(chunk: bytes) -> None:
    fast = OpenAIPassthrough("m", "p", hide_usage=True)
    slow = OpenAIPassthrough("m", "p", hide_usage=True)
    fast.started = slow.started = True
    assert fast._data(chunk) == slow._event(sse.Event(chunk.decode("utf-8", "replace")))
