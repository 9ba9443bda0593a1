"""The Gemini API inbound, through Google's own Python SDK (google-genai) and httpx: text, streams
(SSE and Google's JSON array), a function call round trip, thinking carried back to Claude, token
counts, embeddings, the models list, and errors in Google's shape, on OpenAI-compatible, Anthropic
and Gemini upstreams."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.ledger import LedgerConfig
from proxycast.testing import (
    AnthropicScript,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    GeminiScript,
    Script,
)
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from proxycast.testing._server import fake_vector
from proxycast.testing.openai import FakeToolCall
from tests.support import CLIENT_KEY, start_gateway

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from proxycast.testing import FakeUpstream
    from tests.support import Gateway

MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.5-flash"}
EMBEDDING_MODELS = {"openai": ("embed-small",), "gemini": ("text-embedding-004",)}
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="The weather in a city.",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"city": types.Schema(type=types.Type.STRING)},
        required=["city"],
    ),
)


class Upstreams:
    """One fake of each kind behind one gateway; each kind serves the model of MODELS."""

    def __init__(self, openai: FakeOpenAI, anthropic: FakeAnthropic, gemini: FakeGemini) -> None:
        self.fakes: dict[str, FakeUpstream[Any]] = {
            "openai": openai,
            "anthropic": anthropic,
            "gemini": gemini,
        }

    def __getitem__(self, kind: str) -> FakeUpstream[Any]:
        return self.fakes[kind]


def _config(upstreams: Upstreams, **extra: Any) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=tuple(
            ProviderConfig(
                name=kind,
                type=kind,
                base_url=upstreams[kind].base_url,
                api_keys=(f"sk-{kind}-upstream",),
                models=(model, *EMBEDDING_MODELS.get(kind, ())),
            )
            for kind, model in MODELS.items()
        ),
        **extra,
    )


@pytest.fixture(name="upstreams")
async def _upstreams(nursery: trio.Nursery) -> Upstreams:
    fakes = Upstreams(FakeOpenAI(), FakeAnthropic(), FakeGemini())
    for fake in fakes.fakes.values():
        await nursery.start(fake.serve)
    return fakes


@pytest.fixture(name="gemini_gateway")
async def _gemini_gateway(nursery: trio.Nursery, upstreams: Upstreams) -> Gateway:
    return await start_gateway(nursery, _config(upstreams))


def sdk(gateway: Gateway, key: str = CLIENT_KEY, version: str = "v1beta") -> genai.Client:
    return genai.Client(
        api_key=key, http_options=types.HttpOptions(base_url=gateway.url, api_version=version)
    )


async def in_thread(work: Callable[[], Any]) -> Any:
    """The SDK's sync client, off the event loop (its async one runs on asyncio)."""
    return await trio.to_thread.run_sync(work)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("version", ["v1beta", "v1"])
async def test_text_and_stream_on_every_upstream(
    gemini_gateway: Gateway, upstreams: Upstreams, kind: str, version: str
) -> None:
    client = sdk(gemini_gateway, version=version)
    model = MODELS[kind]

    def ask() -> tuple[str, str, Any]:
        reply = client.models.generate_content(model=model, contents="Say hi")
        streamed = "".join(
            chunk.text or ""
            for chunk in client.models.generate_content_stream(model=model, contents="Say hi")
        )
        return reply.text or "", streamed, reply.usage_metadata

    text, streamed, usage = await in_thread(ask)
    expected = {
        "openai": "Hello! How can I help you today?",
        "anthropic": "Hello from Claude.",
        "gemini": "Hello from Gemini.",
    }[kind]
    assert text == streamed == expected
    assert usage.prompt_token_count > 0
    assert usage.total_token_count >= usage.prompt_token_count
    assert len(upstreams[kind].requests) == 2


async def test_to_gemini_the_body_goes_byte_for_byte(
    gemini_gateway: Gateway, upstreams: Upstreams
) -> None:
    body = (
        b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}],  '
        b'"generationConfig": {"temperature": 0.5}, "unknownField": 1}'
    )
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{gemini_gateway.url}/v1beta/models/gemini-2.5-flash:generateContent?key={CLIENT_KEY}",
            content=body,
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 200, answer.text
    sent = upstreams["gemini"].requests[0]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent.body == body
    assert sent.headers["x-goog-api-key"] == "sk-gemini-upstream"  # the key replaced


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
async def test_a_stream_without_alt_sse_is_a_json_array(
    gemini_gateway: Gateway, upstreams: Upstreams, kind: str
) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    url = f"{gemini_gateway.url}/v1beta/models/{MODELS[kind]}:streamGenerateContent"
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, json=body, headers={"x-goog-api-key": CLIENT_KEY})
    assert answer.status_code == 200
    chunks = json.loads(answer.text)
    assert isinstance(chunks, list)
    text = "".join(
        p.get("text", "") for c in chunks for p in c["candidates"][0]["content"].get("parts", [])
    )
    assert text == {"anthropic": "Hello from Claude.", "gemini": "Hello from Gemini."}[kind]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["promptTokenCount"] > 0


