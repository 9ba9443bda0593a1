"""The overload manager (``[server] max_memory_mb``): its states, and a real ``proxycast serve``
flooded with large bodies and slow streams past a small limit, shedding, then recovering."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
import trio.testing

from proxycast.core.overload import (
    NORMAL,
    SHEDDING_ALL,
    SHEDDING_STREAMS,
    Overload,
)
from proxycast.errors import ProxycastError
from proxycast.formats.contracts import InboundRequest
from proxycast.formats.json_spans import parse_object
from proxycast.http.body import HOLD_ONCE_BYTES, held_once
from proxycast.testing import FakeAnthropic, FakeOpenAI, Script
from tests.support import CLIENT_KEY, Gateway, make_config, start_gateway
from tests.test_cli import config_file, serve

if TYPE_CHECKING:
    from pathlib import Path

MB = 1024 * 1024
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def test_states_follow_the_memory_with_hysteresis() -> None:
    memory = [0]
    reported: list[int] = []
    overload = Overload(100, measure=lambda: memory[0], report=reported.append)
    steps = [  # MB sampled -> the state after it
        (50, NORMAL),
        (86, SHEDDING_STREAMS),
        (96, SHEDDING_ALL),
        (92, SHEDDING_ALL),  # within the hysteresis of 95%
        (89, SHEDDING_STREAMS),
        (82, SHEDDING_STREAMS),  # within the hysteresis of 85%
        (79, NORMAL),
        (83, NORMAL),
    ]
    for mb, state in steps:
        memory[0] = mb * MB
        overload.sample()
        assert (mb, overload.state) == (mb, state)
    assert reported == [SHEDDING_STREAMS, SHEDDING_ALL, SHEDDING_STREAMS, NORMAL]


def test_admission_by_state_and_by_the_body_to_come() -> None:
    memory = [50 * MB]
    overload = Overload(100, measure=lambda: memory[0])
    overload.sample()
    first = overload.admit(stream=True, body_bytes=10 * MB)  # 50 + 3 x 10 (its parse's copies)
    assert first == 10 * MB
    with pytest.raises(ProxycastError) as refused:  # 60 + 3 x 12: past 95%
        overload.admit(stream=False, body_bytes=12 * MB)
    assert refused.value.status == 503
    assert refused.value.headers["retry-after"]
    assert "a body of 12582912 bytes, with its parse, would take it past 95%" in str(
        refused.value.message
    )
    second = overload.admit(stream=False, body_bytes=10 * MB)  # 60 + 3 x 10
    overload.sample()  # the bodies still arriving are in no sample yet: still counted
    with pytest.raises(ProxycastError):
        overload.admit(stream=False, body_bytes=9 * MB)  # 70 + 3 x 9
    overload.arrived(first)
    overload.arrived(second)
    memory[0] = 70 * MB  # arrived: in the memory (a large body's admission takes a sample)
    overload.admit(stream=False, body_bytes=6 * MB)  # 70 + 3 x 6
    assert overload.admit(stream=False) == 0
    memory[0] = 90 * MB  # a large body is admitted on the memory now, not on the last sample
    with pytest.raises(ProxycastError, match="new streams are refused"):
        overload.admit(stream=True, body_bytes=2 * MB)
    assert overload.state == SHEDDING_STREAMS

    memory[0] = 90 * MB
    overload.sample()
    overload.admit(stream=False)
    with pytest.raises(ProxycastError) as refused:
        overload.admit(stream=True)
    assert refused.value.kind == "overloaded"
    assert "new streams are refused" in refused.value.message
    assert "90% of server.max_memory_mb" in overload.reason

    memory[0] = 99 * MB
    overload.sample()
    with pytest.raises(ProxycastError, match="new model requests are refused"):
        overload.admit(stream=False)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as statm:
        return int(statm.read().split()[1]) * 4096


async def _state(client: httpx.AsyncClient, url: str) -> tuple[dict[str, str], int]:
    health = (await client.get(url + "/health")).json()
    metrics = (await client.get(url + "/metrics", headers=AUTH)).text
    line = next(
        line for line in metrics.splitlines() if line.startswith("proxycast_overload_state")
    )
    return health, int(float(line.split()[-1]))


async def test_a_flood_is_shed_within_the_limit_and_the_gateway_recovers(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    # the limit just above what this machine's worker takes idle: 85% of it is ~60 MB more
    async with serve(["--config", str(config_file(tmp_path, fake.base_url))]) as served:
        async with httpx.AsyncClient() as client:
            assert (await client.get(served.url + "/health")).status_code == 200
        limit_mb = _rss(served.process.pid) // MB + 80
    config = config_file(tmp_path, fake.base_url, max_memory_mb=limit_mb)
    fake.script(*[Script(chunks=40, interval=0.1)] * 2000)  # slow streams: 4 s each
    filler = "x" * (6 * MB)
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": filler}]}
    statuses: dict[int, int] = {}
    refusals: list[httpx.Response] = []
    peak = 0
    # the probes on connections of their own (an idle keep-alive one is closed while shedding)
    probes = httpx.Limits(max_keepalive_connections=0)
    async with (
        serve(["--config", str(config)]) as served,
        httpx.AsyncClient(timeout=60) as flooding,
        httpx.AsyncClient(timeout=60, limits=probes) as client,
    ):
        url, pid = served.url, served.process.pid
        assert await _state(client, url) == ({"status": "ok"}, 0)
        assert _rss(pid) < limit_mb * MB * 0.8

        async def one(stream: bool) -> None:
            body = json.dumps({**big, "stream": stream}).encode()
            try:
                async with flooding.stream(
                    "POST",
                    url + "/v1/chat/completions",
                    content=body,
                    headers={**AUTH, "content-type": "application/json"},
                ) as response:
                    await response.aread()
            except httpx.TransportError:
                # refused before its body was read: the answer came with Connection: close, and
                # the client, still sending, may see the close first
                statuses[0] = statuses.get(0, 0) + 1
                return
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 503:
                refusals.append(response)
            fake.requests.clear()  # the fake keeps what it was sent: not this test's memory

        small = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        seen: dict[str, object] = {}
        async with trio.open_nursery() as flood:
            with trio.move_on_after(150):
                while len(seen) < 3:  # flood until shedding was seen from the outside
                    for stream in (True, True, False):
                        flood.start_soon(one, stream)
                    await trio.sleep(0.2)
                    peak = max(peak, _rss(pid))
                    health, state = await _state(client, url)
                    if health["status"] == "degraded":
                        assert health["reason"].startswith("memory at "), health
                        seen["health"] = health
                    if state:
                        seen["metric"] = state
                    async with client.stream(
                        "POST", url + "/v1/chat/completions", json=small, headers=AUTH
                    ) as probe:  # not read unless refused: a stream admitted is slow
                        if probe.status_code == 503:  # a stream refused, in OpenAI's shape
                            assert probe.headers["retry-after"]
                            message = json.loads(await probe.aread())["error"]["message"]
                            assert message.startswith("The gateway is overloaded (memory at ")
                            seen["refused"] = message
            assert len(seen) == 3, (peak // MB, statuses, seen)
            while flood.child_tasks:
                peak = max(peak, _rss(pid))
                await trio.sleep(0.1)
        assert peak < limit_mb * MB, (peak // MB, statuses)
        assert statuses.get(200), statuses
        assert statuses.get(503), statuses
        assert all(r.headers.get("retry-after") for r in refusals)

        with trio.fail_after(60):  # it recovers by itself
            while await _state(client, url) != ({"status": "ok"}, 0):  # noqa: ASYNC110 - polled over HTTP
                await trio.sleep(0.2)
        fake.clear_scripts()
        response = await client.post(url + "/v1/chat/completions", json=small, headers=AUTH)
        assert response.status_code == 200


# A body's memory: a large body is held once, as its bytes, and forwarded as slices of them.


def _sent(fake: FakeOpenAI) -> bytes:
    return fake.requests[-1].body


@pytest.mark.parametrize(
    ("extra", "stream"),
    [
        pytest.param({}, False, id="as-is"),
        pytest.param({}, True, id="usage-asked"),
        pytest.param({"stream_options": {"include_usage": False}}, True, id="usage-replaced"),
    ],
)
async def test_a_large_body_goes_upstream_byte_for_byte(
    nursery: trio.Nursery, fake: FakeOpenAI, extra: dict[str, object], stream: bool
) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url))
    # non-ASCII text before and after the edits: byte offsets differ from character offsets
    content = "é😀 " * (HOLD_ONCE_BYTES // 7) + "fin"
    text = json.dumps(
        {"messages": [{"role": "user", "content": content}], "model": "gpt-4o", **extra, "n": 1},
        ensure_ascii=False,
        indent=1,
    )
    body = (text[:-1] + f', "stream": {json.dumps(stream)}}}').encode()
    assert len(body) > HOLD_ONCE_BYTES
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(
            gateway.v1 + "/chat/completions",
            content=body,
            headers={**AUTH, "content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    expected = body.replace(b'"model": "gpt-4o"', b'"model": "llama3.2"')
    if extra:
        expected = expected.replace(
            b'"stream_options": {\n  "include_usage": false\n }',
            b'"stream_options": {"include_usage": true}',
        )
    elif stream:
        expected = expected[:-1] + b', "stream_options": {"include_usage": true}}'
    assert _sent(fake) == expected


async def test_the_bodies_held_are_given_back(nursery: trio.Nursery, fake: FakeOpenAI) -> None:
    """Each request's reservation under ``max_inflight_body_bytes`` ends with it: a limit that
    holds one body admits any number, one after the other, whatever became of each."""
    size = 2 * HOLD_ONCE_BYTES
    config = make_config(fake.base_url, max_inflight_body_bytes=size + 1000)
    gateway = await start_gateway(nursery, config)
    filler = "x" * size
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": filler}]})
    fake.script(Script(status=400), Script(status=400))  # the upstream's refusals
    async with httpx.AsyncClient(timeout=60) as client:
        for stream, status in ((False, 400), (True, 400), (False, 200), (True, 200)):
            response = await client.post(
                gateway.v1 + "/chat/completions",
                content=body[:-1] + f', "stream": {json.dumps(stream)}}}',
                headers={**AUTH, "content-type": "application/json"},
            )
            assert response.status_code == status
        # invalid: refused after its body was read
        response = await client.post(
            gateway.v1 + "/chat/completions",
            content=body.replace('"messages"', '"messages": 5, "x"'),
            headers={**AUTH, "content-type": "application/json"},
        )
        assert response.status_code == 400
        big = body[:-1] + ', "n": 1' + " " * (size + 2000) + "}"  # over the limit: 503
        response = await client.post(
            gateway.v1 + "/chat/completions",
            content=big,
            headers={**AUTH, "content-type": "application/json"},
        )
        assert response.status_code == 503
        for _ in range(3):
            response = await client.post(
                gateway.v1 + "/chat/completions",
                content=body,
                headers={**AUTH, "content-type": "application/json"},
            )
            assert response.status_code == 200


def test_byte_spans_of_a_non_ascii_text() -> None:
    text = '{"a": "é😀", "model": "m", "b": [1, "ü"]}'
    _, spans = parse_object(text)
    request = InboundRequest(
        client_model="m", stream=False, operation="generate", parsed=None, text=text, spans=spans
    )
    raw = text.encode()
    held = held_once(request, raw + b" " * HOLD_ONCE_BYTES)
    assert held.text == ""
    assert {key: raw[start:end] for key, (start, end) in held.spans.items()} == {
        key: text[start:end].encode() for key, (start, end) in spans.items()
    }
    assert held_once(request, raw) is request  # a small body keeps its text


async def test_a_large_body_converted_after_all(
    converting: Gateway, claude_fake: FakeAnthropic
) -> None:
    """A large body held once is read again when it goes to an upstream of another format."""
    content = "ü" * HOLD_ONCE_BYTES
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], "stream": True}
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(converting.v1 + "/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.text.rstrip().endswith("data: [DONE]")
    sent = claude_fake.requests[-1].json()
    assert sent["messages"][0]["content"] in (content, [{"type": "text", "text": content}])
    assert sent["model"] == "llama3.2"


async def test_the_state_is_one_gauge_over_the_workers(tmp_path: Path, fake: FakeOpenAI) -> None:
    config = config_file(tmp_path, fake.base_url, max_memory_mb=100_000)
    async with serve(["--config", str(config), "--workers", "2"]) as served:
        async with httpx.AsyncClient() as client:
            assert (await client.get(served.url + "/health")).json() == {"status": "ok"}
            metrics = (await client.get(served.url + "/metrics", headers=AUTH)).text
    states = [line for line in metrics.splitlines() if line.startswith("proxycast_overload_state")]
    assert states == ["proxycast_overload_state 0.0"]


async def test_the_trimmer_looks_only_from_a_burst_of_large_bodies_to_its_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The allocator's trimmer costs a worker without large bodies no timer: it looks at the bodies
    held only once they reached TRIM_AFTER_BYTES (a wake), trims when the burst is over, and sleeps
    again."""
    from proxycast.core import allocator
    from proxycast.core.exchange import Exchange

    exchange = Exchange(make_config("http://127.0.0.1:9"))
    looks: list[int] = []

    def held() -> int:
        looks.append(exchange.inflight_body_bytes)
        return exchange.inflight_body_bytes

    trimmer = allocator.Trimmer(held)
    exchange.on_large_bodies = trimmer.wake
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trimmer.run)
        release = exchange.reserve_body(1024)  # a small body: nothing to watch
        await trio.sleep(60)
        assert looks == []
        release()
        large = [exchange.reserve_body(allocator.TRIM_AFTER_BYTES // 2) for _ in range(2)]
        await trio.sleep(1)
        assert looks[-1] == allocator.TRIM_AFTER_BYTES  # the peak seen
        for release in large:
            release()
        await trio.sleep(1)
        seen = len(looks)
        assert looks[-1] == 0  # the burst's end seen (and trimmed): asleep again
        await trio.sleep(60)
        assert len(looks) == seen
        nursery.cancel_scope.cancel()


async def _head(url: str, request: str) -> bytes:
    """The status line and headers of the answer to a raw ``request`` (sent without a body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request.replace("\n", "\r\n").encode())
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                piece = await stream.receive_some()
                if not piece:
                    break
                answer += piece
    return answer.split(b"\r\n\r\n")[0]


async def test_a_websockets_declared_body_is_not_counted(
    nursery: trio.Nursery, fake: FakeOpenAI
) -> None:
    """A WebSocket upgrade never sends the body its Content-Length declares: counted, it would stay
    counted for good, and refuse every request with a body."""
    gateway = await start_gateway(nursery, make_config(fake.base_url, max_memory_mb=100_000))
    giant = 45 * 1024**3  # twice: 92% of the limit
    upgrade = (
        f"GET /v1/responses HTTP/1.1\nHost: gw\nUpgrade: websocket\nConnection: Upgrade\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n"
        f"Authorization: Bearer {CLIENT_KEY}\nContent-Length: {giant}\n\n"
    )
    for _ in range(2):
        assert (await _head(gateway.url, upgrade)).startswith(b"HTTP/1.1 101")
    post = (
        f"POST /v1/chat/completions HTTP/1.1\nHost: gw\nAuthorization: Bearer {CLIENT_KEY}\n"
        f"Content-Type: application/json\nContent-Length: {4 * 1024**3}\n\n"
    )  # declared, not sent: 413 (over max_body_bytes), not 503 (the upgrades' bodies counted)
    assert (await _head(gateway.url, post)).startswith(b"HTTP/1.1 413")
