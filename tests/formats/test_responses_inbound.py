"""Responses API clients: requests in (items, tools Codex sends), and the property that any stream of
events, accumulated by the openai SDK, equals the non-streamed response."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import omit
from openai._models import construct_type_unchecked
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from proxycast.errors import InvalidRequestError, ProxycastError
from proxycast.formats import internal, sse
from proxycast.formats.responses import inbound as codec

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def conversation(**body: Any) -> codec.ResponsesConversation:
    return codec.request_to_internal(codec.Request(body=codec.validate({"model": "m", **body})))


def test_string_input_and_instructions() -> None:
    c = conversation(input="Hi", instructions="Be brief.", max_output_tokens=100, temperature=0.5)
    assert c.system == (internal.Text("Be brief."),)
    assert c.messages == (internal.Message("user", (internal.Text("Hi"),)),)
    assert (c.params.max_tokens, c.params.temperature) == (100, 0.5)


def test_items_become_turns() -> None:
    c = conversation(
        input=[
            {"role": "developer", "content": "Rules."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Q"}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hm"}],
             "encrypted_content": "sig"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
        ]
    )  # fmt: skip
    assert c.system == (internal.Text("Rules."),)
    assert c.messages == (
        internal.Message("user", (internal.Text("Q"),)),
        internal.Message(
            "assistant",
            (
                internal.Reasoning(text="hm", signature="sig"),
                internal.ToolCall(id="c1", name="f", arguments={"a": 1}),
            ),
        ),
        internal.Message(
            "user", (internal.ToolResult(call_id="c1", content=(internal.Text("42"),), name="f"),)
        ),
        internal.Message("assistant", (internal.Text("Done."),)),
    )


def test_images_and_files() -> None:
    c = conversation(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    {"type": "input_image", "image_url": "https://x.test/a.png"},
                    {"type": "input_file", "file_data": "data:application/pdf;base64,BBBB",
                     "filename": "a.pdf"},
                ],
            }
        ]
    )  # fmt: skip
    assert c.messages[0].parts == (
        internal.Image(media_type="image/png", data="AAAA"),
        internal.Image(url="https://x.test/a.png"),
        internal.Document(media_type="application/pdf", data="BBBB", filename="a.pdf"),
    )


def test_a_file_id_is_a_400_naming_the_part() -> None:
    with pytest.raises(InvalidRequestError) as info:
        conversation(input=[{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}])
    assert info.value.param == "input[0].content[0].image_url"


def test_codex_tools_custom_namespace_and_built_in() -> None:
    c = conversation(
        input="Hi",
        tools=[
            {"type": "function", "name": "exec_command", "parameters": SCHEMA, "strict": False},
            {"type": "custom", "name": "apply_patch", "description": "Patch files.",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
            {"type": "namespace", "name": "agents", "description": "Sub-agents.",
             "tools": [{"type": "function", "name": "spawn", "parameters": SCHEMA}]},
            {"type": "web_search", "external_web_access": False},
        ],
        tool_choice="auto",
        reasoning={"effort": "high", "summary": "auto"},
        text={"format": {"type": "json_schema", "name": "out", "schema": SCHEMA}},
    )  # fmt: skip
    assert [t.name for t in c.tools] == ["exec_command", "apply_patch", "agents__spawn"]
    assert c.tools[1].parameters["required"] == ["input"]
    assert "start: /.+/" in c.tools[1].parameters["properties"]["input"]["description"]
    assert c.custom == {"apply_patch"}
    assert c.namespaces == {"agents__spawn": ("agents", "spawn")}
    assert c.dropped == ()  # the hub carries the web search: the upstream decides
    assert c.params.web_search == internal.WebSearch(tool="web_search")
    assert c.params.reasoning_effort == "high"
    assert c.params.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": SCHEMA},
    }


def test_custom_and_namespace_calls_map_back() -> None:
    c = conversation(
        input="Hi",
        tools=[
            {"type": "custom", "name": "apply_patch"},
            {
                "type": "namespace",
                "name": "agents",
                "tools": [{"type": "function", "name": "spawn"}],
            },
        ],
    )
    reply = internal.Reply(
        id="x",
        model="m",
        parts=(
            internal.ToolCall(id="c1", name="apply_patch", arguments={"input": "*** Begin Patch"}),
            internal.ToolCall(id="c2", name="agents__spawn", arguments={"a": 1}),
        ),
        stop="tool_use",
    )
    out = codec.response_from_internal(reply, "m", c)["output"]
    assert out[0]["type"] == "custom_tool_call"
    assert (out[0]["name"], out[0]["input"], out[0]["call_id"]) == (
        "apply_patch", "*** Begin Patch", "c1"
    )  # fmt: skip
    assert (out[1]["type"], out[1]["name"], out[1]["namespace"]) == (
        "function_call", "spawn", "agents"
    )  # fmt: skip
    # and the client's history of those calls goes back up under the flattened names
    back = conversation(
        input=[
            {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": "P"},
            {"type": "custom_tool_call_output", "call_id": "c1", "output": "ok"},
            {"type": "function_call", "call_id": "c2", "name": "spawn", "namespace": "agents",
             "arguments": "{}"},
        ]
    )  # fmt: skip
    calls = [p for m in back.messages for p in m.parts if isinstance(p, internal.ToolCall)]
    assert [(p.name, p.arguments) for p in calls] == [
        ("apply_patch", {"input": "P"}),
        ("agents__spawn", {}),
    ]


@pytest.mark.parametrize(
    ("stop", "status", "reason"),
    [
        pytest.param("end", "completed", None, id="end"),
        pytest.param("length", "incomplete", "max_output_tokens", id="length"),
        pytest.param("content_filter", "incomplete", "content_filter", id="filter"),
    ],
)
def test_status_and_incomplete_reason(stop: internal.Stop, status: str, reason: str | None) -> None:
    reply = internal.Reply(id="x", model="m", parts=(internal.Text("a"),), stop=stop)
    response = codec.response_from_internal(reply, "m", conversation(input="Hi"))
    assert response["status"] == status
    assert (response["incomplete_details"] or {}).get("reason") == reason


def test_usage() -> None:
    usage = internal.Usage(input=5, cache_read=3, cache_write=2, output=7, reasoning=4)
    assert codec.usage_from_internal(usage) == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 4},
        "total_tokens": 17,
    }


def test_a_failure_is_response_failed_with_its_code() -> None:
    encoder = codec.StreamEncoder("m", conversation(input="Hi"))
    encoder.encode(internal.Start(id="x", model="m"))
    frame = encoder.fail(ProxycastError("Slow down.", status=429))
    (event,) = sse.SSEParser().feed(frame)
    assert isinstance(event, sse.Event)
    assert event.event == "response.failed"
    data = json.loads(event.data)
    assert data["response"]["error"] == {"code": "rate_limit_exceeded", "message": "Slow down."}
    assert data["sequence_number"] == 2


# The property: a stream, accumulated by the SDK, is the non-streamed response.

TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
ARGS = st.dictionaries(st.text("abc", max_size=3), st.integers() | st.text(max_size=4), max_size=3)


@st.composite
def event_streams(draw: st.DrawFn) -> list[internal.StreamEvent]:
    events: list[internal.StreamEvent] = [internal.Start(id="up", model="m")]
    calls = 0
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["text", "reasoning", "signed", "call"]))
        if kind == "text":
            events += [internal.TextDelta(t) for t in draw(st.lists(TEXT, min_size=1, max_size=3))]
        elif kind in ("reasoning", "signed"):
            events += [
                internal.ReasoningDelta(text=t)
                for t in draw(st.lists(TEXT, min_size=1, max_size=3))
            ]
            if kind == "signed":
                events.append(internal.ReasoningDelta(signature=draw(st.text("abc=", min_size=1))))
        else:
            text = json.dumps(draw(ARGS))
            cuts = sorted(draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=3)))
            pieces = [
                text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if text[a:b]
            ]
            events.append(internal.ToolCallStart(index=calls, id=f"call_{calls}", name="f"))
            events += [internal.ToolArgsDelta(index=calls, fragment=p) for p in pieces]
            calls += 1
    stop = draw(st.sampled_from(["end", "length", "content_filter", "tool_use"]))
    usage = internal.Usage(input=draw(st.integers(0, 9)), output=draw(st.integers(0, 9)))
    events.append(internal.Finish(stop=stop, usage=usage))
    return events


def _comparable(response: Response) -> dict[str, Any]:
    """The response without what differs between two calls (ids, times) and the SDK's own additions
    to a streamed one (``parsed``)."""
    data = response.model_dump(exclude={"id", "created_at", "completed_at"})
    for item in data["output"]:
        item.pop("id", None)
        item.pop("parsed_arguments", None)
        for part in item.get("content") or ():
            part.pop("parsed", None)
    return data


@settings(max_examples=60, deadline=None)
@given(event_streams())
def test_the_sdk_accumulates_a_stream_into_the_non_streamed_response(
    events: list[internal.StreamEvent],
) -> None:
    conv = conversation(input="Hi", tools=[{"type": "function", "name": "f"}])
    encoder = codec.StreamEncoder("client-model", conv)
    frames = b"".join(encoder.encode(e) for e in events)
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    final = None
    numbers = []
    for item in sse.SSEParser().feed(frames):
        assert isinstance(item, sse.Event)
        data = json.loads(item.data)
        assert data["type"] == item.event
        numbers.append(data["sequence_number"])
        event: Any = construct_type_unchecked(type_=ResponseStreamEvent, value=data)  # type: ignore[arg-type]
        for out in state.handle_event(event):
            if out.type in ("response.completed", "response.incomplete"):
                final = out.response
    assert numbers == list(range(len(numbers)))
    assert final is not None
    expected = codec.response_from_internal(internal.accumulate(events), "client-model", conv)
    assert _comparable(Response.model_validate(final.model_dump())) == _comparable(
        Response.model_validate(expected)
    )


# The whole Response object: every field OpenAI always returns (the Open Responses schema's required
# fields), with OpenAI's defaults where the request left them out.

ALWAYS = {
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model",
    "previous_response_id", "instructions", "output", "error", "tools", "tool_choice", "truncation",
    "parallel_tool_calls", "text", "top_p", "presence_penalty", "frequency_penalty", "top_logprobs",
    "temperature", "reasoning", "user", "usage", "max_output_tokens", "max_tool_calls", "store",
    "background", "service_tier", "metadata", "safety_identifier", "prompt_cache_key",
}  # fmt: skip


def _streamed(conv: codec.ResponsesConversation, events: list[internal.StreamEvent]) -> list[Any]:
    encoder = codec.StreamEncoder("m", conv)
    frames = b"".join(encoder.encode(e) for e in events)
    return [json.loads(e.data) for e in sse.SSEParser().feed(frames) if isinstance(e, sse.Event)]


def test_every_field_with_openai_defaults_streamed_and_not() -> None:
    conv = conversation(input="Hi", tools=[{"type": "function", "name": "f"}])
    reply = internal.Reply(id="x", model="m", parts=(internal.Text("a"),), stop="end")
    events = _streamed(conv, codec.events_of(reply))
    created, in_progress, completed = events[0], events[1], events[-1]
    assert (created["type"], in_progress["type"]) == ("response.created", "response.in_progress")
    assert created["response"]["completed_at"] is None
    assert isinstance(completed["response"]["completed_at"], int)
    whole = codec.response_from_internal(reply, "m", conv)
    for response in (created["response"], in_progress["response"], completed["response"], whole):
        assert ALWAYS <= set(response)
        Response.model_validate(response)
        assert {k: response[k] for k in sorted(ALWAYS - {"id", "created_at", "completed_at",
                                                         "status", "output", "usage"})} == {
            "background": False,
            "error": None,
            "frequency_penalty": 0.0,
            "incomplete_details": None,
            "instructions": None,
            "max_output_tokens": None,
            "max_tool_calls": None,
            "metadata": {},
            "model": "m",
            "object": "response",
            "parallel_tool_calls": True,
            "presence_penalty": 0.0,
            "previous_response_id": None,
            "prompt_cache_key": None,
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": None,
            "service_tier": "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [
                {"type": "function", "name": "f", "description": None, "parameters": None,
                 "strict": False}
            ],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "user": None,
        }  # fmt: skip


def test_the_request_s_values_are_repeated() -> None:
    tool = {
        "type": "function",
        "name": "f",
        "parameters": SCHEMA,
        "strict": True,
        "description": "F",
    }
    conv = conversation(
        input="Hi",
        tools=[tool],
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        top_logprobs=3,
        max_tool_calls=2,
        service_tier="flex",
        safety_identifier="u1",
        prompt_cache_key="k",
        prompt_cache_retention="24h",
        text={"verbosity": "low"},
    )
    reply = internal.Reply(id="x", model="m", parts=(internal.Text("a"),), stop="end")
    response = codec.response_from_internal(reply, "m", conv)
    assert response["tools"] == [tool]
    assert (response["presence_penalty"], response["frequency_penalty"]) == (0.5, -0.5)
    assert (response["top_logprobs"], response["max_tool_calls"]) == (3, 2)
    assert (response["safety_identifier"], response["prompt_cache_key"]) == ("u1", "k")
    assert response["prompt_cache_retention"] == "24h"
    assert response["text"] == {"format": {"type": "text"}, "verbosity": "low"}
    assert response["service_tier"] == "default"  # the tier that served it
    assert (conv.params.presence_penalty, conv.params.frequency_penalty) == (0.5, -0.5)


def test_an_incomplete_response_has_no_completed_at() -> None:
    reply = internal.Reply(id="x", model="m", parts=(internal.Text("a"),), stop="length")
    response = codec.response_from_internal(reply, "m", conversation(input="Hi"))
    assert (response["status"], response["completed_at"]) == ("incomplete", None)


# Items in order: each output item's events are contiguous, its done before the next one's added,
# even when an upstream interleaves the arguments of parallel calls.


@st.composite
def interleaved_streams(draw: st.DrawFn) -> list[internal.StreamEvent]:
    """A stream of :func:`event_streams` whose tool-call fragments are moved later, among the
    events of the items after their call (as an upstream interleaving parallel calls sends them)."""
    events = draw(event_streams())
    body, finish = events[:-1], events[-1]
    out: list[internal.StreamEvent] = []
    late: list[internal.StreamEvent] = []
    for event in body:
        if isinstance(event, internal.ToolArgsDelta) and (
            any(getattr(e, "index", None) == event.index for e in late) or draw(st.booleans())
        ):  # a call's fragments keep their order
            late.append(event)
            continue
        out.append(event)
        if late and draw(st.booleans()):
            out.append(late.pop(0))
    return [*out, *late, finish]


def _items_are_contiguous(events: list[dict[str, Any]]) -> None:
    current: int | None = None
    done: set[int] = set()
    for event in events:
        index = event.get("output_index")
        if event["type"] == "response.output_item.added":
            assert current is None, f"item {index} added before item {current} was done"
            current = index
        elif index is not None:
            assert index == current, f"{event['type']} of item {index} inside item {current}"
            if event["type"] == "response.output_item.done":
                done.add(index)
                current = None
    assert current is None


def test_a_call_s_done_comes_before_the_next_item() -> None:
    events = [
        internal.Start(id="up", model="m"),
        internal.ToolCallStart(index=0, id="call_0", name="f"),
        internal.ToolArgsDelta(index=0, fragment='{"a": 1}'),
        internal.TextDelta("after"),
        internal.ToolCallStart(index=1, id="call_1", name="f"),
        internal.ToolArgsDelta(index=1, fragment="{}"),
        internal.Finish(stop="tool_use", usage=internal.Usage()),
    ]
    conv = conversation(input="Hi", tools=[{"type": "function", "name": "f"}])
    out = _streamed(conv, events)
    _items_are_contiguous(out)
    added = [e["item"]["type"] for e in out if e["type"] == "response.output_item.added"]
    assert added == ["function_call", "message", "function_call"]


@settings(max_examples=80, deadline=None)
@given(interleaved_streams())
def test_items_are_contiguous_and_accumulate_to_the_reply(
    events: list[internal.StreamEvent],
) -> None:
    conv = conversation(input="Hi", tools=[{"type": "function", "name": "f"}])
    out = _streamed(conv, events)
    _items_are_contiguous(out)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    final = out[-1]["response"]
    expected = codec.response_from_internal(internal.accumulate(events), "m", conv)
    assert _comparable(Response.model_validate(final)) == _comparable(
        Response.model_validate(expected)
    )


# allowed_tools: only the allowed tools go upstream; required forces a call.

FUNCS = [{"type": "function", "name": n} for n in ("a", "b", "c")]


@pytest.mark.parametrize(
    ("mode", "allowed", "names", "choice"),
    [
        pytest.param("auto", ["a", "c"], ["a", "c"], "auto", id="auto"),
        pytest.param("required", ["a", "c"], ["a", "c"], "required", id="required"),
        pytest.param("required", ["b"], ["b"], internal.NamedTool("b"), id="required-one"),
        pytest.param("auto", ["zzz"], [], None, id="none-offered"),
    ],
)
def test_allowed_tools(mode: str, allowed: list[str], names: list[str], choice: Any) -> None:
    tool_choice = {
        "type": "allowed_tools",
        "mode": mode,
        "tools": [{"type": "function", "name": n} for n in allowed],
    }
    c = conversation(input="Hi", tools=FUNCS, tool_choice=tool_choice)
    assert [t.name for t in c.tools] == names
    assert c.tool_choice == choice
    reply = internal.Reply(id="x", model="m", parts=(internal.Text("a"),), stop="end")
    response = codec.response_from_internal(reply, "m", c)
    assert response["tool_choice"] == tool_choice
    assert [t["name"] for t in response["tools"]] == ["a", "b", "c"]  # echoed as sent


def test_allowed_tools_of_a_namespace_and_a_bad_mode() -> None:
    tools = [*FUNCS, {"type": "namespace", "name": "ns", "tools": FUNCS[:2]}]
    choice = {
        "type": "allowed_tools",
        "mode": "auto",
        "tools": [{"type": "namespace", "name": "ns"}],
    }
    assert [t.name for t in conversation(input="Hi", tools=tools, tool_choice=choice).tools] == [
        "ns__a",
        "ns__b",
    ]
    with pytest.raises(InvalidRequestError) as info:
        conversation(input="Hi", tools=FUNCS, tool_choice={**choice, "mode": "none"})
    assert info.value.param == "tool_choice.mode"
