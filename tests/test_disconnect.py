"""A client that goes away cancels its upstream request, in every phase, over real sockets.

The fake upstream records the moment it saw its connection close (``abandoned_at``); the client
records the moment it closed its own. The gap is the disconnect-to-upstream-close latency. Its
distribution is measured by ``bench/``; here each case checks that the upstream request was abandoned,
and long before the scripted answer would have ended (tens of seconds).
"""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio

from proxycast.testing import FakeOpenAI, RecordedRequest, Script
from tests.support import CLIENT_KEY, Gateway

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
GENEROUS = 0.5  # seconds; the scripted answers take 30 s or more


async def wait_for_request(fake: FakeOpenAI, count: int) -> RecordedRequest:
    with trio.fail_after(5):
        return (await fake.wait_for_requests(count))[count - 1]


async def wait_until_abandoned(request: RecordedRequest) -> float:
    with trio.fail_after(5):
        await request.ended.wait()
    assert request.abandoned_at is not None, "the upstream request was not abandoned"
    return request.abandoned_at


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
async def test_disconnect_while_waiting_for_the_upstream(
    gateway: Gateway, fake: FakeOpenAI, stream: bool
) -> None:
    fake.script(Script(headers_delay=30))
    closed_at = 0.0
    async with httpx.AsyncClient() as h, trio.open_nursery() as nursery:

        async def call() -> None:
            await h.post(
                gateway.v1 + "/chat/completions", json={**BODY, "stream": stream}, headers=AUTH
            )
            raise AssertionError("the request should have been cancelled")

        nursery.start_soon(call)
        upstream_request = await wait_for_request(fake, 1)
        closed_at = trio.current_time()
        nursery.cancel_scope.cancel()  # the client gives up: httpx closes its connection
    abandoned_at = await wait_until_abandoned(upstream_request)
    assert not upstream_request.completed
    print(f"latency {(abandoned_at - closed_at) * 1000:.2f} ms")
    assert 0 <= abandoned_at - closed_at < GENEROUS


async def test_disconnect_mid_stream(gateway: Gateway, fake: FakeOpenAI) -> None:
    fake.script(Script(text=" ".join(["word"] * 200), interval=0.2))
    async with httpx.AsyncClient() as h:
        async with h.stream(
            "POST", gateway.v1 + "/chat/completions", json={**BODY, "stream": True}, headers=AUTH
        ) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            received = 0
            async for line in lines:
                received += line.startswith("data: ")
                if received == 3:
                    break
            closed_at = trio.current_time()
            await lines.aclose()  # type: ignore[attr-defined]
        # leaving the block closes the response mid-body: httpx drops the connection
    upstream_request = fake.requests[-1]
    abandoned_at = await wait_until_abandoned(upstream_request)
    assert not upstream_request.completed
    print(f"latency {(abandoned_at - closed_at) * 1000:.2f} ms")
    assert 0 <= abandoned_at - closed_at < GENEROUS


async def test_gateway_keeps_serving_after_disconnects(gateway: Gateway, fake: FakeOpenAI) -> None:
    for count in range(1, 6):
        fake.script(Script(headers_delay=30))
        # the client gives up once the upstream has the request (a fixed delay raced the client's
        # own start-up, which takes tens of milliseconds on a slow machine)
        async with httpx.AsyncClient() as h, trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(h.post, gateway.v1 + "/chat/completions", json=BODY, headers=AUTH)
            )
            await wait_for_request(fake, count)
            nursery.cancel_scope.cancel()
    async with httpx.AsyncClient() as h:
        response = await h.post(gateway.v1 + "/chat/completions", json=BODY, headers=AUTH)
    assert response.status_code == 200
    assert all(r.abandoned_at is not None for r in fake.requests[:5])
