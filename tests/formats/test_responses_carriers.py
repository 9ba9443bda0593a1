"""What a Responses client carries back for the upstream, as properties: a reasoning block (its text,
signature, source and redaction) through a response's reasoning item and the next request's input;
a compaction item's summary through its ``encrypted_content``."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxycast.formats import internal
from proxycast.formats.responses import inbound as codec
from proxycast.formats.responses import wire

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
SIGNATURES = st.text(
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-"),
    min_size=1,
    max_size=40,
)


@st.composite
def reasonings(draw: st.DrawFn) -> internal.Reasoning:
    redacted = draw(st.booleans())
    return internal.Reasoning(
        text="" if redacted else draw(TEXT),
        signature=draw(SIGNATURES),
        redacted=redacted,
        source=None if redacted else draw(st.sampled_from([None, "gemini"])),
    )


@given(reasonings())
def test_a_reasoning_block_comes_back_as_it_went(part: internal.Reasoning) -> None:
    reply = internal.Reply(
        id="r", model="m", parts=(part, internal.Text("Done.")), stop="end", usage=internal.Usage()
    )
    conversation = codec.request_to_internal(
        codec.Request(body=wire.ResponseCreateRequest(model="m"))
    )
    response = codec.response_from_internal(reply, "m", conversation)
    item = response["output"][0]
    assert item["type"] == "reasoning"
    if part.text:
        assert item["content"] == [{"type": "reasoning_text", "text": part.text}]
        assert item["summary"] == [{"type": "summary_text", "text": part.text}]
    history: Any = [{"role": "user", "content": "Hi"}, *response["output"]]
    back = codec.request_to_internal(
        codec.Request(body=wire.ResponseCreateRequest(model="m", input=history))
    )
    assert back.messages[1].parts[0] == part


@given(TEXT)
def test_a_compaction_item_carries_its_summary(summary: str) -> None:
    content = codec.compaction_content(summary)
    assert content.isascii()
    assert codec.compaction_summary(content) == summary
    item: Any = [{"type": "compaction", "id": "cmp_1", "encrypted_content": content}]
    back = codec.request_to_internal(
        codec.Request(body=wire.ResponseCreateRequest(model="m", input=item))
    )
    assert back.messages == (
        internal.Message("user", (internal.Text(codec.SUMMARY_HEADING + summary),)),
    )
