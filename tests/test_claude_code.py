"""The real Claude Code CLI (npm ``@anthropic-ai/claude-code``), in print mode with its default model
settings, through the gateway to each kind of upstream: one tool call (its Read tool, on a file it
must really read), then the final text. And with a wrong key, a prompt exit with the 401's message.

Through Gemini, the fake answers as Gemini 3 does: the call signed, and the final text part signed
too (streamed, that signature comes after the text): Claude Code shows the last block of the answer,
so the text must stay last.

The CLI is installed once into ``tests/clients/claude_code/node_modules`` (a pinned version; later
runs reuse it). Its environment keeps it off the network: no telemetry, no updater, no non-essential
traffic, a temporary HOME; its only peer is the gateway.
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

CLIENT_DIR = Path(__file__).parent / "clients" / "claude_code"
SECRET = "the-note-says-7d41"
FINAL = "The note reads the-note-says-7d41. Done."
CALL_SIGNATURE = "Q2xhdWRlIENvZGUncyBjYWxs"
TEXT_SIGNATURE = "Q2xhdWRlIENvZGUncyB0ZXh0"


@pytest.fixture(name="claude", scope="session")
def _claude() -> Path:
    """The ``claude`` executable, installed from npm once (the pinned version in package.json)."""
    return npm_client(CLIENT_DIR, "claude", "Claude Code")


def claude_env(base_url: str, key: str, home: Path) -> dict[str, str]:
    """Claude Code's environment: the gateway as its API, and nothing else on the network."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_BUG_COMMAND": "1",
        "CI": "1",
    }


async def run_claude(
    claude: Path, base_url: str, key: str, workdir: Path, prompt: str
) -> subprocess.CompletedProcess[bytes]:
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    with trio.fail_after(90):
        return await trio.run_process(
            [str(claude), "-p", prompt],
            cwd=workdir,
            env=claude_env(base_url, key, home),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def _tool_call(note: Path) -> dict[str, Any]:
    return {"file_path": str(note)}


def _scripted(kind: str, note: Path) -> FakeUpstream[Any]:
    """A fake of ``kind`` that answers Claude Code with a Read of ``note``, then the final text."""
    arguments = _tool_call(note)
    fake: FakeUpstream[Any]
    if kind == "anthropic":
        fake = FakeAnthropic(AnthropicScript(blocks=(fake_anthropic.Text(FINAL),)))
        # Claude Code asks for (adaptive) thinking, so Claude answers a tool call after a thinking block,
        # which Claude Code must send back on the next turn (the fake enforces Claude's rule)
        fake.script(
            AnthropicScript(
                blocks=(
                    fake_anthropic.Thinking("I should read the file."),
                    fake_anthropic.ToolUse("Read", arguments),
                )
            )
        )
    elif kind == "openai":
        fake = FakeOpenAI(Script(text=FINAL))
        call = FakeToolCall(name="Read", arguments=json.dumps(arguments))
        fake.script(Script(text="", tool_calls=(call,)))
    else:
        # as Gemini 3 answers: the call signed, and the text part signed too (streamed, the text's
        # signature comes last, on an empty text part)
        final = fake_gemini.Text(FINAL, thought_signature=TEXT_SIGNATURE)
        fake = FakeGemini(GeminiScript(parts=(final,)))
        read = fake_gemini.Call("Read", arguments, thought_signature=CALL_SIGNATURE)
        fake.script(GeminiScript(parts=(read,)))
    return fake


def _mentions_secret(request_body: bytes) -> bool:
    return SECRET in request_body.decode()


@pytest.mark.parametrize("kind", ["anthropic", "openai", "gemini"])
async def test_claude_code_uses_a_tool_then_answers(
    nursery: trio.Nursery, claude: Path, tmp_path: Path, kind: str
) -> None:
    note = tmp_path / "note.txt"
    note.write_text(f"{SECRET}\n")
    fake = _scripted(kind, note)
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider(kind, fake.base_url, ("claude-*",)))
    result = await run_claude(
        claude, gateway.url, CLIENT_KEY, tmp_path, "Read note.txt and tell me what it says."
    )
    output = result.stdout.decode() + result.stderr.decode()
    generations = [r for r in fake.requests if r.method == "POST"]
    assert result.returncode == 0, output
    assert FINAL in result.stdout.decode()
    # the first answer was the tool call; the second request carried what the tool read
    assert len(generations) >= 2, [r.path for r in fake.requests]
    assert not _mentions_secret(generations[0].body)
    assert _mentions_secret(generations[-1].body)
    if kind == "gemini":  # the call's signature went back on the call (Gemini 3 validates it)
        contents = generations[-1].json()["contents"]
        calls = [p for c in contents for p in c["parts"] if "functionCall" in p]
        assert [c.get("thoughtSignature") for c in calls] == [CALL_SIGNATURE]


async def test_claude_code_with_a_wrong_key_exits_with_the_401(
    nursery: trio.Nursery, claude: Path, tmp_path: Path
) -> None:
    fake = FakeAnthropic()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("anthropic", fake.base_url, ("claude-*",)))
    started = trio.current_time()
    result = await run_claude(claude, gateway.url, "not-the-key", tmp_path, "Hi")
    elapsed = trio.current_time() - started
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode != 0
    assert "401" in output or "Incorrect API key" in output, output
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert fake.requests == []
