"""Upstreams that send too much: an SSE event without end, a gzip bomb. A raw upstream over loopback."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Awaitable, Callable
from functools import partial

import httpx
import pytest
import trio

from tests.support import CLIENT_KEY, make_config, start_gateway

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {**CHAT, "max_tokens": 100}

Answer = Callable[[trio.SocketStream], Awaitable[None]]


async def raw_upstream(nursery: trio.Nursery, answer: Answer) -> str:
    """An upstream that reads one request per connection and lets ``answer`` write the response."""

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += await stream.receive_some()
        try:
            await answer(stream)
        except trio.BrokenResourceError:
            pass  # the gateway gave up on us: as it should

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def endless_event(stream: trio.SocketStream, content_first: bool = True) -> None:
    delta = b'{"index": 0, "delta": {"content": "Hi"}}' if content_first else b""
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        b'data: {"id": "x", "object": "chat.completion.chunk", "choices": [' + delta + b"]}\n\n"
        b"data: "
    )
    for _ in range(100):  # 6.4 MB, in pieces, never a newline
        await stream.send_all(b"x" * 65536)
    await trio.sleep_forever()


@pytest.mark.parametrize("path", ["/chat/completions", "/messages"])
async def test_an_event_without_end_ends_the_stream_with_an_error_frame(
    nursery: trio.Nursery, path: str
) -> None:
    upstream = await raw_upstream(nursery, endless_event)
    gateway = await start_gateway(nursery, make_config(upstream, max_event_bytes=1_000_000))
    body = {**(CHAT if path == "/chat/completions" else MESSAGES), "stream": True}
    async with httpx.AsyncClient() as h:
        with trio.fail_after(10):
            async with h.stream("POST", gateway.v1 + path, json=body, headers=AUTH) as response:
                assert response.status_code == 200
                lines = [line async for line in response.aiter_lines() if line]
    last = json.loads(lines[-1].removeprefix("data: "))
    assert "max_event_bytes" in last["error"]["message"]
    assert "'local'" in last["error"]["message"]
    if path == "/messages":
        assert lines[-2] == "event: error"


async def test_an_event_without_end_before_any_content_is_a_502(nursery: trio.Nursery) -> None:
    # nothing reached the client yet (the opening chunk is held back): a plain error answer
    upstream = await raw_upstream(nursery, partial(endless_event, content_first=False))
    gateway = await start_gateway(nursery, make_config(upstream, max_event_bytes=1_000_000))
    async with httpx.AsyncClient() as h:
        with trio.fail_after(10):
            response = await h.post(
                gateway.v1 + "/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
            )
    assert response.status_code == 502
    assert "max_event_bytes" in response.json()["error"]["message"]


def gzip_bomb(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    return b"".join(compressor.compress(zeros) for _ in range(megabytes)) + compressor.flush()


async def answer_with(body: bytes, content_type: str, stream: trio.SocketStream) -> None:
    await stream.send_all(
        f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-encoding: gzip\r\n"
        f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
async def test_a_gzip_bomb_is_not_decoded_past_the_bound(
    nursery: trio.Nursery, stream: bool
) -> None:
    bomb = gzip_bomb(100)  # 100 MB of zeros, about 100 KB on the wire
    content_type = "text/event-stream" if stream else "application/json"
    upstream = await raw_upstream(nursery, partial(answer_with, bomb, content_type))
    gateway = await start_gateway(nursery, make_config(upstream))
    async with httpx.AsyncClient() as h:
        with trio.fail_after(10):
            response = await h.post(
                gateway.v1 + "/chat/completions", json={**CHAT, "stream": stream}, headers=AUTH
            )
    if stream:
        last = json.loads(response.text.strip().splitlines()[-1].removeprefix("data: "))
        message = last["error"]["message"]
    else:
        assert response.status_code == 502
        message = response.json()["error"]["message"]
    assert "'local'" in message
    assert "decompressed" in message


async def test_a_gzip_answer_within_the_bound_is_decoded(nursery: trio.Nursery) -> None:
    answer = {
        "id": "x",
        "object": "chat.completion",
        "model": "llama3.2",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
    }
    body = gzip.compress(json.dumps(answer).encode())
    upstream = await raw_upstream(nursery, partial(answer_with, body, "application/json"))
    gateway = await start_gateway(nursery, make_config(upstream))
    async with httpx.AsyncClient() as h:
        response = await h.post(gateway.v1 + "/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello"
