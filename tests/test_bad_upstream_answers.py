"""Upstream answers no client could use (a redirect, a 200 that is not JSON) are 502s naming the
provider, on the forwarded routes as on the converted ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from proxycast.testing import AnthropicScript, FakeAnthropic, FakeOpenAI, Script
from tests.support import CLIENT_KEY, one_provider, start_gateway

if TYPE_CHECKING:
    import trio

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
MESSAGES = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        pytest.param(
            301, b"moved", (("location", "https://elsewhere.example/v1"),), "redirect", id="301"
        ),
        pytest.param(307, b"", (("location", "/v2/chat/completions"),), "redirect", id="307"),
        pytest.param(200, b"<html>gateway portal</html>", (), "not a JSON object", id="html-200"),
        pytest.param(200, b"[1, 2]", (), "not a JSON object", id="array-200"),
    ],
)
async def test_openai_passthrough(
    nursery: trio.Nursery,
    status: int,
    body: bytes,
    headers: tuple[tuple[str, str], ...],
    expected: str,
) -> None:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("openai", fake.base_url, ("gpt-4o",)))
    fake.script(Script(status=status, error_body=body, headers=headers))
    async with httpx.AsyncClient() as client:
        response = await client.post(gateway.v1 + "/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 502
    error = response.json()["error"]
    assert "'openai'" in error["message"]
    assert expected in error["message"]
    assert len(fake.requests) == 1  # the redirect was not followed


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(302, b"moved", "redirect", id="302"),
        pytest.param(200, b"<html>login</html>", "not a JSON object", id="html-200"),
    ],
)
async def test_anthropic_passthrough(
    nursery: trio.Nursery, status: int, body: bytes, expected: str
) -> None:
    fake = FakeAnthropic()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("anthropic", fake.base_url, ("claude-x",)))
    fake.script(AnthropicScript(status=status, error_body=body, headers=(("location", "/x"),)))
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.url + "/v1/messages", json=MESSAGES, headers={"x-api-key": CLIENT_KEY}
        )
    assert response.status_code == 502
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "api_error"
    assert "'anthropic'" in error["error"]["message"]
    assert expected in error["error"]["message"]
