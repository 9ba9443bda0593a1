"""Every dialect -> proxycast -> Azure OpenAI (the fake resource), end to end with the official SDKs:
the deployments API and the v1 API, deployments mapped, ``api-version`` and ``api-key`` checked,
Entra ID tokens from azure-identity, Azure's content filter in every dialect, ``proxycast check``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import httpx
import openai
import pytest
import trio
import trio.testing
from google.genai import errors as genai_errors
from google.genai import types

from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.errors import UpstreamCredentialsError
from proxycast.formats.azure import entra
from proxycast.testing import FakeAzure, FakeToolCall, Script
from proxycast.testing import azure as fz
from proxycast.testing._server import fake_vector
from tests.support import CLIENT_KEY, UPSTREAM_KEY, Gateway, collect, start_gateway
from tests.test_contract import CLIENTS, WEATHER_SCHEMA, _GenaiSDK
from tests.test_diagnostics import proxycast as run_proxycast
from tests.test_diagnostics import write_config

if TYPE_CHECKING:
    from pathlib import Path

VERSION = "2025-04-01-preview"
DEPLOYMENTS = {
    "my-gpt4o": "gpt-4o-2024-08-06",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "embedder": "text-embedding-3-small",
}
"""The fake resource's deployments -> the models they run."""
MESSAGES = [{"role": "user", "content": "Hello"}]
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}
]


async def proxycast(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """The CLI in a process of its own, running this tree's proxycast."""
    return await run_proxycast(tmp_path, *args, PYTHONPATH=os.environ.get("PYTHONPATH", ""), **env)


def azure_provider(fake: FakeAzure, **settings: Any) -> ProviderConfig:
    """An azure provider of the fake: gpt-4o on deployment my-gpt4o, embeddings on embedder."""
    options: dict[str, Any] = {
        "base_url": fake.base_url,
        "api_keys": (UPSTREAM_KEY,),
        "api_version": VERSION,
        "deployments": {"gpt-4o": "my-gpt4o", "text-embedding-3-small": "embedder"},
        **settings,
    }
    return ProviderConfig(
        name="azure",
        type="azure",
        models=("gpt-4o", "gpt-4.1*", "text-embedding-3-small"),
        **options,
    )


async def azure_gateway(nursery: trio.Nursery, fake: FakeAzure, **settings: Any) -> Gateway:
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(azure_provider(fake, **settings),),
    )
    return await start_gateway(nursery, config)


@pytest.fixture(name="azure")
async def _azure(nursery: trio.Nursery) -> FakeAzure:
    fake = FakeAzure(deployments=DEPLOYMENTS, api_key=UPSTREAM_KEY)
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, azure: FakeAzure) -> Gateway:
    return await azure_gateway(nursery, azure)


def chat_client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


def deployment_path(deployment: str, operation: str = "chat/completions") -> str:
    return f"/openai/deployments/{deployment}/{operation}?api-version={VERSION}"


# OpenAI chat: forwarded as written to the deployment's URL


async def test_openai_chat_goes_to_the_deployment(gateway: Gateway, azure: FakeAzure) -> None:
    azure.script(Script(text="Hi from Azure."))
    async with chat_client(gateway) as client:
        answer = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hi from Azure."
    assert answer.model == "gpt-4o"  # the client's name, not the deployment's model
    # Azure's additions reach OpenAI clients as Azure's own SDK users see them
    assert answer.model_extra is not None
    assert answer.model_extra["prompt_filter_results"][0]["content_filter_results"] == fz.SAFE
    sent = azure.requests[-1]
    assert sent.path == deployment_path("my-gpt4o")
    assert sent.headers["api-key"] == UPSTREAM_KEY
    assert "authorization" not in sent.headers
    assert sent.json()["model"] == "my-gpt4o"