def _script_call(upstreams: Upstreams, kind: str) -> None:
    if kind == "openai":
        call = FakeToolCall(name="get_weather", arguments='{"city": "Paris"}', id="call_abc")
        upstreams[kind].script(Script(text="", tool_calls=(call,)), Script(text="Sunny."))
    elif kind == "anthropic":
        use = fa.ToolUse("get_weather", {"city": "Paris"}, id="toolu_abc")
        upstreams[kind].script(
            AnthropicScript(blocks=(use,)), AnthropicScript(blocks=(fa.Text("Sunny."),))
        )
    else:
        signed = fg.Call("get_weather", {"city": "Paris"}, thought_signature="c2lnLWdlbWluaQ==")
        upstreams[kind].script(
            GeminiScript(parts=(signed,)), GeminiScript(parts=(fg.Text("Sunny."),))
        )


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_a_function_call_round_trip(
    gemini_gateway: Gateway, upstreams: Upstreams, kind: str
) -> None:
    _script_call(upstreams, kind)
    client = sdk(gemini_gateway)
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )

    def loop() -> tuple[Any, str]:
        question = types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])
        first = client.models.generate_content(
            model=MODELS[kind], contents=[question], config=config
        )
        assert first.function_calls
        assert first.candidates
        call = first.function_calls[0]
        answer = types.Part.from_function_response(name=call.name, response={"temp": 21})
        answer.function_response.id = call.id
        turn = [question, first.candidates[0].content, types.Content(role="user", parts=[answer])]
        second = client.models.generate_content(model=MODELS[kind], contents=turn, config=config)
        return call, second.text or ""

    call, text = await in_thread(loop)
    assert call.name == "get_weather"
    assert call.args == {"city": "Paris"}
    assert text == "Sunny."
    sent = upstreams[kind].requests[1].json()
    if kind == "openai":
        assert call.id == "call_abc"
        result = sent["messages"][-1]
        assert (result["role"], result["tool_call_id"]) == ("tool", "call_abc")
        assert json.loads(result["content"]) == {"temp": 21}
        assert sent["tools"][0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    elif kind == "anthropic":
        assert call.id == "toolu_abc"
        result = sent["messages"][-1]["content"][0]
        assert (result["type"], result["tool_use_id"]) == ("tool_result", "toolu_abc")
        assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    else:  # forwarded: the signature Gemini issued went back with its call
        model_turn = sent["contents"][1]
        assert model_turn["parts"][0]["thoughtSignature"] == "c2lnLWdlbWluaQ=="
        assert sent["contents"][2]["parts"][0]["functionResponse"]["response"] == {"temp": 21}


@pytest.mark.parametrize("thoughts", [False, True])
async def test_claudes_thinking_comes_back_to_claude(
    gemini_gateway: Gateway, upstreams: Upstreams, thoughts: bool
) -> None:
    """A Gemini client keeps thoughtSignature as opaque bytes: Claude's thinking block rides in it
    and reaches Claude again whole (the fake refuses a signature it did not issue)."""
    anthropic = upstreams["anthropic"]
    thinking = fa.Thinking("Paris is in France.", signature="sig-claude-1")
    use = fa.ToolUse("get_weather", {"city": "Paris"}, id="toolu_1")
    anthropic.script(
        AnthropicScript(blocks=(thinking, use)), AnthropicScript(blocks=(fa.Text("Sunny."),))
    )
    client = sdk(gemini_gateway)
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        thinking_config=types.ThinkingConfig(thinking_budget=2048, include_thoughts=thoughts),
    )

    def loop() -> tuple[list[Any], str]:
        question = types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])
        first = client.models.generate_content(
            model=MODELS["anthropic"], contents=[question], config=config
        )
        answer = types.Part.from_function_response(name="get_weather", response={"temp": 21})
        assert first.function_calls
        assert first.candidates
        answer.function_response.id = first.function_calls[0].id
        content = first.candidates[0].content
        assert content is not None
        assert content.parts is not None
        turn = [question, content, types.Content(role="user", parts=[answer])]
        second = client.models.generate_content(
            model=MODELS["anthropic"], contents=turn, config=config
        )
        return content.parts, second.text or ""

    parts, text = await in_thread(loop)
    assert text == "Sunny."
    shown = [p.text for p in parts if p.thought and p.text]
    assert shown == (["Paris is in France."] if thoughts else [])
    sent = anthropic.requests[1].json()
    assert sent["thinking"]["type"] == "enabled"
    blocks = sent["messages"][1]["content"]
    assert blocks[0] == {
        "type": "thinking",
        "thinking": "Paris is in France.",
        "signature": "sig-claude-1",
    }
    assert blocks[1]["type"] == "tool_use"
    assert blocks[1]["id"] == "toolu_1"


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_count_tokens(gemini_gateway: Gateway, upstreams: Upstreams, kind: str) -> None:
    client = sdk(gemini_gateway)
    counted = await in_thread(
        lambda: client.models.count_tokens(model=MODELS[kind], contents="one two three four")
    )
    assert counted.total_tokens > 0
    if kind == "gemini":
        assert upstreams[kind].requests[-1].path.endswith(":countTokens")


