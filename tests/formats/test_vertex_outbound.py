"""Properties of the Vertex format: over tool loops with reasoning (the agent round trip's answers),
Claude on Vertex is Anthropic's conversion with the model in the URL and Vertex's
``anthropic_version``, Gemini on Vertex is Gemini's, both accepted by the fakes' rules; answers and
streams read as their publisher's; the stream agrees with the non-streamed answer."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxycast import formats
from proxycast.config import ProviderConfig
from proxycast.formats import internal
from proxycast.formats.anthropic import outbound as anthropic
from proxycast.formats.gemini import outbound as gemini
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from tests.formats.test_agent_round_trip import answers, next_request

PROVIDER = ProviderConfig(
    name="v", type="vertex", project="proj-1", location="europe-west1", api_keys=("t",)
)
VERTEX = formats.UPSTREAMS["vertex"].bind(PROVIDER)
MODELS = {"anthropic": "claude-sonnet-4-5@20250929", "gemini": "gemini-3-pro"}
ROOT = "/v1/projects/proj-1/locations/europe-west1/publishers"


def _without_call_ids(replies: list[internal.Reply]) -> list[internal.Reply]:
    """Replies with their tool calls' ids blanked (Gemini's are made up per reading)."""
    return [
        attrs.evolve(
            reply,
            parts=tuple(
                attrs.evolve(p, id="") if isinstance(p, internal.ToolCall) else p
                for p in reply.parts
            ),
        )
        for reply in replies
    ]


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("publisher", ["anthropic", "gemini"])
@given(data=st.data(), stream=st.booleans())
@settings(max_examples=40)
def test_vertex_sends_its_publishers_body(
    publisher: str, dialect: str, stream: bool, data: st.DataObject
) -> None:
    wire_answer, issued = data.draw(answers(publisher))
    spoke = formats.UPSTREAMS[publisher]
    client = next(d for d in formats.DIALECTS if d.name == dialect)
    via_vertex = VERTEX.reply_to_internal(
        wire_answer, VERTEX.request_from_internal(internal.Conversation(), MODELS[publisher])
    )
    own_replies = spoke.reply_to_internal(
        wire_answer, spoke.request_from_internal(internal.Conversation(), MODELS[publisher])
    )
    assert _without_call_ids(via_vertex) == _without_call_ids(own_replies)
    answer = client.reply_from_internal(via_vertex, "m", internal.Conversation())
    conversation = next_request(dialect, json.loads(json.dumps(answer)))
    conversation = internal.Conversation(
        system=conversation.system,
        messages=conversation.messages,
        tools=conversation.tools,
        params=conversation.params,
        stream=stream,
    )
    model = MODELS[publisher]
    sent = VERTEX.request_from_internal(conversation, model)
    own = spoke.request_from_internal(conversation, model)
    assert sent.stream == stream
    if publisher == "anthropic":
        method = "streamRawPredict" if stream else "rawPredict"
        assert sent.path == f"{ROOT}/anthropic/models/{model}:{method}"
        body = dict(sent.body)
        assert body.pop("anthropic_version") == "vertex-2023-10-16"
        assert body == {k: v for k, v in own.body.items() if k != "model"}
        assert fa.problem({**body, "model": model}, issued) is None
    else:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        assert sent.path == f"{ROOT}/google/models/{model}:{method}"
        assert sent.body == own.body
        assert all(c["role"] in ("user", "model") for c in sent.body["contents"])
        assert fg.validate(dict(sent.body)) is None


def _decoded(chunks: list[bytes], publisher: str) -> list[internal.Reply]:
    request = VERTEX.request_from_internal(internal.Conversation(stream=True), MODELS[publisher])
    decoder = VERTEX.stream_decoder(request)
    events = [e for chunk in chunks for e in decoder.feed(chunk)] + decoder.end()
    return [internal.accumulate(events)]


@given(text=st.text("abc xyz.", min_size=1, max_size=40), pieces=st.integers(1, 5))
@settings(max_examples=30)
def test_streams_agree_with_answers_for_both_publishers(text: str, pieces: int) -> None:
    script = fa.AnthropicScript(blocks=(fa.Text(text),), pieces=pieces)
    message = fa.message(script, MODELS["anthropic"], "msg_1")
    stream = fa.encode_events(fa.stream_events(message, pieces, False))
    claude = _decoded([stream], "anthropic")
    assert claude[0].parts == tuple(anthropic.response_to_internal(message).parts)
    gemini_script = fg.GeminiScript(parts=(fg.Text(text),), pieces=pieces)
    chunks = [
        b"data: " + json.dumps(c).encode() + b"\r\n\r\n"
        for c in fg.stream_chunks(gemini_script, MODELS["gemini"])
    ]
    google = _decoded(chunks, "gemini")
    answer = gemini.response_to_internal(fg.response(gemini_script, MODELS["gemini"]))
    assert google[0].parts == answer[0].parts
    assert google[0].stop == answer[0].stop


def test_count_tokens_requests() -> None:
    conversation = internal.Conversation(
        messages=(internal.Message("user", (internal.Text("Hi"),)),)
    )
    claude = VERTEX.count_tokens(conversation, MODELS["anthropic"])
    google = VERTEX.count_tokens(conversation, MODELS["gemini"])
    assert not isinstance(claude, internal.Conversation)
    assert isinstance(claude, type(google))
    assert claude.request.path == f"{ROOT}/anthropic/models/count-tokens:rawPredict"  # type: ignore[union-attr]
    body: dict[str, Any] = dict(claude.request.body)  # type: ignore[union-attr]
    assert (body["model"], body["anthropic_version"]) == (
        MODELS["anthropic"],
        "vertex-2023-10-16",
    )
    assert "max_tokens" not in body
    assert google.request.path == f"{ROOT}/google/models/gemini-3-pro:countTokens"  # type: ignore[union-attr]
    assert set(google.request.body) == {"contents"}  # type: ignore[union-attr]
    assert claude.read({"input_tokens": 7}) == 7  # type: ignore[union-attr]
    assert google.read({"totalTokens": 9}) == 9  # type: ignore[union-attr]
