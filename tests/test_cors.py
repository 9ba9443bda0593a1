"""CORS (``[server] cors_origins``): a browser app's preflight from a listed origin is answered without
a key, answers carry ``Access-Control-Allow-Origin``; other origins get nothing extra."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import httpx

from tests.support import CLIENT_KEY, make_config, start_gateway

if TYPE_CHECKING:
    import trio

    from proxycast.testing import FakeOpenAI

APP = "https://app.example"
PREFLIGHT = {
    "origin": APP,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type, x-stainless-os",
}
BODY = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]}


async def test_cors_for_a_listed_origin(nursery: trio.Nursery, fake: FakeOpenAI) -> None:
    config = make_config(fake.base_url)
    config = attrs.evolve(config, server=attrs.evolve(config.server, cors_origins=(APP,)))
    gateway = await start_gateway(nursery, config)
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient() as client:
        preflight = await client.options(gateway.v1 + "/chat/completions", headers=PREFLIGHT)
        answer = await client.post(
            gateway.v1 + "/chat/completions", json=BODY, headers={**auth, "origin": APP}
        )
        streamed = await client.post(
            gateway.v1 + "/chat/completions",
            json={**BODY, "stream": True},
            headers={**auth, "origin": APP},
        )
        refused = await client.post(
            gateway.v1 + "/chat/completions", json=BODY, headers={"origin": APP}
        )
        stranger = await client.options(
            gateway.v1 + "/chat/completions",
            headers={**PREFLIGHT, "origin": "https://evil.example"},
        )
        stranger_post = await client.post(
            gateway.v1 + "/chat/completions",
            json=BODY,
            headers={**auth, "origin": "https://evil.example"},
        )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert (
        preflight.headers["access-control-allow-headers"]
        == PREFLIGHT["access-control-request-headers"]
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    assert streamed.headers["access-control-allow-origin"] == APP
    # an error answer is readable by the page too (else the browser shows only "CORS error")
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == APP
    assert stranger.status_code == 401
    assert "access-control-allow-origin" not in stranger.headers
    assert stranger_post.status_code == 200
    assert "access-control-allow-origin" not in stranger_post.headers
    assert len(fake.requests) == 3  # preflights never go upstream


async def test_no_cors_by_default(gateway: object) -> None:
    url = gateway.v1 + "/chat/completions"  # type: ignore[attr-defined]
    async with httpx.AsyncClient() as client:
        preflight = await client.options(url, headers=PREFLIGHT)
    assert preflight.status_code == 401
    assert "access-control-allow-origin" not in preflight.headers