async def test_a_model_without_a_deployment_entry_is_its_own_deployment(
    gateway: Gateway, azure: FakeAzure
) -> None:
    azure.script(Script(text="Mini here."))
    async with chat_client(gateway) as client:
        answer = await client.chat.completions.create(model="gpt-4.1-mini", messages=MESSAGES)
    assert answer.choices[0].message.content == "Mini here."
    assert azure.requests[-1].path == deployment_path("gpt-4.1-mini")
    # a model with no deployment of its name: Azure's 404, named as such
    async with chat_client(gateway) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-4.1-nano", messages=MESSAGES)
    assert "The API deployment for this resource does not exist" in info.value.message
    assert "/openai/deployments/gpt-4.1-nano/chat/completions" in info.value.message


async def test_openai_chat_streamed_with_tools(gateway: Gateway, azure: FakeAzure) -> None:
    azure.script(
        Script(
            text="Let me look.",
            tool_calls=(FakeToolCall(name="get_weather", arguments='{"city": "Paris"}'),),
        )
    )
    async with chat_client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, tools=TOOLS, stream=True
        )
        chunks, text, calls, finish = await collect(stream)
    assert text == "Let me look."
    assert calls == {
        0: {"id": "call_fake0", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    }
    assert finish == "tool_calls"
    # Azure's opening chunk (no choices: the prompt's filter results) is relayed as Azure sends it
    assert chunks[0].choices == []
    assert chunks[0].model_extra is not None
    assert "prompt_filter_results" in chunks[0].model_extra
    assert all(c.model == "gpt-4o" for c in chunks)
    sent = azure.requests[-1]
    assert sent.path == deployment_path("my-gpt4o")
    assert sent.json()["tools"] == TOOLS


# The other dialects: converted through the internal model to the deployment's chat completions


async def test_anthropic_messages(gateway: Gateway, azure: FakeAzure) -> None:
    azure.script(Script(text="Bonjour."), Script(text="Streamed bonjour.", chunks=4))
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0
    ) as client:
        answer = await client.messages.create(
            model="gpt-4o", max_tokens=50, system="Be brief.", messages=MESSAGES
        )
        async with client.messages.stream(model="gpt-4o", max_tokens=50, messages=MESSAGES) as s:
            streamed = await s.get_final_message()
    assert [b.text for b in answer.content if b.type == "text"] == ["Bonjour."]
    assert answer.stop_reason == "end_turn"
    assert answer.usage.input_tokens == 11
    assert [b.text for b in streamed.content if b.type == "text"] == ["Streamed bonjour."]
    assert streamed.id.endswith("chatcmpl-fake2")  # the answer's id, not the opening chunk's ""
    first, second = azure.requests[-2:]
    assert first.path == second.path == deployment_path("my-gpt4o")
    assert first.json()["messages"][0] == {"role": "system", "content": "Be brief."}
    assert first.json()["max_tokens"] == 50


async def test_responses_converted(gateway: Gateway, azure: FakeAzure) -> None:
    azure.script(Script(text="Converted."), Script(text="Converted, streamed."))
    async with chat_client(gateway) as client:
        answer = await client.responses.create(model="gpt-4o", input="Hello")
        async with client.responses.stream(model="gpt-4o", input="Hello") as events:
            streamed = await events.get_final_response()
    assert answer.output_text == "Converted."
    assert streamed.output_text == "Converted, streamed."
    assert [r.path for r in azure.requests[-2:]] == [deployment_path("my-gpt4o")] * 2


async def test_responses_forwarded_to_azures_responses_api(
    nursery: trio.Nursery, azure: FakeAzure
) -> None:
    gateway = await azure_gateway(nursery, azure, responses=True)
    azure.script(Script(text="From Azure's Responses API."), Script(text="Streamed there."))
    async with chat_client(gateway) as client:
        answer = await client.responses.create(model="gpt-4o", input="Hello")
        async with client.responses.stream(model="gpt-4o", input="Hello") as events:
            streamed = await events.get_final_response()
    assert answer.output_text == "From Azure's Responses API."
    assert answer.model == "gpt-4o"
    assert streamed.output_text == "Streamed there."
    for sent in azure.requests[-2:]:
        assert sent.path == f"/openai/responses?api-version={VERSION}"
        assert sent.json()["model"] == "my-gpt4o"  # the Responses API takes the deployment here
        assert sent.json()["input"] == "Hello"


