"""The internal model -> OpenAI-compatible requests: text parts keep their boundaries."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from proxycast.formats import internal
from proxycast.formats.openai import outbound as codec


def _assistant(*texts: str) -> internal.Conversation:
    parts = tuple(internal.Text(t) for t in texts)
    return internal.Conversation(
        messages=(
            internal.Message("user", (internal.Text("Pick a number and save it."),)),
            internal.Message("assistant", parts),
            internal.Message("user", (internal.Text("Which one?"),)),
        )
    )


def test_assistant_text_parts_keep_their_boundaries() -> None:
    conversation = _assistant("I saved the number.", "The number", "is four.")
    body = codec.request_from_internal(conversation, "m").body
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "I saved the number.\nThe number\nis four.",
    }


def test_a_boundary_that_has_its_whitespace_gets_no_more() -> None:
    conversation = _assistant("One, two, ", "three.", "\nFour.")
    body = codec.request_from_internal(conversation, "m").body
    assert body["messages"][1]["content"] == "One, two, three.\nFour."


def test_tool_results_of_several_text_parts_keep_their_boundaries() -> None:
    call = internal.ToolCall(id="call_1", name="f", arguments={})
    result = internal.ToolResult(
        call_id="call_1", content=(internal.Text("line one"), internal.Text("line two"))
    )
    conversation = internal.Conversation(
        messages=(
            internal.Message("user", (internal.Text("Go."),)),
            internal.Message("assistant", (call,)),
            internal.Message("user", (result,)),
        )
    )
    body = codec.request_from_internal(conversation, "m").body
    assert body["messages"][2]["content"] == "line one\nline two"


@given(st.lists(st.text(max_size=8), max_size=6))
def test_joined_keeps_every_part_in_order_and_glues_no_two_words(texts: list[str]) -> None:
    out = internal.joined(texts)
    position = 0
    for text in texts:  # every part, whole and in order
        found = out.find(text, position)
        assert found >= 0
        position = found + len(text)
    # nothing but separators added, one at most a boundary, and only where no whitespace was
    pieces = [t for t in texts if t]
    assert len(out) - sum(map(len, pieces)) <= max(0, len(pieces) - 1)
    assert out.replace("\n", "") == "".join(pieces).replace("\n", "")
    for left, right in itertools.pairwise(pieces):
        if not left[-1].isspace() and not right[0].isspace():
            assert left + "\n" + right in out
