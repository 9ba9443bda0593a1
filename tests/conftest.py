"""Shared fixtures: a fake OpenAI-compatible upstream and the real gateway on ephemeral ports."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from proxycast.testing import FakeAnthropic, FakeOpenAI
from tests.postgres import _postgres, _postgres_url  # noqa: F401 - fixtures: a throwaway Postgres
from tests.redis_server import (  # noqa: F401 (fixtures)
    _redis_cluster,
    _redis_cluster_nodes,
    _redis_process,
    _redis_server,
)
from tests.support import Gateway, converting_config, make_config, start_gateway

if TYPE_CHECKING:
    from pathlib import Path

    import trio

# Timing is not what the properties test: a loaded 2-core CI machine must not fail them on a deadline.
settings.register_profile("proxycast", deadline=None)
settings.load_profile("proxycast")


@pytest.fixture(autouse=True)
def _data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own data directory (the ledger, limits, a generated key): never the user's."""
    home = tmp_path / "proxycast-home"
    monkeypatch.setenv("PROXYCAST_HOME", str(home))
    return home


@pytest.fixture(name="fake")
async def _fake(nursery: trio.Nursery) -> FakeOpenAI:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="gateway")
async def _gateway(nursery: trio.Nursery, fake: FakeOpenAI) -> Gateway:
    return await start_gateway(nursery, make_config(fake.base_url))


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's own data directory (the Responses store), never the user's."""
    monkeypatch.setenv("PROXYCAST_HOME", str(tmp_path / "proxycast-home"))


@pytest.fixture(name="claude_fake")
async def _claude_fake(nursery: trio.Nursery) -> FakeAnthropic:
    fake = FakeAnthropic()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="converting")
async def _converting(nursery: trio.Nursery, claude_fake: FakeAnthropic) -> Gateway:
    """The gateway with :func:`make_config`'s models on an Anthropic upstream (requests converted)."""
    return await start_gateway(nursery, converting_config(claude_fake.base_url))