async def test_responses_input_tokens_are_estimated(
    nursery: trio.Nursery, azure: FakeAzure
) -> None:
    """Azure has no /responses/input_tokens (404 on the v1 API too): counted here, and said so."""
    gateway = await azure_gateway(nursery, azure, responses=True)
    async with chat_client(gateway) as client:
        counted = await client.responses.input_tokens.with_raw_response.count(
            model="gpt-4o", input="How many tokens is this?"
        )
    assert counted.parse().input_tokens > 0
    assert counted.headers["x-proxycast-token-count"] == "estimate"
    assert azure.requests == []


async def test_gemini_clients(gateway: Gateway, azure: FakeAzure) -> None:
    azure.script(Script(text="Gemini client, Azure model."), Script(text="Streamed to Gemini."))
    sdk = _GenaiSDK(gateway)

    def ask() -> tuple[str, str]:
        answer = sdk.client.models.generate_content(
            model="gpt-4o",
            contents="Hello",
            config=types.GenerateContentConfig(max_output_tokens=40),
        )
        stream = sdk.client.models.generate_content_stream(model="gpt-4o", contents="Hello")
        return answer.text or "", "".join(chunk.text or "" for chunk in stream)

    try:
        answered, streamed = await trio.to_thread.run_sync(ask)
    finally:
        await sdk.close()
    assert answered == "Gemini client, Azure model."
    assert streamed == "Streamed to Gemini."
    assert azure.requests[-2].json()["max_tokens"] == 40
    assert [r.path for r in azure.requests[-2:]] == [deployment_path("my-gpt4o")] * 2


# Embeddings: OpenAI's clients forwarded, Gemini's converted, both at the deployment's URL


async def test_embeddings(gateway: Gateway, azure: FakeAzure) -> None:
    async with chat_client(gateway) as client:
        answer = await client.embeddings.create(
            model="text-embedding-3-small", input=["one", "two"], dimensions=4
        )
    assert [len(d.embedding) for d in answer.data] == [4, 4]
    assert answer.model == "text-embedding-3-small"
    sent = azure.requests[-1]
    assert sent.path == deployment_path("embedder", "embeddings")
    assert sent.json()["model"] == "embedder"

    sdk = _GenaiSDK(gateway)
    try:
        embedded = await trio.to_thread.run_sync(
            lambda: sdk.client.models.embed_content(
                model="text-embedding-3-small", contents=["three"]
            )
        )
    finally:
        await sdk.close()
    assert embedded.embeddings is not None
    assert embedded.embeddings[0].values == fake_vector("three")
    sent = azure.requests[-1]
    assert sent.path == deployment_path("embedder", "embeddings")
    assert sent.json()["input"] == ["three"]


# The v1 API: {endpoint}/openai/v1/..., the deployment as the model, no api-version


async def test_the_v1_api(nursery: trio.Nursery, azure: FakeAzure) -> None:
    gateway = await azure_gateway(nursery, azure, api_version="v1", responses=True)
    azure.script(
        Script(text="v1 chat."), Script(text="v1 anthropic."), Script(text="v1 responses.")
    )
    async with chat_client(gateway) as client:
        chat = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        async with anthropic.AsyncAnthropic(
            base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0
        ) as claude:
            message = await claude.messages.create(model="gpt-4o", max_tokens=20, messages=MESSAGES)
        response = await client.responses.create(model="gpt-4o", input="Hello")
        embedded = await client.embeddings.create(model="text-embedding-3-small", input="x")
    assert chat.choices[0].message.content == "v1 chat."
    assert [b.text for b in message.content if b.type == "text"] == ["v1 anthropic."]
    assert response.output_text == "v1 responses."
    assert len(embedded.data) == 1
    paths = [(r.path, r.json()["model"]) for r in azure.requests[-4:]]
    assert paths == [
        ("/openai/v1/chat/completions", "my-gpt4o"),
        ("/openai/v1/chat/completions", "my-gpt4o"),
        ("/openai/v1/responses", "my-gpt4o"),
        ("/openai/v1/embeddings", "embedder"),
    ]


