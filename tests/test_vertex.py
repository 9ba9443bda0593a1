"""Google Vertex AI upstreams (``type = "vertex"``) through the real gateway and FakeVertex: every
dialect's SDK to Gemini and to Claude on Vertex, streamed and not, with tools; a service account's
tokens (signed assertions, refreshed before they expire, one refresh in flight under concurrency), a
user's refresh token, static tokens, a wrong key; ``proxycast check`` naming a missing project or
location, and ``check --online`` listing the publisher models."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import httpx
import openai
import pytest
import trio

from proxycast import formats
from proxycast.config import Config, ProviderConfig, ServerConfig, check_config, load_config
from proxycast.errors import ConfigError
from proxycast.formats import internal
from proxycast.formats.vertex import credentials
from proxycast.testing import AnthropicScript, FakeVertex, GeminiScript
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from proxycast.upstream.diagnostics import no_providers_hint
from tests.support import CLIENT_KEY, Gateway, start_gateway
from tests.test_claude_code import FINAL, SECRET, run_claude
from tests.test_claude_code import _claude as _claude  # the claude fixture
from tests.test_contract import CLIENTS

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

GEMINI = "gemini-2.5-flash"
CLAUDE = "claude-sonnet-4-5@20250929"
PUBLISHERS = {GEMINI: "google", CLAUDE: "anthropic"}
VERTEX_CLAUDE = {
    # Claude's dated names -> their Vertex ids (as docs/configuration.md has users map them); the
    # undated ones (claude-opus-4-8, Claude Code's default) are the same on Vertex
    "claude-sonnet-4-5-20250929": "claude-sonnet-4-5@20250929",
    "claude-opus-4-5-20251101": "claude-opus-4-5@20251101",
    "claude-haiku-4-5-20251001": "claude-haiku-4-5@20251001",
}
HI = internal.Conversation(messages=(internal.Message("user", (internal.Text("Hi"),)),))


def _script(model: str, text: str) -> GeminiScript | AnthropicScript:
    if model == CLAUDE:
        return AnthropicScript(blocks=(fa.Text(text),))
    return GeminiScript(parts=(fg.Text(text),))


def _tool(model: str, name: str, args: dict[str, Any]) -> GeminiScript | AnthropicScript:
    if model == CLAUDE:
        return AnthropicScript(blocks=(fa.ToolUse(name, args, id="toolu_1"),))
    return GeminiScript(parts=(fg.Call(name, args),))


def vertex_provider(fake: FakeVertex, **settings: Any) -> ProviderConfig:
    return ProviderConfig(
        name="vertex",
        type="vertex",
        base_url=fake.base_url,
        project=fake.project,
        location=fake.location,
        models=("gemini-*", "claude-*"),
        **settings,
    )


def gateway_config(provider: ProviderConfig, **extra: Any) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(provider,), **extra
    )


@pytest.fixture(name="vertex")
async def _vertex(nursery: trio.Nursery) -> FakeVertex:
    fake = FakeVertex()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, vertex: FakeVertex, tmp_path: Path) -> Gateway:
    key_file = vertex.service_account_file(tmp_path)
    provider = vertex_provider(vertex, credentials_file=str(key_file))
    return await start_gateway(nursery, gateway_config(provider))


def _generations(fake: FakeVertex) -> list[Any]:
    return [r for r in fake.requests if r.route != "/token"]


# -- every dialect, both publishers ------------------------------------------------------------------


@pytest.mark.parametrize("model", [GEMINI, CLAUDE])
@pytest.mark.parametrize("dialect", sorted(CLIENTS))
async def test_every_dialect_to_both_publishers(
    gateway: Gateway, vertex: FakeVertex, dialect: str, model: str
) -> None:
    client = CLIENTS[dialect](gateway)
    try:
        vertex.script(_script(model, "Hello from Vertex."), _script(model, "One, two, three."))
        assert await client.ask(model) == ("Hello from Vertex.", [])
        assert await client.stream(model) == "One, two, three."
        vertex.script(_tool(model, "get_weather", {"city": "Paris"}), _script(model, "Sunny."))
        _, (call,) = await client.ask(model)
        assert (call.name, call.arguments) == ("get_weather", {"city": "Paris"})
        text, calls = await client.ask(model, client.follow_up(call, "sunny-21-celsius"))
        assert (text, calls) == ("Sunny.", [])
    finally:
        await client.sdk.close()
    sent = _generations(vertex)
    base = f"/v1/projects/fake-project/locations/us-east5/publishers/{PUBLISHERS[model]}/models"
    methods = [r.route.removeprefix(f"{base}/{model}:") for r in sent]
    if model == CLAUDE:
        assert methods == ["rawPredict", "streamRawPredict", "rawPredict", "rawPredict"]
        for request in sent:
            body = request.json()
            assert body["anthropic_version"] == "vertex-2023-10-16"
            assert "model" not in body
    else:
        assert methods == [
            "generateContent",
            "streamGenerateContent",
            "generateContent",
            "generateContent",
        ]
        assert sent[1].query == "alt=sse"
    assert "sunny-21-celsius" in sent[-1].body.decode()
    # one token for the whole conversation, presented as a Bearer token
    assert len(vertex.token_requests) == 1
    tokens = {r.headers["authorization"] for r in sent}
    assert len(tokens) == 1
    assert tokens.pop().startswith("Bearer ya29.fake-")


async def test_count_tokens_on_both_publishers(gateway: Gateway, vertex: FakeVertex) -> None:
    sdk = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "How many tokens is this?"}]
    for model in (CLAUDE, GEMINI):
        counted = await sdk.messages.count_tokens(model=model, messages=messages)
        assert counted.input_tokens > 0
    await sdk.close()
    claude, gemini = _generations(vertex)
    assert claude.route.endswith("/publishers/anthropic/models/count-tokens:rawPredict")
    body = claude.json()
    assert (body["model"], body["anthropic_version"]) == (CLAUDE, "vertex-2023-10-16")
    assert gemini.route.endswith(f"/publishers/google/models/{GEMINI}:countTokens")
    assert (
        gemini.json()["contents"][0]["role"] == "user"
    )  # Vertex's body: no generateContentRequest


async def test_a_claude_stream_error_mid_stream_reaches_the_client(
    gateway: Gateway, vertex: FakeVertex
) -> None:
    vertex.script(AnthropicScript(blocks=(fa.Text("Partial answer here."),), error_after=4))
    sdk = openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)
    stream = await sdk.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match="Overloaded"):
        async for _ in stream:
            pass
    await sdk.close()


# -- credentials ---------------------------------------------------------------------------------


async def _ask_openai(gateway: Gateway, model: str = GEMINI) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            gateway.v1 + "/chat/completions",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
        )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.fixture(name="later")
def _later(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Moves the clock of token lifetimes on by so many seconds."""
    offset = [0.0]
    monkeypatch.setattr(credentials, "monotonic", lambda: time.monotonic() + offset[0])

    def later(seconds: float) -> None:
        offset[0] += seconds

    return later


