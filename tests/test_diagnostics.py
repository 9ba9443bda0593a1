"""A gateway that explains itself when set up wrong: ``proxycast check`` (dangling aliases, no providers
with the variables that would add them, ``--online`` per ``provider#N``), the serve banner's hints, and
upstream 404s that name the provider and the path tried."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import httpx
import trio

from proxycast.testing import FakeAnthropic, FakeOpenAI
from tests.support import CLIENT_KEY, one_provider, start_gateway

if TYPE_CHECKING:
    from pathlib import Path


async def proxycast(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "proxycast", *args],
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env},
            cwd=str(tmp_path),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "proxycast.toml"
    path.write_text(f'[server]\napi_keys = ["{CLIENT_KEY}"]\n' + text)
    return str(path)


async def test_check_reports_a_dangling_alias(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[[providers]]\nname = "local"\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'models = ["llama*"]\n[aliases]\n"gpt-4o" = "llama3.2"\n"fast" = "qwen2.5"\n',
    )
    code, out, _ = await proxycast(tmp_path, "check", "--config", config)
    assert code == 1
    assert "aliases.fast: its target 'qwen2.5' is served by no provider" in out
    assert "gpt-4o" not in out.split("routing")[0]  # that one routes


async def test_check_reports_dangling_fallbacks(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[[providers]]\nname = "local"\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'models = ["llama*"]\n[fallbacks]\n"llama3.2" = ["local/llama3.1", "qwen2.5"]\n'
        '"gpt-5" = ["llama3.2"]\n',
    )
    code, out, _ = await proxycast(tmp_path, "check", "--config", config)
    assert code == 1
    assert "fallbacks.llama3.2[1]: 'qwen2.5' is served by no provider" in out
    assert "fallbacks.llama3.2[0]" not in out  # a provider/ prefix routes
    assert "fallbacks.gpt-5: the model itself is served by no provider" in out


async def test_check_and_banner_with_no_providers_name_the_variables(tmp_path: Path) -> None:
    code, out, _ = await proxycast(tmp_path, "check")
    assert code == 1
    for variable in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"):
        assert variable in out
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "proxycast", "serve", "--port", "0"],
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        cwd=str(tmp_path),
        stdout=-1,
    )
    try:
        banner = b""
        with trio.fail_after(20):
            while b"no providers configured:" not in banner:
                assert process.stdout is not None
                chunk = await process.stdout.receive_some()
                assert chunk, banner
                banner += chunk
        assert b"ANTHROPIC_API_KEY" in banner
    finally:
        process.terminate()
        await process.wait()


async def test_check_online_per_provider_key(nursery: trio.Nursery, tmp_path: Path) -> None:
    class Locked(FakeAnthropic):
        async def side_route(self, request, respond):  # type: ignore[no-untyped-def]
            if request.headers.get("x-api-key") != "good":
                error = {"type": "error", "error": {"type": "authentication_error"}}
                await respond.json(401, error)
                return True
            return await super().side_route(request, respond)

    claude, local = Locked(), FakeOpenAI()
    claude.models = ("claude-a",)
    await nursery.start(claude.serve)
    await nursery.start(local.serve)
    root = local.base_url.removesuffix("/v1")  # the usual mistake: no /v1
    config = write_config(
        tmp_path,
        f'[[providers]]\nname = "claude"\ntype = "anthropic"\nbase_url = "{claude.base_url}"\n'
        'api_keys = ["good", "expired-key-1234"]\nmodels = ["claude-*"]\n'
        f'[[providers]]\nname = "local"\ntype = "openai"\nbase_url = "{root}"\n'
        'api_keys = ["k"]\nmodels = ["llama3.2"]\n'
        '[[providers]]\nname = "gone"\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'api_keys = ["k"]\nmodels = ["x"]\n',
    )
    code, out, _ = await proxycast(tmp_path, "check", "--config", config, "--online")
    assert code == 1
    assert "claude#0: reachable: 1 models listed" in out
    assert "claude#1: unauthorised: GET /v1/models answered 401" in out
    assert "local#0: wrong path: GET /models answered 404." in out
    assert "may be missing '/v1'" in out
    assert "gone#0: unreachable: Cannot connect to provider 'gone'" in out
    assert "expired-key-1234" not in out


async def test_an_upstream_404_names_the_provider_and_path(nursery: trio.Nursery) -> None:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    root = fake.base_url.removesuffix("/v1")
    gateway = await start_gateway(nursery, one_provider("openai", root, ("m",)))
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.v1 + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert message.startswith("Provider 'openai' answered 404 to POST /chat/completions: ")
    assert "may be missing '/v1'" in message