async def test_an_endpoint_copied_with_its_openai_suffix(
    nursery: trio.Nursery, azure: FakeAzure
) -> None:
    gateway = await azure_gateway(nursery, azure, base_url=azure.base_url + "/openai/v1/")
    async with chat_client(gateway) as client:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert azure.requests[-1].path == deployment_path("my-gpt4o")


# What the fake enforces, as Azure does; and what the gateway makes of it


async def test_the_fake_checks_api_version_and_key(azure: FakeAzure) -> None:
    body = {"model": "x", "messages": MESSAGES}
    headers = {"api-key": UPSTREAM_KEY}
    base = azure.base_url + "/openai/deployments/my-gpt4o/chat/completions"
    async with httpx.AsyncClient() as client:
        missing = await client.post(base, json=body, headers=headers)
        unknown = await client.post(base + "?api-version=2099-01-01", json=body, headers=headers)
        dated_v1 = await client.post(
            azure.base_url + f"/openai/v1/chat/completions?api-version={VERSION}",
            json={**body, "model": "my-gpt4o"},
            headers=headers,
        )
        no_key = await client.post(base + f"?api-version={VERSION}", json=body)
        wrong_key = await client.post(
            base + f"?api-version={VERSION}", json=body, headers={"api-key": "nope"}
        )
        stranger = await client.post(
            base + f"?api-version={VERSION}",
            json=body,
            headers={"authorization": "Bearer not-issued"},
        )
        ok = await client.post(base + f"?api-version={VERSION}", json=body, headers=headers)
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": {"code": "404", "message": "Resource not found"}},
    )
    assert (unknown.status_code, unknown.json()["error"]["message"]) == (
        400,
        "API version not supported",
    )
    assert dated_v1.status_code == 400
    assert (no_key.status_code, no_key.json()["error"]["message"]) == (401, fz.WRONG_KEY)
    assert (wrong_key.status_code, wrong_key.json()["error"]["code"]) == (401, "401")
    assert (stranger.status_code, stranger.json()["error"]["message"]) == (401, fz.BAD_TOKEN)
    assert ok.status_code == 200
    assert ok.json()["model"] == "gpt-4o-2024-08-06"  # the deployment's model


async def test_an_unknown_api_version_reaches_the_client(
    nursery: trio.Nursery, azure: FakeAzure
) -> None:
    gateway = await azure_gateway(nursery, azure, api_version="2099-01-01")
    async with chat_client(gateway) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert "API version not supported" in info.value.message


async def test_an_api_version_without_stream_options(
    nursery: trio.Nursery, azure: FakeAzure
) -> None:
    """2024-06-01 (GA) refuses ``stream_options``: streams go without it, their usage estimated."""
    gateway = await azure_gateway(nursery, azure, api_version="2024-06-01")
    azure.script(Script(text="Old but streaming."), Script(text="Converted too."))
    async with chat_client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks, text, _, finish = await collect(stream)
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0
    ) as claude:
        async with claude.messages.stream(model="gpt-4o", max_tokens=20, messages=MESSAGES) as s:
            message = await s.get_final_message()
    assert (text, finish) == ("Old but streaming.", "stop")
    assert all(c.usage is None for c in chunks)  # that version has no usage chunk to give
    assert [b.text for b in message.content if b.type == "text"] == ["Converted too."]
    assert message.usage.output_tokens > 0  # estimated
    for sent in azure.requests[-2:]:
        assert sent.path == "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01"
        assert "stream_options" not in sent.json()
        assert sent.json()["model"] == "my-gpt4o"


async def test_a_rejected_key_is_proxycasts_problem_not_the_clients(
    nursery: trio.Nursery, azure: FakeAzure
) -> None:
    gateway = await azure_gateway(nursery, azure, api_keys=("wrong-azure-key",))
    async with chat_client(gateway) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 502
    assert "rejected proxycast's credentials" in info.value.message
    assert "wrong-azure-key" not in info.value.message


# Azure's content filter, in every dialect