@pytest.mark.parametrize("kind", ["openai", "gemini"])
async def test_embeddings(gemini_gateway: Gateway, upstreams: Upstreams, kind: str) -> None:
    client = sdk(gemini_gateway)
    model = EMBEDDING_MODELS[kind][0]

    def embed() -> Any:
        return client.models.embed_content(model=model, contents=["one", "two"])

    result = await in_thread(embed)
    vectors = [e.values for e in result.embeddings]
    assert len(vectors) == 2
    assert vectors[0] == pytest.approx(fake_vector("one", len(vectors[0])), abs=1e-6)
    assert vectors[1] == pytest.approx(fake_vector("two", len(vectors[1])), abs=1e-6)
    sent = upstreams[kind].requests[-1]
    path = (
        "/v1/embeddings"
        if kind == "openai"
        else "/v1beta/models/text-embedding-004:batchEmbedContents"
    )
    assert sent.path == path


async def test_embeddings_on_anthropic_are_a_clear_400(gemini_gateway: Gateway) -> None:
    client = sdk(gemini_gateway)
    with pytest.raises(genai_errors.ClientError) as raised:
        await in_thread(
            lambda: client.models.embed_content(model=MODELS["anthropic"], contents="x")
        )
    assert raised.value.code == 400
    assert raised.value.status == "INVALID_ARGUMENT"
    assert "no embeddings API" in (raised.value.message or "")


async def test_models_list_and_get(gemini_gateway: Gateway) -> None:
    client = sdk(gemini_gateway)

    def models() -> tuple[list[Any], Any]:
        return list(client.models.list()), client.models.get(model=MODELS["anthropic"])

    listed, one = await in_thread(models)
    names = {m.name for m in listed}
    assert {f"models/{m}" for m in MODELS.values()} <= names
    assert one.name == f"models/{MODELS['anthropic']}"
    assert "generateContent" in one.supported_actions


async def test_a_wrong_key_is_unauthenticated(gemini_gateway: Gateway) -> None:
    client = sdk(gemini_gateway, key="not-a-key")
    with pytest.raises(genai_errors.ClientError) as raised:
        await in_thread(lambda: client.models.generate_content(model="gpt-4o", contents="hi"))
    assert raised.value.code == 401
    assert raised.value.status == "UNAUTHENTICATED"
    assert "Incorrect API key" in (raised.value.message or "")


async def test_errors_in_googles_shape(gemini_gateway: Gateway, upstreams: Upstreams) -> None:
    upstreams["anthropic"].script(
        *[AnthropicScript(status=429, headers=(("retry-after", "7"),))] * 3
    )
    async with httpx.AsyncClient() as client:
        unknown = await client.post(
            f"{gemini_gateway.url}/v1beta/models/nope:generateContent",
            json={"contents": []},
            headers={"x-goog-api-key": CLIENT_KEY},
        )
        limited = await client.post(
            f"{gemini_gateway.url}/v1beta/models/{MODELS['anthropic']}:generateContent",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": CLIENT_KEY},
        )
        mistyped = await client.post(
            f"{gemini_gateway.url}/v1beta/models/{MODELS['anthropic']}:generateContent",
            json={"contents": "hello"},
            headers={"x-goog-api-key": CLIENT_KEY},
        )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"
    assert limited.status_code == 429
    error = limited.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["retryDelay"] == "7s"
    assert mistyped.status_code == 400
    assert mistyped.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "contents" in mistyped.json()["error"]["message"]