async def test_a_token_due_for_refresh_is_refreshed_once_while_requests_go_on(
    gateway: Gateway, vertex: FakeVertex, later: Callable[[float], None]
) -> None:
    await _ask_openai(gateway)
    first = _generations(vertex)[-1].headers["authorization"]
    later(3600 - 200)  # due for refresh (300 s early), still valid for 200 s
    vertex.token_gate = gate = trio.Event()  # the token endpoint holds its answer
    answered = trio.Semaphore(0)

    async def ask() -> None:
        await _ask_openai(gateway)
        answered.release()

    before = len(_generations(vertex))
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(ask)
        # one request refreshes (and waits for the token endpoint); the nine others go on with
        # the still-valid token, answered while the refresh is in flight
        with trio.fail_after(30):
            for _ in range(9):
                await answered.acquire()
        assert len(vertex.token_requests) == 2
        assert not gate.is_set()
        gate.set()
        with trio.fail_after(30):
            await answered.acquire()
    assert len(vertex.token_requests) == 2  # exactly one refresh
    sent = _generations(vertex)[before:]
    assert [r.headers["authorization"] for r in sent].count(first) == 9
    assert sent[-1].headers["authorization"] != first  # the refreshed token, after the refresh
    await _ask_openai(gateway)
    assert _generations(vertex)[-1].headers["authorization"] == sent[-1].headers["authorization"]


async def test_an_expired_token_is_refreshed_once_for_concurrent_requests(
    gateway: Gateway, vertex: FakeVertex, later: Callable[[float], None]
) -> None:
    await _ask_openai(gateway)
    later(3601)
    vertex.expire_tokens()  # the fake refuses it now
    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(_ask_openai, gateway)
    assert len(vertex.token_requests) == 2
    assert len({r.headers["authorization"] for r in _generations(vertex)}) == 2