@pytest.mark.parametrize("dialect", sorted(CLIENTS))
async def test_a_filtered_answer_in_every_dialect(
    dialect: str, nursery: trio.Nursery, azure: FakeAzure
) -> None:
    gateway = await azure_gateway(nursery, azure)
    filtered = Script(text="The start of an answer", finish_reason="content_filter")
    azure.script(filtered, filtered)
    client = CLIENTS[dialect](gateway)
    try:
        text, calls = await client.ask("gpt-4o")
        if dialect == "responses":  # the stream ends with response.incomplete, not .completed
            events = await client.sdk.responses.create(model="gpt-4o", input="Hi", stream=True)
            kinds = [event async for event in events]
            streamed = "".join(
                str(e.delta) for e in kinds if e.type == "response.output_text.delta"
            )
            assert kinds[-1].type == "response.incomplete"
        else:
            streamed = await client.stream("gpt-4o")
    finally:
        await client.sdk.close()
    assert (text, calls) == ("The start of an answer", [])
    assert streamed == "The start of an answer"


async def test_a_filtered_answer_says_so(gateway: Gateway, azure: FakeAzure) -> None:
    """The filter's stop, as each dialect names it: OpenAI's ``content_filter``, Anthropic's
    ``refusal``, the Responses API's ``incomplete`` for ``content_filter``, Gemini's ``SAFETY``."""
    filtered = Script(text="Partial", finish_reason="content_filter")
    azure.script(*[filtered] * 6)
    async with chat_client(gateway) as client:
        chat = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        *_, finish = await collect(stream)
        response = await client.responses.create(model="gpt-4o", input="Hello")
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0
    ) as claude:
        message = await claude.messages.create(model="gpt-4o", max_tokens=20, messages=MESSAGES)
        async with claude.messages.stream(model="gpt-4o", max_tokens=20, messages=MESSAGES) as s:
            streamed = await s.get_final_message()
    sdk = _GenaiSDK(gateway)
    try:
        gemini = await trio.to_thread.run_sync(
            lambda: sdk.client.models.generate_content(model="gpt-4o", contents="Hello")
        )
    finally:
        await sdk.close()
    assert chat.choices[0].finish_reason == finish == "content_filter"
    assert chat.choices[0].model_extra is not None
    assert chat.choices[0].model_extra["content_filter_results"] == fz.FILTERED
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "content_filter"
    assert message.stop_reason == streamed.stop_reason == "refusal"
    assert gemini.candidates is not None
    assert gemini.candidates[0].finish_reason == types.FinishReason.SAFETY


@pytest.mark.parametrize("dialect", sorted(CLIENTS))
async def test_a_refused_prompt_in_every_dialect(
    dialect: str, nursery: trio.Nursery, azure: FakeAzure
) -> None:
    gateway = await azure_gateway(nursery, azure)
    azure.script(Script(status=400, error_body=fz.content_filter_error()))
    client = CLIENTS[dialect](gateway)
    try:
        with pytest.raises(
            (openai.APIStatusError, anthropic.APIStatusError, genai_errors.APIError)
        ) as info:
            await client.ask("gpt-4o")
    finally:
        await client.sdk.close()
    assert getattr(info.value, "status_code", getattr(info.value, "code", None)) == 400
    assert "content management policy" in str(info.value)
    assert "filtered: violence (high)" in str(info.value)


# Entra ID: azure-identity's DefaultAzureCredential, its managed identity at the fake


@pytest.fixture(name="managed_identity")
def _managed_identity(azure: FakeAzure, monkeypatch: pytest.MonkeyPatch) -> FakeAzure:
    """An App Service managed identity, served by the fake (what DefaultAzureCredential finds in
    the environment); no other credential of the chain is set up."""
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", azure.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", azure.identity_header)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    return azure


async def test_entra_id_tokens_from_azure_identity(
    nursery: trio.Nursery, managed_identity: FakeAzure
) -> None:
    azure = managed_identity
    gateway = await azure_gateway(nursery, azure, api_keys=())
    azure.script(Script(text="With a token."), Script(text="Again."))
    async with chat_client(gateway) as client:
        first = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        second = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert first.choices[0].message.content == "With a token."
    assert second.choices[0].message.content == "Again."
    (token,) = azure.tokens  # one token, reused by the second request
    token_requests = [r for r in azure.requests if r.route == "/msi/token"]
    assert len(token_requests) == 1
    chats = [r for r in azure.requests if r.route != "/msi/token"]
    assert [r.headers["authorization"] for r in chats] == [f"Bearer {token}"] * 2
    assert all("api-key" not in r.headers for r in chats)