async def test_a_broken_stream_ends_with_googles_error(
    gemini_gateway: Gateway, upstreams: Upstreams
) -> None:
    upstreams["anthropic"].script(
        AnthropicScript(blocks=(fa.Text("one two three four five six"),), error_after=6)
    )
    url = f"{gemini_gateway.url}/v1beta/models/{MODELS['anthropic']}:streamGenerateContent?alt=sse"
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            url,
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": CLIENT_KEY},
        )
    events = [
        json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")
    ]
    assert "error" in events[-1]
    assert events[-1]["error"]["status"] in ("UNAVAILABLE", "INTERNAL")
    assert not any(e.get("candidates", [{}])[0].get("finishReason") for e in events[:-1])


async def test_the_ledger_records_the_gemini_api(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path
) -> None:
    ledger = tmp_path / "usage.db"
    async with trio.open_nursery() as inner:
        gateway = await start_gateway(
            inner, _config(upstreams, ledger=LedgerConfig(url=f"sqlite:///{ledger}"))
        )
        client = sdk(gateway)
        await in_thread(
            lambda: client.models.generate_content(model=MODELS["anthropic"], contents="hi")
        )
        inner.cancel_scope.cancel()
    db = sqlite3.connect(ledger)
    try:
        rows = db.execute(
            "SELECT api, model, provider, status, input_tokens FROM requests"
        ).fetchall()
    finally:
        db.close()
    assert rows == [("gemini", MODELS["anthropic"], "anthropic", 200, 12)]


@pytest.mark.parametrize("alt", ["?alt=sse", ""])
async def test_a_forwarded_stream_cut_off_is_an_error_in_the_ledger(
    upstreams: Upstreams, tmp_path: Path, alt: str
) -> None:
    """Gemini to Gemini, the upstream's connection cut mid-stream: the client's stream ends with
    Google's error object, and the ledger row says that error, not the 200 the stream began with
    (found by bench/chaos.py: the forwarded stream's failure was not kept for the accounting)."""
    ledger = tmp_path / "usage.db"
    upstreams["gemini"].script(
        GeminiScript(parts=(fg.Text("one two three four five six"),), pieces=6, drop_after=2)
    )
    url = f"/v1beta/models/{MODELS['gemini']}:streamGenerateContent{alt}"
    async with trio.open_nursery() as inner:
        gateway = await start_gateway(
            inner, _config(upstreams, ledger=LedgerConfig(url=f"sqlite:///{ledger}"))
        )
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            answer = await client.post(
                url,
                json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                headers={"x-goog-api-key": CLIENT_KEY},
            )
        inner.cancel_scope.cancel()
    assert answer.status_code == 200
    if alt:
        last = json.loads(answer.text.strip().splitlines()[-1][len("data: ") :])
    else:
        last = answer.json()[-1]
    assert last["error"]["code"] == 502
    db = sqlite3.connect(ledger)
    try:
        rows = db.execute("SELECT provider, status, error_type FROM requests").fetchall()
    finally:
        db.close()
    assert rows == [("gemini", 502, "api_error")]


@pytest.mark.parametrize(
    ("kind", "dropped"),
    [
        (
            "openai",
            "codeExecution, googleSearch",
        ),  # an offered search: left out of chat completions
        ("anthropic", "codeExecution"),  # Claude runs a search of its own
        ("gemini", None),  # forwarded as it is: Gemini has them all
    ],
)
async def test_built_in_tools_no_upstream_has_are_named(
    gemini_gateway: Gateway, upstreams: Upstreams, kind: str, dropped: str | None
) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "What's new?"}]}],
        "tools": [{"googleSearch": {}}, {"codeExecution": {}}],
    }
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{gemini_gateway.url}/v1beta/models/{MODELS[kind]}:generateContent",
            json=body,
            headers={"x-goog-api-key": CLIENT_KEY},
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers.get("x-proxycast-dropped-tools") == dropped
    sent = upstreams[kind].requests[-1].json()
    if kind == "anthropic":
        assert [t["type"] for t in sent["tools"]] == ["web_search_20250305"]