async def test_a_revoked_token_is_refreshed_and_the_request_sent_again(
    gateway: Gateway, vertex: FakeVertex
) -> None:
    await _ask_openai(gateway)
    vertex.expire_tokens()  # before its time, as a revoked token is
    vertex.script(_script(CLAUDE, "Still here."))
    assert await _ask_openai(gateway, CLAUDE) == "Still here."
    assert len(vertex.token_requests) == 2
    refused, sent = _generations(vertex)[-2:]
    assert refused.route == sent.route
    assert refused.body == sent.body
    assert refused.headers["authorization"] != sent.headers["authorization"]


async def test_application_default_credentials_of_a_user(
    nursery: trio.Nursery, vertex: FakeVertex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vertex.user_file(tmp_path)  # where gcloud writes it, under CLOUDSDK_CONFIG
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    gateway = await start_gateway(nursery, gateway_config(vertex_provider(vertex)))
    vertex.script(_script(CLAUDE, "Hi from ADC."))
    assert await _ask_openai(gateway, CLAUDE) == "Hi from ADC."
    (token,) = vertex.token_requests
    assert b"grant_type=refresh_token" in token.body
    assert _generations(vertex)[0].headers["x-goog-user-project"] == vertex.project


async def test_user_credentials_without_a_quota_project_are_refused(
    nursery: trio.Nursery, vertex: FakeVertex, tmp_path: Path
) -> None:
    key_file = vertex.user_file(tmp_path, quota_project=False)
    provider = vertex_provider(vertex, credentials_file=str(key_file))
    gateway = await start_gateway(nursery, gateway_config(provider))
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            gateway.v1 + "/chat/completions",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": GEMINI, "messages": [{"role": "user", "content": "Hi"}]},
        )
    assert response.status_code == 502
    assert "x-goog-user-project" not in _generations(vertex)[0].headers


async def test_static_access_tokens(nursery: trio.Nursery, vertex: FakeVertex) -> None:
    token = vertex.issue_token()  # as `gcloud auth print-access-token` prints it
    provider = vertex_provider(vertex, api_keys=(token,))
    gateway = await start_gateway(nursery, gateway_config(provider))
    assert await _ask_openai(gateway) == "Hello from Gemini."
    assert vertex.token_requests == []
    assert _generations(vertex)[0].headers["authorization"] == f"Bearer {token}"


async def test_a_key_the_token_endpoint_does_not_know_is_refused(
    nursery: trio.Nursery, vertex: FakeVertex, tmp_path: Path
) -> None:
    stranger = FakeVertex()  # another key pair, same account name and token endpoint
    info = {**stranger.service_account_info(), "token_uri": vertex.token_uri}
    info["client_email"] = vertex.client_email
    key_file = tmp_path / "other.json"
    key_file.write_text(json.dumps(info))
    provider = vertex_provider(vertex, credentials_file=str(key_file))
    gateway = await start_gateway(nursery, gateway_config(provider))
    sdk = openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info_:
        await sdk.chat.completions.create(
            model=GEMINI, messages=[{"role": "user", "content": "Hi"}]
        )
    await sdk.close()
    assert info_.value.status_code == 502
    assert "Invalid JWT Signature" in str(info_.value)
    assert "PRIVATE KEY" not in str(info_.value)
    assert _generations(vertex) == []  # no model request went without a token


async def test_a_token_vertex_did_not_issue_is_refused(
    nursery: trio.Nursery, vertex: FakeVertex
) -> None:
    provider = vertex_provider(vertex, api_keys=("ya29.not-issued-by-google",))
    gateway = await start_gateway(nursery, gateway_config(provider))
    sdk = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as info:
        await sdk.messages.create(
            model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )
    await sdk.close()
    assert "rejected proxycast's credentials" in str(info.value)
    assert "not-issued" not in str(info.value)


