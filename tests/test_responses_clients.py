"""The real Responses API clients against proxycast: the OpenAI Agents SDK running an agent with a tool,
and Codex CLI (``codex exec``) completing a task that needs one tool call, each against a scripted
OpenAI-compatible (chat-only), Anthropic and Gemini upstream."""

from __future__ import annotations

import asyncio  # noqa: TID251 - the Agents SDK is an asyncio library
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest
import trio
from agents import (
    Agent,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from proxycast.config import Config, ProviderConfig, ServerConfig
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
from tests.support import CLIENT_KEY, UPSTREAM_KEY, Gateway, start_gateway

if TYPE_CHECKING:
    from collections.abc import Callable

MODEL = "the-model"
CODEX_DIR = Path(__file__).parent / "codex"


def scripts(kind: str, name: str, args: dict[str, Any], text: str) -> tuple[Any, Any]:
    """A tool call, then a text answer, in the upstream's own format."""
    if kind == "openai":
        call = FakeToolCall(name=name, arguments=json.dumps(args), id="call_1")
        return Script(text="", tool_calls=(call,)), Script(text=text)
    if kind == "anthropic":
        return (
            AnthropicScript(blocks=(fa.ToolUse(name, args, id="toolu_1"),)),
            AnthropicScript(blocks=(fa.Text(text),)),
        )
    return GeminiScript(parts=(fg.Call(name, args),)), GeminiScript(parts=(fg.Text(text),))


FAKES: dict[str, Callable[[], FakeUpstream[Any]]] = {
    "openai": FakeOpenAI,
    "anthropic": FakeAnthropic,
    "gemini": FakeGemini,
}


async def gateway_for(
    nursery: trio.Nursery, kind: str, responses: bool = False
) -> tuple[Gateway, FakeUpstream[Any]]:
    fake = FAKES[kind]()
    await nursery.start(fake.serve)
    provider = ProviderConfig(
        name="up",
        type=kind,
        base_url=fake.base_url,
        api_keys=(UPSTREAM_KEY,),
        models=(MODEL,),
        responses=responses,
    )
    config = Config(server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(provider,))
    return await start_gateway(nursery, config), fake


KINDS = [pytest.param(k, id=f"{k}-upstream") for k in ("openai", "anthropic", "gemini")]


@pytest.mark.parametrize("kind", KINDS)
async def test_agents_sdk_runs_an_agent_with_a_tool(nursery: trio.Nursery, kind: str) -> None:
    gateway, fake = await gateway_for(nursery, kind)
    fake.script(*scripts(kind, "get_weather", {"city": "Paris"}, "It is sunny in Paris."))
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"sunny-in-{city}"

    async def run() -> Any:
        set_tracing_disabled(True)
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as client:
            agent = Agent(
                name="weather",
                instructions="Answer with the tool.",
                tools=[get_weather],
                model=OpenAIResponsesModel(model=MODEL, openai_client=client),
            )
            return await Runner.run(
                agent, "Weather in Paris?", run_config=RunConfig(tracing_disabled=True)
            )

    # The Agents SDK runs on asyncio: in a thread of its own, with its own event loop.
    result = await trio.to_thread.run_sync(asyncio.run, run())
    assert result.final_output == "It is sunny in Paris."
    assert asked == ["Paris"]
    assert "sunny-in-Paris" in fake.requests[-1].body.decode()


@pytest.fixture(name="codex", scope="session")
def _codex() -> Path:
    """Codex CLI from npm (``tests/codex/package.json``), installed once and kept in
    ``tests/codex/node_modules``."""
    binary = CODEX_DIR / "node_modules" / ".bin" / "codex"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install Codex CLI for its test")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CODEX_DIR,
            check=True,
            timeout=600,
        )
    return binary


