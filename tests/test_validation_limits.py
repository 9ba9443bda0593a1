"""Validation of huge invalid bodies: a bounded error, and other clients served meanwhile."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from tests.support import CLIENT_KEY

if TYPE_CHECKING:
    from tests.support import Gateway

AUTH = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}


def bad_body(count: int) -> bytes:
    return json.dumps(
        {"model": "llama3.2", "messages": [{"role": "user", "content": 5}] * count}
    ).encode()


@pytest.mark.parametrize("path", ["/chat/completions", "/messages"])
async def test_a_body_with_many_problems_gets_a_short_error(
    gateway: Gateway, converting: Gateway, path: str
) -> None:
    # only converted requests are validated in full: OpenAI's to the Anthropic upstream, Anthropic's
    # to the OpenAI-compatible one
    gateway = converting if path == "/chat/completions" else gateway
    async with httpx.AsyncClient(timeout=30) as h:
        response = await h.post(gateway.v1 + path, content=bad_body(100_000), headers=AUTH)
    assert response.status_code == 400
    assert len(response.content) < 2000
    message = response.json()["error"]["message"]
    assert "messages[0]" in message
    assert "messages[10]" not in message
    assert "more problems" in message


async def test_other_clients_are_served_while_a_large_body_is_validated(
    converting: Gateway,
) -> None:
    gateway = converting
    body = bad_body(30_000)  # about 1 MB: validated in a worker thread
    longest = 0.0
    async with httpx.AsyncClient(timeout=30) as h, trio.open_nursery() as nursery:
        done = trio.Event()

        async def big() -> None:
            response = await h.post(gateway.v1 + "/chat/completions", content=body, headers=AUTH)
            assert response.status_code == 400
            done.set()

        nursery.start_soon(big)
        while not done.is_set():
            started = trio.current_time()
            response = await h.get(gateway.v1 + "/models", headers=AUTH)
            assert response.status_code == 200
            longest = max(longest, trio.current_time() - started)
    print(f"longest /v1/models while validating: {longest * 1000:.0f} ms")
    assert longest < 1.0  # generous: it stalled for seconds on the event loop