async def test_the_fake_refuses_another_project_and_location(vertex: FakeVertex) -> None:
    token = vertex.issue_token()
    path = "/v1/projects/{}/locations/{}/publishers/google/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {token}"}) as client:
        other_project = await client.post(
            vertex.base_url + path.format("other", "us-east5"), json=body
        )
        other_location = await client.post(
            vertex.base_url + path.format("fake-project", "europe-west1"), json=body
        )
        no_role = await client.post(
            vertex.base_url + path.format("fake-project", "us-east5"),
            json={"contents": [{"parts": [{"text": "Hi"}]}]},
        )
    assert other_project.status_code == 403
    assert other_project.json()["error"]["status"] == "PERMISSION_DENIED"
    assert other_location.status_code == 404
    assert no_role.status_code == 400
    assert "valid role" in no_role.json()["error"]["message"]


# -- the format itself ---------------------------------------------------------------------------


def test_the_base_url_follows_the_location() -> None:
    upstream = formats.UPSTREAMS["vertex"]
    provider = ProviderConfig(name="v", type="vertex", project="p", location="us-east5")
    assert upstream.base_url(provider) == "https://us-east5-aiplatform.googleapis.com"
    provider = attrs.evolve(provider, location="global")
    assert upstream.base_url(provider) == "https://aiplatform.googleapis.com"
    provider = attrs.evolve(provider, base_url="https://vertex.internal/")
    assert upstream.base_url(provider) == "https://vertex.internal"
    bound = upstream.bind(provider)
    request = bound.request_from_internal(HI, CLAUDE)
    assert request.path == (
        "/v1/projects/p/locations/global/publishers/anthropic/models/"
        "claude-sonnet-4-5@20250929:rawPredict"
    )


def test_problems_name_what_is_missing_and_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in (
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no ADC file there
    upstream = formats.UPSTREAMS["vertex"]
    problems = upstream.problems(ProviderConfig(name="v", type="vertex"))
    text = "\n".join(problems)
    assert len(problems) == 3
    for named in (
        "credentials_file",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
    ):
        assert named in text
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-east5")
    assert upstream.problems(ProviderConfig(name="v", type="vertex", api_keys=("t",))) == []
    broken = tmp_path / "sa.json"
    broken.write_text('{"type": "service_account", "client_email": "a@b"}')
    problems = upstream.problems(
        ProviderConfig(name="v", type="vertex", credentials_file=str(broken))
    )
    assert problems == [f"credentials_file: {str(broken)!r} lacks private_key"]
    odd = ProviderConfig(name="v", type="vertex", api_keys=("t",), location="evil.example/x")
    assert upstream.problems(odd) == [
        "location: 'evil.example/x' is not a Vertex AI location (us-east5, europe-west1, global...)"
    ]


def test_a_service_accounts_project_is_taken(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    fake = FakeVertex(project="from-the-key")
    fake.base_url = "http://127.0.0.1:9"
    key_file = fake.service_account_file(tmp_path)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    provider = ProviderConfig(name="v", type="vertex", location="us-east5")
    assert formats.UPSTREAMS["vertex"].problems(provider) == []
    bound = formats.UPSTREAMS["vertex"].bind(provider)
    request = bound.request_from_internal(HI, GEMINI)
    assert request.path.startswith("/v1/projects/from-the-key/locations/us-east5/")
    other = Config(providers=(ProviderConfig(name="g", type="gemini", project="p"),))
    with pytest.raises(ConfigError, match="not a setting of type 'gemini'"):
        check_config(other)


def test_the_credentials_repr_holds_no_secret(tmp_path: Path) -> None:
    fake = FakeVertex()
    fake.base_url = "http://127.0.0.1:9"
    provider = ProviderConfig(
        name="v",
        type="vertex",
        project="p",
        location="l",
        credentials_file=str(fake.service_account_file(tmp_path)),
    )
    (auth,) = formats.UPSTREAMS["vertex"].credentials(provider)
    assert "PRIVATE" not in repr(auth)
    assert "PRIVATE" not in repr(vars(auth))


def test_a_service_account_without_the_gcp_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeVertex()
    fake.base_url = "http://127.0.0.1:9"
    provider = ProviderConfig(
        name="v",
        type="vertex",
        location="us-east5",
        credentials_file=str(fake.service_account_file(tmp_path)),
    )
    monkeypatch.setitem(sys.modules, "google.auth", None)  # google-auth not installed
    monkeypatch.setitem(sys.modules, "google.auth.crypt", None)
    (problem,) = formats.UPSTREAMS["vertex"].problems(provider)
    assert "pip install 'proxycast[gcp]'" in problem


def test_env_only_mode_adds_a_vertex_provider(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeVertex(project="from-the-key")
    fake.base_url = "http://127.0.0.1:9"
    for variable in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake.service_account_file(tmp_path)))
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "global")
    monkeypatch.chdir(tmp_path)
    config = load_config(env=os.environ, generate_key=False)
    (provider,) = config.providers
    assert (provider.type, provider.models) == ("vertex", ("gemini-*", "claude-*"))
    assert provider.url == "https://aiplatform.googleapis.com"
    assert "GOOGLE_APPLICATION_CREDENTIALS and GOOGLE_CLOUD_LOCATION" in no_providers_hint()


