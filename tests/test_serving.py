"""The router's routes served straight from the ASGI connection (``proxycast.http.serving``): the
body's limits, a client that leaves before its body is in, and proxycast's own failures, each answered
in the route's dialect, as Quart answers its own routes."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from proxycast.core.exchange import Exchange
from tests.support import CLIENT_KEY, Gateway, make_config, start_gateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from proxycast.testing import FakeOpenAI

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE = {**CHAT, "max_tokens": 10}


async def _chunked(body: bytes, pieces: int) -> AsyncIterator[bytes]:
    size = len(body) // pieces + 1
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _raw(port: int, head: bytes, body: bytes) -> bytes:
    """Send ``head`` and ``body`` on a new connection; what the gateway answers until it closes or
    goes quiet."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head + body)
        answer = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                data = await stream.receive_some()
                if not data:
                    break
                answer += data
    return answer


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_chunked_body_over_the_limit_is_413_in_the_dialect(
    nursery: trio.Nursery, fake: FakeOpenAI, path: str
) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url, max_body_bytes=1000))
    big = json.dumps({**CLAUDE, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    async with httpx.AsyncClient() as h:
        answer = await h.post(gateway.url + path, content=_chunked(big, 8), headers=AUTH)
        small = await h.post(gateway.url + path, json=CLAUDE, headers=AUTH)
    assert answer.status_code == 413, answer.text
    assert answer.request.headers["transfer-encoding"] == "chunked"
    error = answer.json()["error"]
    assert "1000 bytes" in error["message"]
    assert error["type"] == (
        "invalid_request_error" if path == "/v1/chat/completions" else "request_too_large"
    )
    if path == "/v1/messages":
        assert answer.json()["type"] == "error"
    assert small.status_code == 200, small.text
    assert len(fake.requests) == 1


async def test_a_body_that_does_not_arrive_in_time_is_408(
    nursery: trio.Nursery, fake: FakeOpenAI
) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url, upstream_timeout=0.5))
    port = int(gateway.url.rsplit(":", 1)[1])
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n"
        "content-type: application/json\r\ncontent-length: 500\r\n\r\n"
    ).encode()
    answer = await _raw(port, head, b'{"model": ')  # and nothing more
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 408"), answer
    error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert "0.5 seconds" in error["message"]
    assert "upstream_timeout" in error["message"]
    assert fake.requests == []


async def test_a_client_that_leaves_before_its_body_is_in_costs_nothing(
    nursery: trio.Nursery, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url))
    port = int(gateway.url.rsplit(":", 1)[1])
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n"
        "content-length: 500\r\n\r\n"
    ).encode()
    for _ in range(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(head + b'{"model": "gpt-4o", ')
        await trio.sleep(0.05)
        await stream.aclose()
    await trio.sleep(0.2)
    async with httpx.AsyncClient() as h:
        answer = await h.post(gateway.v1 + "/chat/completions", json=CHAT, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert len(fake.requests) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("path", "kind"), [("/v1/chat/completions", "server_error"), ("/v1/messages", "api_error")]
)
async def test_a_failure_of_proxycast_itself_is_500_in_the_dialect_and_logged(
    nursery: trio.Nursery,
    fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    kind: str,
) -> None:
    async def broken(self: Exchange, *args: object) -> None:
        raise RuntimeError("a bug holding sk-upstream-secret")

    monkeypatch.setattr(Exchange, "generate", broken)
    gateway = await start_gateway(nursery, make_config(fake.base_url))
    async with httpx.AsyncClient() as h:
        answer = await h.post(gateway.url + path, json=CLAUDE, headers=AUTH)
    assert answer.status_code == 500, answer.text
    assert answer.headers["x-request-id"]
    error = answer.json()["error"]
    assert error["type"] == kind
    assert error["message"] == "Internal error in proxycast; see its log."
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1
    assert logged[0].getMessage().startswith(f"unexpected error on POST {path}")
    assert "RuntimeError: a bug holding [redacted]" in caplog.text  # the traceback, redacted
    assert "sk-upstream-secret" not in caplog.text


async def test_another_method_on_a_model_route_is_a_405_in_its_dialect(
    nursery: trio.Nursery, fake: FakeOpenAI
) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url))
    async with httpx.AsyncClient() as h:
        answer = await h.put(gateway.v1 + "/messages", json=CLAUDE, headers=AUTH)
    assert answer.status_code == 405
    assert answer.json()["type"] == "error"
    assert "POST" in answer.json()["error"]["message"]


async def _chat(gateway: Gateway, headers: list[tuple[str, str]]) -> httpx.Response:
    async with httpx.AsyncClient() as h:
        return await h.post(gateway.v1 + "/chat/completions", json=CHAT, headers=headers)


async def test_a_repeated_header_counts_by_its_first_value(
    nursery: trio.Nursery, fake: FakeOpenAI
) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url))
    first_valid = await _chat(gateway, [("x-api-key", CLIENT_KEY), ("x-api-key", "other")])
    first_invalid = await _chat(gateway, [("x-api-key", "other"), ("x-api-key", CLIENT_KEY)])
    assert first_valid.status_code == 200, first_valid.text
    assert first_invalid.status_code == 401
    assert "Incorrect API key" in first_invalid.json()["error"]["message"]


async def test_a_control_character_in_a_repeated_header_is_refused(
    nursery: trio.Nursery, fake: FakeOpenAI
) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url))
    answer = await _chat(gateway, [*AUTH.items(), ("x-note", "fine"), ("x-note", "bell\x07")])
    assert answer.status_code == 400
    assert "'x-note' holds a control character" in answer.json()["error"]["message"]
    assert fake.requests == []
