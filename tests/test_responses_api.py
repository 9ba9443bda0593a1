"""``/v1/responses`` through the real server with the official openai SDK, on every upstream kind: an
OpenAI-compatible chat-only server (converted), one that serves the Responses API itself (forwarded),
Anthropic and Gemini (converted)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import openai
import pytest

from proxycast.config import Config, ProviderConfig, ResponsesConfig, ServerConfig
from proxycast.testing import (
    AnthropicScript,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    FakeToolCall,
    FakeUpstream,
    GeminiScript,
    Script,
)
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from tests.support import CLIENT_KEY, UPSTREAM_KEY, start_gateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import trio

OTHER_KEY = "test-other-client-key"
MODEL = "the-model"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: Any = [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]


@attrs.frozen
class Kind:
    type: str
    fake: Callable[[], FakeUpstream[Any]]
    text: Callable[[str], Any]
    tool: Callable[[str, dict[str, Any]], Any]
    error: Callable[[int, str], Any]
    responses: bool = False


_OPENAI = {
    "fake": FakeOpenAI,
    "text": lambda text: Script(text=text, chunks=3),
    "tool": lambda name, args: Script(
        text="", tool_calls=(FakeToolCall(name=name, arguments=json.dumps(args)),)
    ),
    "error": lambda status, message: Script(status=status, error_message=message),
}
KINDS = {
    "openai-chat": Kind(type="openai", **_OPENAI),  # type: ignore[arg-type]
    "openai-responses": Kind(type="openai", responses=True, **_OPENAI),  # type: ignore[arg-type]
    "anthropic": Kind(
        type="anthropic",
        fake=FakeAnthropic,
        text=lambda text: AnthropicScript(blocks=(fa.Text(text),)),
        tool=lambda name, args: AnthropicScript(blocks=(fa.ToolUse(name, args, id="toolu_1"),)),
        error=lambda status, message: AnthropicScript(
            status=status, error_type="rate_limit_error", error_message=message
        ),
    ),
    "gemini": Kind(
        type="gemini",
        fake=FakeGemini,
        text=lambda text: GeminiScript(parts=(fg.Text(text),)),
        tool=lambda name, args: GeminiScript(parts=(fg.Call(name, args),)),
        error=lambda status, message: GeminiScript(
            status=status, error_status="RESOURCE_EXHAUSTED", error_message=message
        ),
    ),
}


@attrs.frozen
class Setup:
    sdk: openai.AsyncOpenAI
    other: openai.AsyncOpenAI
    fake: FakeUpstream[Any]
    kind: Kind
    url: str


async def start_setup(nursery: trio.Nursery, kind: Kind, store: bool = True) -> Setup:
    fake = kind.fake()
    await nursery.start(fake.serve)
    provider = ProviderConfig(
        name="up",
        type=kind.type,
        base_url=fake.base_url,
        api_keys=(UPSTREAM_KEY,),
        models=(MODEL,),
        responses=kind.responses,
    )
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY, OTHER_KEY)),
        providers=(provider,),
        responses=ResponsesConfig(store=store),
    )
    gateway = await start_gateway(nursery, config)
    return Setup(
        sdk=openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0),
        other=openai.AsyncOpenAI(base_url=gateway.v1, api_key=OTHER_KEY, max_retries=0),
        fake=fake,
        kind=kind,
        url=gateway.v1,
    )


Start = Callable[..., Awaitable[Setup]]


@pytest.fixture(name="start")
async def _start(nursery: trio.Nursery) -> AsyncIterator[Start]:
    """Starts a fake of a kind and a gateway in front of it; closes the SDK clients at the end."""
    started: list[Setup] = []

    async def start_kind(kind: str, store: bool = True) -> Setup:
        setup = await start_setup(nursery, KINDS[kind], store)
        started.append(setup)
        return setup

    yield start_kind
    for setup in started:
        await setup.sdk.close()
        await setup.other.close()


@pytest.fixture(name="setup", params=sorted(KINDS), ids=lambda k: f"{k}-upstream")
async def _setup(request: pytest.FixtureRequest, start: Start) -> Setup:
    return await start(request.param)


def comparable(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = response.model_dump(exclude={"id", "created_at", "completed_at"})
    for item in data["output"]:
        item.pop("id", None)
        item.pop("parsed_arguments", None)
        for part in item.get("content") or ():
            part.pop("parsed", None)
    return data


async def test_streamed_final_response_equals_the_non_streamed_one(setup: Setup) -> None:
    setup.fake.script(setup.kind.text("One, two, three."), setup.kind.text("One, two, three."))
    created = await setup.sdk.responses.create(model=MODEL, input="Count.", tools=TOOLS)
    async with setup.sdk.responses.stream(model=MODEL, input="Count.", tools=TOOLS) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert created.output_text == final.output_text == "One, two, three."
    assert comparable(final) == comparable(created)
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert created.model == MODEL
    assert created.usage is not None
    assert created.usage.output_tokens > 0


async def test_a_tool_loop_with_function_call_output(setup: Setup) -> None:
    setup.fake.script(setup.kind.tool("get_weather", {"city": "Paris"}), setup.kind.text("Sunny."))
    first = await setup.sdk.responses.create(model=MODEL, input="Weather in Paris?", tools=TOOLS)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    history: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny-21"},
    ]
    second = await setup.sdk.responses.create(model=MODEL, input=history, tools=TOOLS)
    assert second.output_text == "Sunny."
    upstream = setup.fake.requests[-1].body.decode()
    assert "sunny-21" in upstream
    assert "get_weather" in upstream


async def test_an_upstream_error_keeps_its_status(setup: Setup) -> None:
    setup.fake.script(setup.kind.error(429, "Slow down, please."))
    with pytest.raises(openai.RateLimitError) as info:
        await setup.sdk.responses.create(model=MODEL, input="Hi")
    assert "Slow down, please." in str(info.value)


@pytest.mark.parametrize("kind", ["openai-chat", "anthropic", "gemini"])
async def test_previous_response_id_continues_from_the_store(start: Start, kind: str) -> None:
    setup = await start(kind)
    setup.fake.script(setup.kind.tool("get_weather", {"city": "Paris"}), setup.kind.text("Sunny."))
    async with setup.sdk.responses.stream(model=MODEL, input="Weather?", tools=TOOLS) as stream:
        first = await stream.get_final_response()
    (call,) = [item for item in first.output if item.type == "function_call"]
    second = await setup.sdk.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny-21"}],
        tools=TOOLS,
    )
    assert second.output_text == "Sunny."
    assert second.previous_response_id == first.id
    upstream = setup.fake.requests[-1].body.decode()
    assert "Weather?" in upstream
    assert "sunny-21" in upstream
    retrieved = await setup.sdk.responses.retrieve(second.id)
    assert comparable(retrieved) == comparable(second)
    # another client key sees none of it
    with pytest.raises(openai.NotFoundError):
        await setup.other.responses.retrieve(second.id)
    with pytest.raises(openai.BadRequestError) as unknown:  # as OpenAI: Codex then resends it all
        await setup.other.responses.create(model=MODEL, previous_response_id=first.id, input="Hi")
    assert unknown.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    await setup.sdk.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError) as info:
        await setup.sdk.responses.retrieve(second.id)
    assert info.value.body["code"] == "response_not_found"  # type: ignore[index]


async def test_with_the_store_off_nothing_is_kept(start: Start) -> None:
    setup = await start("openai-chat", store=False)
    first = await setup.sdk.responses.create(model=MODEL, input="Hi")
    with pytest.raises(openai.NotFoundError):
        await setup.sdk.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as info:
        await setup.sdk.responses.create(model=MODEL, previous_response_id=first.id, input="Hi")
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert info.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


async def test_store_false_keeps_that_response_out(start: Start) -> None:
    setup = await start("openai-chat")
    first = await setup.sdk.responses.create(model=MODEL, input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        await setup.sdk.responses.retrieve(first.id)


async def test_forwarded_byte_for_byte_to_a_responses_upstream(start: Start) -> None:
    setup = await start("openai-responses")
    body = {"model": MODEL, "input": "Hi", "unknown_field": {"kept": True}, "store": False}
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            setup.url + "/responses",
            content=json.dumps(body),
            headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
        )
    assert answer.status_code == 200
    assert DROPPED not in answer.headers
    (request,) = setup.fake.requests
    assert request.path == "/v1/responses"
    assert request.json() == body  # the client's body, the unknown field included
    assert request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


DROPPED = "x-proxycast-dropped-tools"


async def test_built_in_tools_are_left_out_and_named(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    setup = await start("openai-chat")
    tools = [*TOOLS, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["v"]}]
    raw = await setup.sdk.responses.with_raw_response.create(model=MODEL, input="Hi", tools=tools)
    assert raw.headers[DROPPED] == "web_search, file_search"
    sent = setup.fake.requests[-1].json()
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert "web_search, file_search" in caplog.text


async def test_a_stream_that_fails_ends_with_response_failed(start: Start) -> None:
    setup = await start("openai-chat")
    setup.fake.script(Script(text="a b c d", error_after=2, error_message="Upstream broke."))
    stream = await setup.sdk.responses.create(model=MODEL, input="Hi", stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.message == "Upstream broke."  # type: ignore[union-attr]


async def test_an_unknown_model_is_a_404_in_the_api_shape(start: Start) -> None:
    setup = await start("openai-chat")
    with pytest.raises(openai.NotFoundError) as info:
        await setup.sdk.responses.create(model="nope", input="Hi")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_input_tokens_are_counted(start: Start, kind: str) -> None:
    setup = await start(kind)
    counted = await setup.sdk.responses.input_tokens.count(
        model=MODEL, input="one two three four five six"
    )
    assert counted.input_tokens > 0
    if kind == "openai-responses":  # OpenAI counts it itself
        assert setup.fake.requests[-1].path == "/v1/responses/input_tokens"


@pytest.mark.parametrize("kind", ["openai-chat", "anthropic", "gemini"])
async def test_input_items_of_a_stored_response_and_no_cancel(start: Start, kind: str) -> None:
    setup = await start(kind)
    setup.fake.script(setup.kind.text("One."), setup.kind.text("Two."))
    first = await setup.sdk.responses.create(model=MODEL, input="Hi")
    second = await setup.sdk.responses.create(
        model=MODEL, input="And then?", previous_response_id=first.id
    )
    page = await setup.sdk.responses.input_items.list(second.id, order="asc")
    texts = [part.text for item in page.data for part in item.content]  # type: ignore[union-attr]
    assert texts == ["Hi", "One.", "And then?"]
    newest = await setup.sdk.responses.input_items.list(second.id, limit=1)
    assert [p.text for p in newest.data[0].content] == ["And then?"]  # type: ignore[union-attr]
    assert newest.has_more
    with pytest.raises(openai.BadRequestError):  # nothing runs in the background here
        await setup.sdk.responses.cancel(second.id)
    with pytest.raises(openai.NotFoundError):  # another key sees none of it
        await setup.other.responses.input_items.list(second.id)


def _upstream_tools(kind: str, sent: dict[str, Any]) -> tuple[list[str], Any]:
    """The tool names a converted request offered its upstream, and how it forced a call."""
    if kind == "anthropic":
        return [t["name"] for t in sent["tools"]], sent.get("tool_choice")
    if kind == "gemini":
        names = [d["name"] for t in sent["tools"] for d in t.get("functionDeclarations", ())]
        return names, sent.get("toolConfig", {}).get("functionCallingConfig")
    return [t["function"]["name"] for t in sent["tools"]], sent.get("tool_choice")


FORCED = {
    "openai-chat": ("required", {"type": "function", "function": {"name": "get_time"}}),
    "anthropic": ({"type": "any"}, {"type": "tool", "name": "get_time"}),
    "gemini": ({"mode": "ANY"}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
}


@pytest.mark.parametrize("kind", ["openai-chat", "anthropic", "gemini"])
async def test_allowed_tools_only_the_allowed_go_upstream(start: Start, kind: str) -> None:
    setup = await start(kind)
    tools: Any = [
        {"type": "function", "name": name, "parameters": SCHEMA}
        for name in ("get_weather", "get_time", "send_mail")
    ]
    sent = []
    for allowed, mode in ((["get_weather", "get_time"], "auto"), (["get_weather", "get_time"],
                          "required"), (["get_time"], "required")):  # fmt: skip
        setup.fake.script(setup.kind.text("ok"))
        choice: Any = {
            "type": "allowed_tools",
            "mode": mode,
            "tools": [{"type": "function", "name": name} for name in allowed],
        }
        response = await setup.sdk.responses.create(
            model=MODEL, input="Hi", tools=tools, tool_choice=choice
        )
        assert response.tool_choice.model_dump() == choice  # repeated as asked
        assert [t.name for t in response.tools] == ["get_weather", "get_time", "send_mail"]  # type: ignore[union-attr]
        sent.append(_upstream_tools(kind, setup.fake.requests[-1].json()))
    assert [names for names, _ in sent] == [
        ["get_weather", "get_time"],
        ["get_weather", "get_time"],
        ["get_time"],
    ]
    assert (sent[1][1], sent[2][1]) == FORCED[kind]


ALWAYS = {
    "background", "completed_at", "frequency_penalty", "max_tool_calls", "presence_penalty",
    "prompt_cache_key", "safety_identifier", "service_tier", "top_logprobs", "store", "truncation",
    "text", "reasoning", "tool_choice", "tools", "metadata", "user", "usage",
}  # fmt: skip


@pytest.mark.parametrize("kind", ["openai-chat", "anthropic", "gemini"])
async def test_a_converted_response_has_every_field_openai_returns(start: Start, kind: str) -> None:
    setup = await start(kind)
    setup.fake.script(setup.kind.text("Hi."), setup.kind.text("Hi."))
    body = {"model": MODEL, "input": "Hi", "tools": TOOLS}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(base_url=setup.url, headers=headers) as client:
        whole = (await client.post("/responses", json=body)).json()
        streamed = await client.post("/responses", json={**body, "stream": True})
    events = [
        json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")
    ]
    created, completed = events[0], events[-1]
    assert (created["type"], completed["type"]) == ("response.created", "response.completed")
    for response in (whole, created["response"], completed["response"]):
        assert ALWAYS <= set(response)
        assert response["tools"][0]["strict"] is False
        assert (response["presence_penalty"], response["top_logprobs"]) == (0.0, 0)
    assert created["response"]["completed_at"] is None
    assert isinstance(whole["completed_at"], int)
