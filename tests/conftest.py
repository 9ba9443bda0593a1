"""Shared fixtures: a fake OpenAI-compatible upstream and the real gateway on ephemeral ports."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from proxycast.testing import FakeAnthropic, FakeOpenAI
from tests.support import Gateway, converting_config, make_config, start_gateway

if TYPE_CHECKING:
    import trio


@pytest.fixture(name="fake")
async def _fake(nursery: trio.Nursery) -> FakeOpenAI:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, fake: FakeOpenAI) -> Gateway:
    return await start_gateway(nursery, make_config(fake.base_url))


@pytest.fixture(name="claude_fake")
async def _claude_fake(nursery: trio.Nursery) -> FakeAnthropic:
    fake = FakeAnthropic()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="converting")
async def _converting(nursery: trio.Nursery, claude_fake: FakeAnthropic) -> Gateway:
    """The gateway with :func:`make_config`'s models on an Anthropic upstream (requests converted)."""
    return await start_gateway(nursery, converting_config(claude_fake.base_url))
