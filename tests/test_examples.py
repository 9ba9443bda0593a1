"""The README's client examples, Python and Node.js, run against the test gateway."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import trio

from proxycast.testing import FakeOpenAI, Script
from tests.support import CLIENT_KEY, Gateway

EXAMPLES = Path(__file__).parent.parent / "examples"


def example_env(gateway: Gateway) -> dict[str, str]:
    return {
        **os.environ,
        "PROXYCAST_URL": gateway.v1,
        "PROXYCAST_API_KEY": CLIENT_KEY,
        "MODEL": "gpt-4o",
    }


async def test_python_example(gateway: Gateway, fake: FakeOpenAI) -> None:
    fake.script(Script(text="I am a fake model."), Script(text="one two three four five"))
    result = await trio.run_process(
        [sys.executable, str(EXAMPLES / "python_example.py")],
        env=example_env(gateway),
        capture_stdout=True,
        capture_stderr=True,
    )
    assert result.stdout.decode().splitlines() == ["I am a fake model.", "one two three four five"]
    assert [r.json()["model"] for r in fake.requests] == ["llama3.2", "llama3.2"]


@pytest.fixture(name="node_example", scope="session")
def _node_example() -> Path:
    """The Node example with its npm dependencies installed (once per test run)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the Node.js example test")
    directory = EXAMPLES / "node"
    if not (directory / "node_modules" / "openai").is_dir():
        import subprocess

        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=directory,
            check=True,
            timeout=300,
        )
    return directory / "example.mjs"


async def test_node_example(gateway: Gateway, fake: FakeOpenAI, node_example: Path) -> None:
    fake.script(Script(text="Hello from Node."), Script(text="1 2 3 4 5", chunks=5))
    result = await trio.run_process(
        ["node", str(node_example)],
        env=example_env(gateway),
        capture_stdout=True,
        capture_stderr=True,
    )
    assert result.stdout.decode().splitlines() == ["Hello from Node.", "1 2 3 4 5"]
    assert fake.requests[-1].json()["stream"] is True
