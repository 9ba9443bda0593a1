"""The shutdown deadline ends a stream waiting on a silent upstream, over plain TCP and TLS (a TLS
read checkpoints once before it waits on its socket: the deadline may come in between)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
import trustme

from proxycast.config import ProviderConfig, ServerConfig
from proxycast.errors import ShuttingDownError
from proxycast.upstream import draining as draining_module
from proxycast.upstream.provider import iter_body

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

PROVIDER = ProviderConfig(name="silent", type="openai", base_url="https://localhost")
SERVER = ServerConfig(shutdown_grace=1.0)


async def _silent_after_one_piece(stream: trio.abc.Stream) -> None:
    await stream.receive_some(65536)  # the request
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n6\r\ndata:1\r\n"
    )
    await trio.sleep_forever()


async def _ended_at_deadline(body: AsyncGenerator[bytes, None]) -> bool:
    """Whether the deadline, coming as the second read starts, ends it (within 5 s)."""
    draining = draining_module.current_draining()
    assert draining is not None
    ended = False

    async def second_read() -> None:
        nonlocal ended
        with trio.move_on_after(5):
            with pytest.raises(ShuttingDownError, match="shutting down"):
                await body.__anext__()
            ended = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second_read)
        await trio.lowlevel.checkpoint()  # the read has started, and paused at its first checkpoint
        draining.deadline = trio.current_time()  # what Draining.expire does at the deadline
        draining.wake()
    return ended


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_silent_upstream_is_cut_at_the_deadline(tls: bool) -> None:
    ca = trustme.CA()
    async with trio.open_nursery() as nursery:
        if tls:
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("localhost").configure_cert(server_context)
            listeners = await nursery.start(
                trio.serve_ssl_over_tcp, _silent_after_one_piece, 0, server_context
            )
            port = listeners[0].transport_listener.socket.getsockname()[1]
            verify: ssl.SSLContext | bool = ssl.create_default_context()
            assert isinstance(verify, ssl.SSLContext)
            ca.configure_trust(verify)
        else:
            listeners = await nursery.start(trio.serve_tcp, _silent_after_one_piece, 0)
            port = listeners[0].socket.getsockname()[1]
            verify = True
        scheme = "https" if tls else "http"
        outcomes = []
        async with httpx.AsyncClient(verify=verify) as client:
            for _ in range(10):  # the race it guards against was lost half the time
                draining_module.serving_draining(draining_module.Draining())
                request = client.build_request("POST", f"{scheme}://localhost:{port}/", content=b"")
                response = await client.send(request, stream=True)
                body = iter_body(response, PROVIDER, SERVER)
                assert await body.__anext__() == b"data:1"
                outcomes.append(await _ended_at_deadline(body))
                await body.aclose()
                await response.aclose()
        nursery.cancel_scope.cancel()
    assert outcomes == [True] * 10
