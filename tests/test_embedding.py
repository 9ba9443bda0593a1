"""Embedding: ``await nursery.start(proxycast.serve, config)`` in a trio program."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import trio

import proxycast
from tests.support import CLIENT_KEY, make_config

if TYPE_CHECKING:
    from proxycast.testing import FakeOpenAI


async def test_serve_in_a_nursery_returns_binds_and_stops_on_cancel(fake: FakeOpenAI) -> None:
    config = make_config(fake.base_url)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(proxycast.serve, config)
        assert len(binds) == 1
        assert binds[0].startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as h:
            response = await h.get(
                binds[0] + "/v1/models", headers={"authorization": f"Bearer {CLIENT_KEY}"}
            )
            chat = await h.post(
                binds[0] + "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
            )
        assert response.status_code == 200
        assert chat.status_code == 200
        assert fake.open_connections == 1  # the gateway keeps its upstream connection alive
        nursery.cancel_scope.cancel()
    with trio.fail_after(2):  # cancelling the gateway closed its pooled upstream connection
        await fake.wait_for_no_connections()
    host, port = binds[0].removeprefix("http://").split(":")
    try:
        stream = await trio.open_tcp_stream(host, int(port))
    except OSError:
        pass
    else:
        await stream.aclose()
        raise AssertionError("the gateway still accepts connections after being cancelled")
