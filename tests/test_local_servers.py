"""Local servers as upstreams (issue 32), through the OpenAI-compatible fake's local-server mode, which
behaves as llama-cpp-python's server: validation and template errors as 500s with a traceback,
``content: null`` refused, no usage in streams, an over-long streamed prompt answered with an empty
200, ``[DONE]`` without a finish reason when a newer request interrupts a stream. The OpenAI,
Anthropic and Responses dialects drive it with their SDKs over real HTTP, tool loops included."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import openai
import pytest
import trio

from proxycast.config import Config, ProviderConfig, RoutingConfig, ServerConfig
from proxycast.ledger import LedgerConfig
from proxycast.testing import FakeOpenAI, FakeToolCall, LocalServer, Script
from tests.support import CLIENT_KEY, start_gateway

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support import Gateway

MODEL = "qwen2.5"
HI = [{"role": "user", "content": "Hi"}]
TOOL = {
    "name": "read_file",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}
TOOL_LOOP = [  # an Anthropic tool loop, as Claude Code sends it
    {"role": "user", "content": [{"type": "text", "text": "Read a.txt"}, {"type": "text", "text": "Then"}]},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a.txt"}}],
    },
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "hello"}]},
]  # fmt: skip
RESPONSES_LOOP: list[Any] = [  # a Responses tool loop, as Codex sends it
    {"role": "user", "content": "Read a.txt"},
    {"type": "function_call", "call_id": "call_1", "name": "read_file", "arguments": '{"path": "a.txt"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "hello"},
]  # fmt: skip
RESPONSES_TOOL = {
    "type": "function",
    "name": "read_file",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
}
BAD = {"model": MODEL, "messages": HI, "temperature": None}
"""A request the local server fails with a 500 (pydantic's listing): the request's fault alone."""


def config(fake: FakeOpenAI, ledger: Path | None = None, **routing: Any) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            ProviderConfig(name="llama", type="openai", base_url=fake.base_url, models=("qwen*",)),
        ),
        routing=RoutingConfig(**routing),
        ledger=LedgerConfig(url=f"sqlite:///{ledger}" if ledger else "off"),
    )


def rows(path: Path) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return {r["request_id"]: dict(r) for r in db.execute("SELECT * FROM requests")}
    finally:
        db.close()


async def local(nursery: trio.Nursery, **settings: Any) -> FakeOpenAI:
    fake = FakeOpenAI(local=LocalServer(**settings))
    await nursery.start(fake.serve)
    return fake


def clients(gateway: Gateway) -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    return (
        openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0),
        anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0),
    )


async def test_the_fake_fails_as_llama_cpp_python_does(nursery: trio.Nursery) -> None:
    fake = await local(nursery)
    gateway = await start_gateway(nursery, config(fake))
    oa, _ = clients(gateway)
    async with oa:
        with pytest.raises(openai.InternalServerError) as info:
            await oa.chat.completions.create(
                model=MODEL,
                messages=[
                    *HI,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                ],
            )
        assert "Traceback" in str(info.value)
        assert "NoneType" in str(info.value)
        with pytest.raises(openai.BadRequestError, match="maximum context length"):
            await oa.chat.completions.create(model=MODEL, messages=HI, max_tokens=4096)
        reply = await oa.chat.completions.create(model=MODEL, messages=HI)
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == fake.counted[-1][0]


async def test_a_bad_request_does_not_bench_the_model_for_everyone(nursery: trio.Nursery) -> None:
    fake = await local(nursery)
    gateway = await start_gateway(nursery, config(fake))
    oa, _ = clients(gateway)
    async with oa:
        for _ in range(2):  # a success in between starts the count again
            for _ in range(2):
                with pytest.raises(openai.InternalServerError, match="validation error"):
                    await oa.chat.completions.create(**BAD)
            reply = await oa.chat.completions.create(model=MODEL, messages=HI)
            assert reply.choices[0].finish_reason == "stop"
        # an over-long streamed prompt: an empty 200 stream, which the client gets as a 502
        with pytest.raises(openai.InternalServerError, match="ended the stream"):
            await oa.chat.completions.create(model=MODEL, messages=HI, max_tokens=4096, stream=True)
        for _ in range(2):  # three in a row now: evidence about the server, it rests
            with pytest.raises(openai.InternalServerError):
                await oa.chat.completions.create(**BAD)
        with pytest.raises(openai.InternalServerError, match="3 in a row") as info:
            await oa.chat.completions.create(model=MODEL, messages=HI)
        assert info.value.status_code == 503  # the server fails: unavailable, not a rate limit


@pytest.mark.parametrize("stream", [False, True])
async def test_converted_tool_loops_reach_a_local_server(
    nursery: trio.Nursery, stream: bool
) -> None:
    fake = await local(nursery)
    gateway = await start_gateway(nursery, config(fake))
    oa, claude = clients(gateway)
    fake.script(Script(text="It says hello."), Script(text="It says hello."))
    async with oa, claude:
        if stream:
            async with claude.messages.stream(
                model=MODEL,
                max_tokens=100,
                messages=TOOL_LOOP,
                tools=[TOOL],  # type: ignore[arg-type]
            ) as events:
                message = await events.get_final_message()
            answer = await oa.responses.create(
                model=MODEL,
                input=RESPONSES_LOOP,
                tools=[RESPONSES_TOOL],
                stream=True,  # type: ignore[list-item]
            )
            done = [e async for e in answer][-1]
            assert done.type == "response.completed"
            text = done.response.output_text
        else:
            message = await claude.messages.create(  # type: ignore[assignment]
                model=MODEL,
                max_tokens=100,
                messages=TOOL_LOOP,  # type: ignore[arg-type]
                tools=[TOOL],  # type: ignore[list-item]
            )
            response = await oa.responses.create(
                model=MODEL,
                input=RESPONSES_LOOP,
                tools=[RESPONSES_TOOL],  # type: ignore[list-item]
            )
            text = response.output_text
    assert message.content[0].text == "It says hello."  # type: ignore[union-attr]
    assert text == "It says hello."
    for request in fake.requests:
        sent = request.json()["messages"]
        calling = next(m for m in sent if m["role"] == "assistant")
        assert "content" not in calling
        assert calling["tool_calls"]
        assert all(isinstance(m["content"], str) for m in sent if "content" in m)
    assert fake.requests[0].json()["messages"][0]["content"] == "Read a.txt\nThen"


async def test_streamed_usage_is_estimated_never_zero(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "usage.db"
    fake = await local(nursery)
    text = "The quick brown fox jumps over the lazy dog, twice: and then it rests."
    fake.default = Script(text=text)
    async with trio.open_nursery() as inner:
        gateway = await start_gateway(inner, config(fake, path))
        oa, claude = clients(gateway)
        async with oa, claude:
            async with claude.messages.stream(
                model=MODEL,
                max_tokens=100,
                messages=HI,
                extra_headers={"x-request-id": "anthropic"},
            ) as events:
                message = await events.get_final_message()
            stream = await oa.chat.completions.create(
                model=MODEL,
                messages=HI,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-request-id": "openai"},
            )
            chunks = [chunk async for chunk in stream]
            answered = await oa.responses.create(
                model=MODEL, input="Hi", stream=True, extra_headers={"x-request-id": "responses"}
            )
            done = [e async for e in answered][-1]
        inner.cancel_scope.cancel()
    # converted streams: the client's final usage event carries the estimate
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert done.type == "response.completed"
    assert done.response.usage is not None
    assert done.response.usage.output_tokens == message.usage.output_tokens
    # forwarded: the client's stream is the server's (no usage chunk); the ledger has the estimate
    assert all(chunk.usage is None for chunk in chunks)
    ledger = rows(path)
    server_output = fake.counted[0][1]
    for request_id in ("anthropic", "openai", "responses"):
        row = ledger[request_id]
        assert row["estimated"] == 1, request_id
        assert row["input_tokens"] > 0, request_id
        assert row["output_tokens"] == server_output, request_id  # one token a chunk
    assert ledger["anthropic"]["output_tokens"] == message.usage.output_tokens


async def test_an_interrupted_stream_is_an_error_for_the_client_and_the_ledger(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "usage.db"
    fake = await local(nursery)
    long = Script(text=" ".join(["word"] * 40), interval=0.02)
    async with trio.open_nursery() as inner:
        gateway = await start_gateway(inner, config(fake, path))
        oa, claude = clients(gateway)
        failures: dict[str, Exception] = {}
        async with oa, claude:
            for dialect in ("openai", "anthropic", "responses"):
                fake.script(long, Script(text="I came later."))
                first = trio.Event()

                async def read(dialect: str = dialect, first: trio.Event = first) -> None:
                    try:
                        if dialect == "openai":
                            stream = await oa.chat.completions.create(
                                model=MODEL, messages=HI, stream=True,
                                extra_headers={"x-request-id": dialect},
                            )  # fmt: skip
                            async for _ in stream:
                                first.set()
                        elif dialect == "anthropic":
                            async with claude.messages.stream(
                                model=MODEL, max_tokens=100, messages=HI,
                                extra_headers={"x-request-id": dialect},
                            ) as events:  # fmt: skip
                                async for _ in events:
                                    first.set()
                        else:
                            answered = await oa.responses.create(
                                model=MODEL, input="Hi", stream=True,
                                extra_headers={"x-request-id": dialect},
                            )  # fmt: skip
                            async for event in answered:
                                first.set()
                                if event.type == "response.failed":
                                    raise RuntimeError(event.response.error)
                    except (openai.APIError, anthropic.APIError, RuntimeError) as exc:
                        failures[dialect] = exc

                async with trio.open_nursery() as pair:
                    pair.start_soon(read)
                    await first.wait()
                    await oa.chat.completions.create(model=MODEL, messages=HI)  # interrupts it
                assert dialect in failures
        inner.cancel_scope.cancel()
    ledger = rows(path)
    for dialect in ("openai", "anthropic", "responses"):
        row = ledger[dialect]
        assert (row["status"], row["error_type"]) == (502, "api_error"), dialect
        assert row["estimated"] == 1, dialect
        assert row["output_tokens"] > 0, dialect


async def test_responses_clients_get_raw_arguments_and_honest_statuses(
    nursery: trio.Nursery,
) -> None:
    fake = await local(nursery)
    gateway = await start_gateway(nursery, config(fake))
    oa, _ = clients(gateway)
    fake.script(
        Script(text="", tool_calls=(FakeToolCall(name="read_file", arguments="path=a.txt"),)),
        Script(text="cut short here", finish_reason="length"),
    )
    async with oa:
        called = await oa.responses.create(model=MODEL, input="Read a.txt", tools=[RESPONSES_TOOL])  # type: ignore[list-item]
        cut = await oa.responses.create(model=MODEL, input="Hi")
    call = called.output[0]
    assert call.type == "function_call"
    assert call.arguments == "path=a.txt"
    assert cut.status == "incomplete"
    assert cut.output[0].type == "message"
    assert cut.output[0].status == "incomplete"


def _mixed(number: int) -> tuple[str, dict[str, Any], bool]:
    """Request ``number`` of the mixed run: (path, body, good). Every tenth is bad, in turn one of
    the ways a local server fails a request that is at fault alone."""
    long = {"max_tokens": 4096}
    if number % 10 == 9:
        bad: list[tuple[str, dict[str, Any]]] = [
            ("/v1/chat/completions", BAD),
            ("/v1/chat/completions", {"model": MODEL, "messages": HI, "tools": []}),
            ("/v1/chat/completions", {"model": MODEL, "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}),
            ("/v1/chat/completions", {"model": MODEL, "messages": HI, "stream": True, **long}),
            ("/v1/messages", {"model": MODEL, "messages": HI, "stream": True, **long}),
            ("/v1/chat/completions", {"model": MODEL, "messages": [*HI, {
                "role": "assistant", "content": None, "tool_calls": [{
                    "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}),
            ("/v1/messages", {"model": MODEL, "messages": HI, **long}),
        ]  # fmt: skip
        path, body = bad[(number // 10) % len(bad)]
        return path, {"max_tokens": 100, **body} if path == "/v1/messages" else body, False
    good: list[tuple[str, dict[str, Any]]] = [
        ("/v1/chat/completions", {"model": MODEL, "messages": HI}),
        ("/v1/chat/completions", {"model": MODEL, "messages": HI, "stream": True}),
        ("/v1/messages", {"model": MODEL, "max_tokens": 100, "messages": TOOL_LOOP, "tools": [TOOL]}),
        ("/v1/messages", {"model": MODEL, "max_tokens": 100, "messages": HI, "stream": True}),
        ("/v1/responses", {"model": MODEL, "input": RESPONSES_LOOP, "tools": [RESPONSES_TOOL]}),
        ("/v1/responses", {"model": MODEL, "input": "Hi", "stream": True}),
    ]  # fmt: skip
    path, body = good[number % len(good)]
    return path, body, True


async def test_two_hundred_mixed_requests_with_one_in_ten_bad(nursery: trio.Nursery) -> None:
    fake = await local(nursery, interrupt_requests=False)  # several clients: no interruptions
    gateway = await start_gateway(nursery, config(fake))
    outcomes: dict[int, tuple[bool, int, str]] = {}
    # 8 in flight, started in order (trio runs ready tasks in no fixed order: tasks queued on a
    # semaphore could let the bad ones through together): one bad request in ten, as clients send
    limit = trio.Semaphore(8)
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "x-api-key": CLIENT_KEY}

    async def send(h: httpx.AsyncClient, number: int) -> None:
        path, body, good = _mixed(number)
        try:
            answer = await h.post(gateway.url + path, json=body, headers=headers)
        finally:
            limit.release()
        outcomes[number] = (good, answer.status_code, answer.text)

    async with httpx.AsyncClient(timeout=30) as h, trio.open_nursery() as requests:
        for number in range(200):
            await limit.acquire()
            requests.start_soon(send, h, number)
    assert len(outcomes) == 200
    bad = [n for n, (good, _, _) in outcomes.items() if not good]
    assert len(bad) == 20
    assert all(400 <= outcomes[n][1] < 600 and outcomes[n][1] != 429 for n in bad)
    for number, (good, status, text) in outcomes.items():
        if good:
            assert status == 200, (number, text[:300])
            for failure in ('data: {"error"', "event: error", "response.failed"):
                assert failure not in text, (number, text[:300])