async def test_check_online_with_entra_id(tmp_path: Path, managed_identity: FakeAzure) -> None:
    azure = managed_identity
    config = write_config(
        tmp_path,
        f'[[providers]]\nname = "az"\ntype = "azure"\nbase_url = "{azure.base_url}"\n'
        f'api_version = "{VERSION}"\nmodels = ["gpt-*"]\n',
    )
    env = {
        name: value
        for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_TOKEN_CREDENTIALS")
        if (value := os.environ.get(name))
    }
    code, out, err = await proxycast(tmp_path, "check", "--config", config, "--online", **env)
    assert code == 0, out + err
    assert "az#0: reachable: 3 models listed" in out
    assert [r.route for r in azure.requests] == ["/msi/token", "/openai/deployments"]


@attrs.define
class _Token:
    token: str
    expires_on: int


@attrs.define
class _Credential:
    """azure-core's TokenCredential protocol, counting its calls (each one a token endpoint's
    round trip, which the test holds open with ``gate``)."""

    clock: Callable[[], float]
    calls: int = 0
    gate: trio.Event | None = None

    def get_token(self, *scopes: str, **kwargs: Any) -> _Token:
        assert scopes == (entra.SCOPE,)
        self.calls += 1
        if self.gate is not None:
            trio.from_thread.run(self.gate.wait)  # blocks its worker thread until set
        return _Token(f"token-{self.calls}", int(self.clock()) + 3600)


async def test_token_refresh_one_in_flight_before_expiry() -> None:
    """A token is reused until five minutes before it expires; then one refresh runs, callers
    that still hold a valid token use it meanwhile, and none waits when the token is fresh."""
    now = [1_000_000.0]
    credential = _Credential(clock=lambda: now[0])
    auth = entra.EntraAuth(lambda: credential, clock=lambda: now[0])
    assert await auth.token() == "token-1"
    now[0] += 3600 - entra.REFRESH_BEFORE - 1  # still fresh
    assert await auth.token() == "token-1"
    assert credential.calls == 1
    now[0] += 2  # within five minutes of the expiry: refreshed, once for several callers
    credential.gate = trio.Event()
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append(got, auth.token()))
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(3):  # the refresh is in flight: the still-valid token, at once
            got.append(await auth.token())
        credential.gate.set()
    assert got == ["token-1", "token-1", "token-1", "token-2"]
    assert credential.calls == 2 == auth.refreshes
    assert repr(auth) == "<EntraAuth>"


async def _append(into: list[str], value: Any) -> None:
    into.append(await value)


async def test_expired_token_callers_wait_for_the_one_refresh() -> None:
    now = [1_000_000.0]
    credential = _Credential(clock=lambda: now[0])
    auth = entra.EntraAuth(lambda: credential, clock=lambda: now[0])
    await auth.token()
    now[0] += 4000  # expired: nobody may use it
    credential.gate = trio.Event()
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(lambda: _append(got, auth.token()))
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        credential.gate.set()
    assert got == ["token-2"] * 3
    assert credential.calls == 2


async def test_a_credential_failure_is_a_clear_error() -> None:
    class Failing:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise RuntimeError("DefaultAzureCredential failed to retrieve a token")

    auth = entra.EntraAuth(lambda: Failing())
    with pytest.raises(UpstreamCredentialsError, match="No Entra ID token for Azure OpenAI"):
        await auth.token()


# proxycast check: what an azure provider needs, before any request