# -- the command line ------------------------------------------------------------------------------


async def proxycast(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    """``proxycast`` in a subprocess, with this tree's sources first on the path."""
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "proxycast", *args],
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(tmp_path),
                "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                **env,
            },
            cwd=str(tmp_path),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


def _write_config(tmp_path: Path, provider: str) -> str:
    path = tmp_path / "proxycast.toml"
    path.write_text(f'[server]\napi_keys = ["{CLIENT_KEY}"]\n[[providers]]\n{provider}')
    return str(path)


async def test_check_names_a_missing_project_and_location(tmp_path: Path) -> None:
    config = _write_config(
        tmp_path, 'name = "vertex"\ntype = "vertex"\napi_keys = ["ya29.t"]\nmodels = ["gemini-*"]\n'
    )
    code, out = await proxycast(tmp_path, "check", "--config", config)
    assert code != 0
    assert "GOOGLE_CLOUD_PROJECT" in out or "GOOGLE_CLOUD_LOCATION" in out, out
    code, out = await proxycast(
        tmp_path,
        "check",
        "--config",
        config,
        GOOGLE_CLOUD_PROJECT="p",
    )
    assert code != 0
    assert "no Vertex AI location: set location" in out, out
    assert "GOOGLE_CLOUD_LOCATION" in out
    assert "ya29.t" not in out


async def test_check_online_lists_the_publisher_models(vertex: FakeVertex, tmp_path: Path) -> None:
    vertex.models = ("gemini-2.5-flash", "gemini-2.5-pro", "text-embedding-005")
    key_file = vertex.service_account_file(tmp_path)
    config = _write_config(
        tmp_path,
        f'name = "vertex"\ntype = "vertex"\nbase_url = "{vertex.base_url}"\n'
        f'location = "us-east5"\ncredentials_file = "{key_file}"\nmodels = ["gemini-*"]\n',
    )
    code, out = await proxycast(tmp_path, "check", "--config", config, "--online")
    assert "vertex#0: reachable: 3 models listed" in out, out
    assert code == 0, out
    listing = [r for r in vertex.requests if r.route.startswith("/v1beta1/")]
    assert listing
    assert listing[0].headers["authorization"].startswith("Bearer ya29.fake-")


# -- Claude Code ---------------------------------------------------------------------------------


async def test_claude_code_through_vertex_with_its_default_model(
    nursery: trio.Nursery, vertex: FakeVertex, tmp_path: Path, claude: Path
) -> None:
    note = tmp_path / "note.txt"
    note.write_text(f"{SECRET}\n")
    vertex.anthropic.default = AnthropicScript(blocks=(fa.Text(FINAL),))
    vertex.script(
        AnthropicScript(
            blocks=(
                fa.Thinking("I should read the file."),
                fa.ToolUse("Read", {"file_path": str(note)}),
            )
        )
    )
    key_file = vertex.service_account_file(tmp_path)
    provider = vertex_provider(vertex, credentials_file=str(key_file))
    provider = attrs.evolve(provider, models=("claude-*",))
    gateway = await start_gateway(nursery, gateway_config(provider, aliases=VERTEX_CLAUDE))
    result = await run_claude(
        claude, gateway.url, CLIENT_KEY, tmp_path, "Read note.txt and tell me what it says."
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert FINAL in result.stdout.decode()
    generations = _generations(vertex)
    assert len(generations) >= 2, [r.path for r in vertex.requests]
    base = "/v1/projects/fake-project/locations/us-east5/publishers/anthropic/models/"
    assert generations[0].route == base + "claude-opus-4-8:streamRawPredict"
    assert SECRET not in generations[0].body.decode()
    assert SECRET in generations[-1].body.decode()  # what the Read tool read went back
    assert len(vertex.token_requests) == 1
