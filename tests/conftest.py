"""Shared fixtures: a fake OpenAI-compatible upstream and the real gateway on ephemeral ports."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import attrs
import pytest

import proxycast
from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.testing import FakeOpenAI

if TYPE_CHECKING:
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


async def start_gateway(nursery: trio.Nursery, config: Config) -> Gateway:
    binds = await nursery.start(partial(proxycast.serve, config))
    return Gateway(binds[0], config)


@pytest.fixture(name="fake")
async def _fake(nursery: trio.Nursery) -> FakeOpenAI:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, fake: FakeOpenAI) -> Gateway:
    return await start_gateway(nursery, make_config(fake.base_url))