async def test_check_names_what_is_missing(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[[providers]]\nname = "az"\ntype = "azure"\napi_keys = ["k"]\nmodels = ["gpt-*"]\n',
    )
    code, out, err = await proxycast(tmp_path, "check", "--config", config)
    assert code != 0
    assert "base_url is required" in out + err
    assert "AZURE_OPENAI_ENDPOINT" in out + err
    config = write_config(
        tmp_path,
        '[[providers]]\nname = "az"\ntype = "azure"\nbase_url = "https://x.openai.azure.com"\n'
        'api_keys = ["k"]\nmodels = ["gpt-*"]\n',
    )
    code, out, err = await proxycast(tmp_path, "check", "--config", config)
    assert code != 0
    assert "api_version is required" in out + err
    assert '"v1"' in out + err
    # OpenAI's AzureOpenAI client reads OPENAI_API_VERSION; so does proxycast
    code, out, err = await proxycast(
        tmp_path, "check", "--config", config, OPENAI_API_VERSION=VERSION
    )
    assert code == 0, out + err


async def test_check_online_lists_models_per_key(tmp_path: Path, azure: FakeAzure) -> None:
    config = write_config(
        tmp_path,
        f'[[providers]]\nname = "az"\ntype = "azure"\nbase_url = "{azure.base_url}"\n'
        f'api_version = "{VERSION}"\napi_keys = ["{UPSTREAM_KEY}", "stale-key-9876"]\n'
        'models = ["gpt-*"]\n'
        f'[[providers]]\nname = "az1"\ntype = "azure"\nbase_url = "{azure.base_url}"\n'
        f'api_version = "v1"\napi_keys = ["{UPSTREAM_KEY}"]\nmodels = ["o*"]\n',
    )
    code, out, err = await proxycast(tmp_path, "check", "--config", config, "--online")
    assert "az#0: reachable: 3 models listed" in out, out + err
    assert "az#1: unauthorised" in out
    assert "az1#0: reachable: 3 models listed" in out
    assert "stale-key-9876" not in out
    assert code == 1
    assert {r.path for r in azure.requests} == {
        "/openai/deployments?api-version=2023-03-15-preview",
        "/openai/v1/models",
    }


async def test_models_listed_are_the_deployments_by_client_name(
    gateway: Gateway, azure: FakeAzure
) -> None:
    async with chat_client(gateway) as client:
        listed = {m.id async for m in client.models.list()}
    # the glob gpt-4.1* lists the deployment of that name; my-gpt4o is listed as gpt-4o, which
    # maps to it (and is configured anyway); "embedder" matches no model of the provider
    assert {"gpt-4o", "gpt-4.1-mini", "text-embedding-3-small"} <= listed
    assert "my-gpt4o" not in listed
    assert "embedder" not in listed


def test_settings_of_another_type_are_refused() -> None:
    from proxycast.config import check_config
    from proxycast.errors import ConfigError

    provider = ProviderConfig(
        name="o", type="openai", api_keys=("k",), models=("m",), deployments={"a": "b"}
    )
    with pytest.raises(ConfigError, match="only of 'azure'"):
        check_config(Config(providers=(provider,)))


def test_secrets_stay_out_of_reprs() -> None:
    from proxycast import formats

    provider = ProviderConfig(
        name="az",
        type="azure",
        base_url="https://x.openai.azure.com",
        api_keys=("very-secret-azure-key",),
        api_version=VERSION,
    )
    upstream = formats.UPSTREAMS["azure"]
    shown = repr(provider) + repr(upstream.credentials(provider)) + repr(upstream.bind(provider))
    assert "very-secret-azure-key" not in shown
    assert json.dumps(shown)


def test_env_only_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxycast.config import load_config
    from proxycast.errors import ConfigError

    env = {
        "AZURE_OPENAI_API_KEY": "azure-env-key",
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/",
        "PROXYCAST_API_KEY": CLIENT_KEY,
    }
    monkeypatch.setenv("OPENAI_API_VERSION", VERSION)
    (provider,) = load_config(env=env).providers
    assert (provider.type, provider.url, provider.api_keys) == (
        "azure",
        "https://res.openai.azure.com",
        ("azure-env-key",),
    )
    monkeypatch.delenv("OPENAI_API_VERSION")
    with pytest.raises(ConfigError, match="api_version is required"):
        load_config(env=env)
