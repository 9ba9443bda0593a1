"""The real Gemini CLI (npm ``@google/gemini-cli``), non-interactive (``gemini -p ... -m MODEL``),
through the gateway to each kind of upstream: "say hi", and its ``read_file`` tool on a file it must
really read, then the final text. And with a wrong key, a prompt exit with the 401's message.

The CLI is installed once into ``tests/clients/gemini_cli/node_modules`` (a pinned version). Its
settings select API-key auth, trust the workspace and turn telemetry and updates off; its HOME is
temporary, and its only peer is the gateway (``GOOGLE_GEMINI_BASE_URL``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from proxycast.testing import (
    AnthropicScript,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    FakeToolCall,
    GeminiScript,
    Script,
)
from proxycast.testing import anthropic as fake_anthropic
from proxycast.testing import gemini as fake_gemini
from tests.support import CLIENT_KEY, npm_client, one_provider, start_gateway

if TYPE_CHECKING:
    import subprocess

    from proxycast.testing import FakeUpstream

CLIENT_DIR = Path(__file__).parent / "clients" / "gemini_cli"
MODELS = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4o", "gemini": "gemini-2.5-flash"}
SECRET = "the-note-says-3f9c"
FINAL = "The note reads the-note-says-3f9c. Done."
SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "telemetry": {"enabled": False},
    "privacy": {"usageStatisticsEnabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
}


@pytest.fixture(name="gemini_cli", scope="session")
def _gemini_cli() -> Path:
    """The ``gemini`` executable, installed from npm once (the pinned version in package.json)."""
    return npm_client(CLIENT_DIR, "gemini", "Gemini CLI")


async def run_gemini(
    gemini: Path, base_url: str, key: str, workdir: Path, prompt: str, model: str
) -> subprocess.CompletedProcess[bytes]:
    home = workdir / "home"
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(SETTINGS))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GEMINI_API_KEY": key,
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "NO_COLOR": "1",
        "CI": "1",
    }
    with trio.fail_after(120):
        return await trio.run_process(
            [str(gemini), "-p", prompt, "-m", model],
            cwd=workdir,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def _scripted(kind: str, note: Path | None) -> FakeUpstream[Any]:
    """A fake of ``kind`` that answers with a ``read_file`` of ``note`` (when given), then text."""
    fake: FakeUpstream[Any]
    arguments = {"file_path": str(note)}
    if kind == "anthropic":
        fake = FakeAnthropic(AnthropicScript(blocks=(fake_anthropic.Text(FINAL),)))
        if note is not None:
            use = fake_anthropic.ToolUse("read_file", arguments)
            fake.script(AnthropicScript(blocks=(fake_anthropic.Thinking("Read it first."), use)))
    elif kind == "openai":
        fake = FakeOpenAI(Script(text=FINAL))
        if note is not None:
            call = FakeToolCall(name="read_file", arguments=json.dumps(arguments))
            fake.script(Script(text="", tool_calls=(call,)))
    else:
        fake = FakeGemini(GeminiScript(parts=(fake_gemini.Text(FINAL),)))
        if note is not None:
            signed = fake_gemini.Call("read_file", arguments, thought_signature="c2lnLWNsaQ==")
            fake.script(GeminiScript(parts=(signed,)))
    return fake


def _generations(fake: FakeUpstream[Any]) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and "count" not in r.path.lower()]


@pytest.mark.parametrize("kind", ["anthropic", "openai", "gemini"])
async def test_the_gemini_cli_says_hi(
    nursery: trio.Nursery, gemini_cli: Path, tmp_path: Path, kind: str
) -> None:
    fake = _scripted(kind, None)
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider(kind, fake.base_url, (MODELS[kind],)))
    result = await run_gemini(gemini_cli, gateway.url, CLIENT_KEY, tmp_path, "say hi", MODELS[kind])
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert FINAL in result.stdout.decode()
    assert _generations(fake), [r.path for r in fake.requests]


@pytest.mark.parametrize("kind", ["anthropic", "openai", "gemini"])
async def test_the_gemini_cli_reads_a_file_then_answers(
    nursery: trio.Nursery, gemini_cli: Path, tmp_path: Path, kind: str
) -> None:
    note = tmp_path / "note.txt"
    note.write_text(f"{SECRET}\n")
    fake = _scripted(kind, note)
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider(kind, fake.base_url, (MODELS[kind],)))
    result = await run_gemini(
        gemini_cli,
        gateway.url,
        CLIENT_KEY,
        tmp_path,
        "Read note.txt and tell me what it says.",
        MODELS[kind],
    )
    output = result.stdout.decode() + result.stderr.decode()
    generations = _generations(fake)
    assert result.returncode == 0, output
    assert FINAL in result.stdout.decode()
    # the first answer was the tool call; a later request carried what the tool read
    assert len(generations) >= 2, [r.path for r in fake.requests]
    assert SECRET not in generations[0].body.decode()
    assert SECRET in generations[-1].body.decode()


async def test_the_gemini_cli_with_a_wrong_key_exits_with_the_401(
    nursery: trio.Nursery, gemini_cli: Path, tmp_path: Path
) -> None:
    fake = FakeAnthropic()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("anthropic", fake.base_url, ("claude-*",)))
    started = trio.current_time()
    result = await run_gemini(
        gemini_cli, gateway.url, "not-the-key", tmp_path, "Hi", MODELS["anthropic"]
    )
    elapsed = trio.current_time() - started
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode != 0
    assert "Incorrect API key" in output or "401" in output, output
    assert elapsed < 60, f"took {elapsed:.1f} s"
    assert fake.requests == []
