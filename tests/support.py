"""What several test modules share: the gateway under test, its keys and configurations, and helpers
that read what the SDKs and the converters produce."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import strategies as st

import proxycast
from proxycast.config import Config, ProviderConfig, ServerConfig

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import trio

CLIENT_KEY = "test-client-key"
UPSTREAM_KEY = "sk-upstream-secret"


@attrs.define
class Gateway:
    """A running gateway: its URL and the configuration it serves."""

    url: str
    config: Config

    @property
    def v1(self) -> str:
        return self.url + "/v1"


def make_config(upstream_url: str, **server: object) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,), **server),  # type: ignore[arg-type]
        providers=(
            ProviderConfig(
                name="local",
                type="openai",
                base_url=upstream_url,
                api_keys=(UPSTREAM_KEY,),
                models=("llama3.2", "qwen*"),
            ),
        ),
        aliases={"gpt-4o": "llama3.2", "fast": "local/qwen2.5-coder"},
    )


def converting_config(upstream_url: str) -> Config:
    """:func:`make_config`'s models and aliases on an Anthropic upstream: OpenAI clients' requests
    are converted (and so validated in full; a forwarded one is checked only for its model)."""
    config = make_config(upstream_url)
    provider = attrs.evolve(config.providers[0], type="anthropic")
    return attrs.evolve(config, providers=(provider,))


def one_provider(
    type_: str,
    base_url: str,
    models: tuple[str, ...],
    aliases: dict[str, str] | None = None,
) -> Config:
    """A gateway configuration with one provider of ``type_`` at ``base_url``, named after its type."""
    provider = ProviderConfig(
        name=type_, type=type_, base_url=base_url, api_keys=(UPSTREAM_KEY,), models=models
    )
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(provider,),
        aliases=aliases or {},
    )


async def start_gateway(
    nursery: trio.Nursery, config: Config, clock: Callable[[], float] | None = None
) -> Gateway:
    """The real server on a free port; ``clock`` drives its key pools' cooldowns."""
    options = {} if clock is None else {"clock": clock}
    binds = await nursery.start(partial(proxycast.serve, config, **options))
    return Gateway(binds[0], config)


async def collect(stream: Any) -> tuple[list[Any], str, dict[int, dict[str, str]], str | None]:
    chunks = [chunk async for chunk in stream]
    text = ""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.id or ""
            if call.function:
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return chunks, text, calls, finish


# Generated OpenAI conversations (hypothesis), and what an OpenAI SDK makes of a stream's chunks.

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
TOOL_IDS = st.text(st.sampled_from("abc01_-.: /"), min_size=1, max_size=10)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    used: set[str] = set()
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["system", "user", "user-parts", "assistant", "tools"]))
        if kind == "system":
            messages.append({"role": "system", "content": draw(TEXT)})
        elif kind == "user":
            messages.append({"role": "user", "content": draw(TEXT)})
        elif kind == "user-parts":
            parts = [{"type": "text", "text": t} for t in draw(st.lists(TEXT, max_size=3))]
            messages.append({"role": "user", "content": parts})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": draw(TEXT)})
        else:
            ids = draw(
                st.lists(
                    TOOL_IDS.filter(lambda i: i not in used), min_size=1, max_size=3, unique=True
                )
            )
            used.update(ids)
            messages.append(
                {
                    "role": "assistant",
                    "content": draw(st.one_of(st.none(), TEXT)),
                    "tool_calls": [
                        {
                            "id": i,
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                        for i in ids
                    ],
                }
            )
            for i in ids:
                messages.append({"role": "tool", "tool_call_id": i, "content": draw(TEXT)})
            if draw(st.booleans()):
                messages.append({"role": "user", "content": draw(TEXT)})
    return messages


def accumulate_openai(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """What an OpenAI SDK builds from the chunks: the same shape as a chat.completion's essentials."""
    content, reasoning, finish, usage = "", "", None, None
    calls: dict[int, dict[str, str]] = {}
    for chunk in frames:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls", []):
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.get("id", "")
                entry["name"] += call.get("function", {}).get("name", "")
                entry["arguments"] += call.get("function", {}).get("arguments", "")
            finish = choice["finish_reason"] or finish
    assert sorted(calls) == list(range(len(calls)))  # indices from 0, no gaps
    return {
        "content": content or None,
        "reasoning": reasoning or None,
        "tool_calls": [
            {"id": c["id"], "name": c["name"], "arguments": json.loads(c["arguments"])}
            for _, c in sorted(calls.items())
        ],
        "finish": finish,
        "usage": usage,
    }


def npm_client(folder: Path, executable: str, what: str) -> Path:
    """A CLI from npm (``folder/package.json`` pins it), installed once into ``folder/node_modules``
    and kept there for later runs; a test fails (never skips) without node and npm."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail(f"node and npm are needed for the {what} tests (.ci/run installs them)")
    path = folder / "node_modules" / ".bin" / executable
    if not path.exists():
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            check=True,
            timeout=600,
        )
    return path
