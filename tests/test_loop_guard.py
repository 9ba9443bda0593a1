"""The loop guard: a gateway that is (directly or through another) its own upstream answers 508 with
the likely cause, at once; ``proxycast serve`` refuses a provider at its own listening address."""

from __future__ import annotations

import os
import socket
import sys
from functools import partial
from typing import TYPE_CHECKING

import attrs
import httpx
import trio

import proxycast
from proxycast.http import loopguard
from proxycast.server.serve import bind_socket
from tests.support import CLIENT_KEY, one_provider

if TYPE_CHECKING:
    from proxycast.testing import FakeOpenAI
    from tests.support import Gateway

BODY = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


async def test_two_gateways_pointing_at_each_other_answer_508(nursery: trio.Nursery) -> None:
    socks = [bind_socket(one_provider("openai", "http://x", ("m",))) for _ in range(2)]
    urls = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in socks]
    for sock, other in zip(socks, reversed(urls), strict=True):
        # as in the shell that exported ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY for a client: the
        # provider's key is the gateway's own client key
        config = one_provider("openai", other + "/v1", ("m",))
        provider = attrs.evolve(config.providers[0], api_keys=(CLIENT_KEY,))
        config = attrs.evolve(config, providers=(provider,))
        await nursery.start(partial(proxycast.serve, config, sock=sock))
    async with httpx.AsyncClient() as client:
        with trio.fail_after(10):
            response = await client.post(
                urls[0] + "/v1/chat/completions",
                json=BODY,
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
            )
    # A -> B -> A: A sees its own mark and answers 508; B relays that (an upstream's error) to A,
    # which passes it to the client
    assert response.status_code == 508, response.text
    assert "Loop detected" in response.text
    assert f"ANTHROPIC_BASE_URL={urls[0]})" in response.text  # the URL it was called at


async def test_each_upstream_request_carries_the_hop_mark(
    gateway: Gateway, fake: FakeOpenAI
) -> None:
    async with httpx.AsyncClient() as client:
        await client.post(
            gateway.v1 + "/chat/completions",
            json={**BODY, "model": "llama3.2"},
            headers={"authorization": f"Bearer {CLIENT_KEY}", "x-proxycast-hop": "abc"},
        )
    marks = fake.requests[0].headers["x-proxycast-hop"].split(", ")
    assert marks[0] == "abc"  # the chain it came with, then this gateway's own mark
    assert len(marks) == 2
    assert CLIENT_KEY not in marks[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_refuses_its_own_address_as_a_provider(tmp_path: object) -> None:
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PROXYCAST_API_KEY": CLIENT_KEY,
        "ANTHROPIC_API_KEY": CLIENT_KEY,
        "ANTHROPIC_BASE_URL": f"http://localhost:{port}",
    }
    with trio.fail_after(20):
        result = await trio.run_process(
            [sys.executable, "-m", "proxycast", "serve", "--port", str(port)],
            env=env,
            cwd=str(tmp_path),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    error = result.stderr.decode()
    assert "providers[0].base_url" in error
    assert "own address" in error
    assert "ANTHROPIC_BASE_URL" in error


def test_a_provider_elsewhere_is_not_refused() -> None:
    config = one_provider("openai", "http://127.0.0.1:9091/v1", ("m",))
    loopguard.check_not_self(config, "127.0.0.1", 9090)
    wildcard = attrs.evolve(config, providers=())
    loopguard.check_not_self(wildcard, "0.0.0.0", 9091)