BAD_BODIES = [
    pytest.param(
        {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"thinkingConfig": "x"}},
        "generationConfig.thinkingConfig",
        id="thinking-config",
    ),
    pytest.param(
        {"contents": [{"parts": [{"text": "hi"}]}], "toolConfig": {"functionCallingConfig": "ANY"}},
        "toolConfig.functionCallingConfig",
        id="function-calling-config",
    ),
    pytest.param(
        {
            "contents": [
                {"parts": [{"functionResponse": {"name": "f", "response": {}, "parts": 5}}]}
            ]
        },
        "contents[0].parts[0].functionResponse.parts",
        id="function-response-parts",
    ),
    pytest.param(
        {"contents": [{"parts": [{"functionCall": "f"}]}]},
        "contents[0].parts[0].functionCall",
        id="function-call",
    ),
    pytest.param({"contents": "hello"}, "contents", id="contents"),
]


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_a_mistyped_field_is_a_400_naming_it_on_every_path(
    gemini_gateway: Gateway, upstreams: Upstreams, kind: str, body: dict[str, Any], field: str
) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{gemini_gateway.url}/v1beta/models/{MODELS[kind]}:generateContent",
            json=body,
            headers={"x-goog-api-key": CLIENT_KEY},
        )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert field in error["message"]
    assert upstreams[kind].requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(":countTokens", {"generateContentRequest": "x"}, id="count-tokens"),
        pytest.param(":batchEmbedContents", {"requests": 5}, id="batch-embeddings"),
    ],
)
async def test_mistyped_requests_to_gemini_are_400s(
    gemini_gateway: Gateway, upstreams: Upstreams, path: str, body: dict[str, Any]
) -> None:
    model = MODELS["gemini"] if "count" in path else EMBEDDING_MODELS["gemini"][0]
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{gemini_gateway.url}/v1beta/models/{model}{path}",
            json=body,
            headers={"x-goog-api-key": CLIENT_KEY},
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert upstreams["gemini"].requests == []


async def _raw_gemini(stream: trio.SocketStream, events: list[bytes]) -> None:
    """A Gemini upstream that answers any request with these SSE pieces."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive_some()
    head, _, body = request.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += await stream.receive_some()
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    )
    for event in events:
        await stream.send_all(event)
    await stream.aclose()


ODD = b'data: {"candidates": [{"content": "oops"}]}\r\n\r\n'
GOOD = b'data: {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}]}\r\n\r\n'
LAST = (
    b'data: {"candidates": [{"content": {"role": "model", "parts": [{"text": "!"}]}, '
    b'"finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 2}}\r\n\r\n'
)


@pytest.mark.parametrize("sse", [True, False])
@pytest.mark.parametrize(
    ("events", "clean"),
    [
        pytest.param([b": keep-alive\r\n\r\n", GOOD, LAST], True, id="keep-alive"),
        pytest.param(
            [GOOD, b'data: {"candidates": [{"content": "oops"}]}\r\n\r\n', LAST],
            True,
            id="odd-chunk",
        ),
        pytest.param([GOOD, b'data: {"candidates": 7}\r\n\r\n', LAST], True, id="odd-candidates"),
        pytest.param([GOOD], False, id="cut-off"),
    ],
)
async def test_a_forwarded_stream_keeps_its_framing_whatever_the_upstream_sends(
    nursery: trio.Nursery, sse: bool, events: list[bytes], clean: bool
) -> None:
    listeners = await nursery.start(trio.serve_tcp, lambda s: _raw_gemini(s, events), 0)
    port = listeners[0].socket.getsockname()[1]
    provider = ProviderConfig(
        name="g", type="gemini", base_url=f"http://127.0.0.1:{port}", models=("gm",)
    )
    config = Config(server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(provider,))
    gateway = await start_gateway(nursery, config)
    query = "?alt=sse" if sse else ""
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{gateway.url}/v1beta/models/gm:streamGenerateContent{query}",
            json={"contents": [{"parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": CLIENT_KEY},
        )
    assert answer.status_code == 200
    if sse:
        assert answer.headers["content-type"].startswith("text/event-stream")
        chunks = [
            json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")
        ]
    else:  # one JSON document, whatever happened
        assert answer.headers["content-type"].startswith("application/json")
        chunks = json.loads(answer.text)
    assert "error" not in chunks[-1] if clean else "error" in chunks[-1]


async def test_a_model_whose_name_holds_a_slash(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            ProviderConfig(
                name="org",
                type="openai",
                base_url=upstreams["openai"].base_url,
                models=("org/gpt",),
            ),
        ),
    )
    gateway = await start_gateway(nursery, config)
    client = sdk(gateway)
    reply = await in_thread(lambda: client.models.generate_content(model="org/gpt", contents="hi"))
    assert reply.text == "Hello! How can I help you today?"