CODEX_CONFIG = """
model = "{model}"
model_provider = "proxycast"
check_for_update_on_startup = false

[model_providers.proxycast]
name = "proxycast"
base_url = "{url}"
env_key = "PROXYCAST_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""


def codex_env(home: Path, tmp_path: Path) -> dict[str, str]:
    """Codex's environment: its home, the gateway's key, and no network but loopback."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "CODEX_", "ANTHROPIC_", "GEMINI_"))
    }
    env.update(
        CODEX_HOME=str(home),
        HOME=str(tmp_path),
        PROXYCAST_API_KEY=CLIENT_KEY,
        # Off the network: anything but the gateway goes to a proxy that is not there.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        ALL_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


async def run_codex(codex: Path, work: Path, env: dict[str, str], prompt: str) -> Any:
    with trio.fail_after(120):
        return await trio.run_process(
            [
                str(codex),
                "exec",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                "--cd",
                str(work),
                prompt,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


WS_KINDS = [
    pytest.param(k, r, id=f"{k}{'-responses' if r else ''}-upstream")
    for k, r in (("openai", False), ("openai", True), ("anthropic", False), ("gemini", False))
]


@pytest.mark.parametrize(("kind", "responses"), WS_KINDS)
async def test_codex_over_a_websocket(
    nursery: trio.Nursery,
    kind: str,
    responses: bool,
    codex: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Codex with ``supports_websockets = true`` on its provider: every turn over one WebSocket
    (the access log's ``WS /v1/responses`` lines; none over HTTP, so no fallback), the tool's
    output back up, the answer printed. Its time is printed, not asserted."""
    gateway, fake = await gateway_for(nursery, kind, responses)
    work = tmp_path / "work"
    work.mkdir()
    (work / "note.txt").write_text("proxycast-note-42\n")
    home = tmp_path / "codex-home"
    home.mkdir()
    config = CODEX_CONFIG.format(model=MODEL, url=gateway.v1) + "supports_websockets = true\n"
    (home / "config.toml").write_text(config)
    fake.script(
        *scripts(kind, "exec_command", {"cmd": "cat note.txt"}, "The note says proxycast-note-42.")
    )
    started = time.monotonic()
    result = await run_codex(codex, work, codex_env(home, tmp_path), "What does note.txt say?")
    took = time.monotonic() - started
    log = capfd.readouterr().err
    with capfd.disabled():  # the figure, seen with -s
        print(
            f"\ncodex exec over a WebSocket, {kind}{' responses' if responses else ''}: {took:.2f} s"
        )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "The note says proxycast-note-42." in result.stdout.decode(), output
    assert log.count('"WS /v1/responses" status=200') >= 2, log
    assert '"POST /v1/responses"' not in log, log
    bodies = [r.body.decode() for r in fake.requests]
    assert any("proxycast-note-42" in body for body in bodies)
    # Codex's warm-up (generate: false) is answered by the gateway, or by a Responses upstream
    assert len(bodies) == (3 if responses else 2), bodies


@pytest.mark.parametrize("kind", KINDS)
async def test_codex_exec_completes_a_task_with_one_tool_call(
    nursery: trio.Nursery, kind: str, codex: Path, tmp_path: Path
) -> None:
    gateway, fake = await gateway_for(nursery, kind)
    work = tmp_path / "work"
    work.mkdir()
    (work / "note.txt").write_text("proxycast-note-42\n")
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(CODEX_CONFIG.format(model=MODEL, url=gateway.v1))
    fake.script(
        *scripts(kind, "exec_command", {"cmd": "cat note.txt"}, "The note says proxycast-note-42.")
    )
    started = time.monotonic()
    result = await run_codex(codex, work, codex_env(home, tmp_path), "What does note.txt say?")
    print(f"\ncodex exec over HTTP, {kind}: {time.monotonic() - started:.2f} s")
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "The note says proxycast-note-42." in result.stdout.decode(), output
    bodies = [r.body.decode() for r in fake.requests]
    assert len(bodies) >= 2, output
    # the command ran, and its output went back up as the tool's result
    assert "proxycast-note-42" in bodies[1]
