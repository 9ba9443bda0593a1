"""Client connections over raw sockets: keep-alive after early answers, idle timeouts, framing, headers."""

from __future__ import annotations

import gc
import json
from typing import TYPE_CHECKING

import attrs
import pytest
import trio

from tests.support import CLIENT_KEY, make_config, start_gateway

if TYPE_CHECKING:
    from proxycast.testing import FakeOpenAI
    from tests.support import Gateway

BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()


@attrs.define
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One client connection, HTTP/1.1 written and read by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    @classmethod
    async def open(cls, url: str) -> Connection:
        host, port = url.removeprefix("http://").split(":")
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> None:
        data = await self.stream.receive_some()
        if not data:
            raise EOFError(self._buffer)
        self._buffer += data

    async def answer(self) -> Answer:
        while b"\r\n\r\n" not in self._buffer:
            await self._more()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            await self._more()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return Answer(int(status_line.split()[1]), headers, body)

    async def at_eof(self) -> bool:
        """True when the server closed the connection (after whatever it had sent)."""
        try:
            while True:
                await self._more()
        except EOFError:
            return True
        except trio.BrokenResourceError:  # reset: closed too
            return True

    async def aclose(self) -> None:
        await self.stream.aclose()


def post(
    path: str, body: bytes, key: str = CLIENT_KEY, extra: str = "", length: int | None = None
) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(body) if length is None else length}"
        f"\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        pytest.param("/v1/chat/completions", "wrong-key", 401, id="401"),
        pytest.param("/v1/nowhere", CLIENT_KEY, 404, id="404"),
    ],
)
async def test_an_early_answer_leaves_the_connection_usable(
    gateway: Gateway, path: str, key: str, status: int
) -> None:
    # the headers go first and the body only once the early answer is in: the body arrives after the
    # request was answered, and must not strand the next request on the connection
    connection = await Connection.open(gateway.url)
    with trio.fail_after(10):
        for i in range(30):
            await connection.send(post(path, BODY, key))
            if i % 2:  # the body before the answer, in a packet of its own
                await trio.sleep(0.001)
                await connection.send(BODY)
                assert (await connection.answer()).status == status
            else:
                assert (await connection.answer()).status == status
                await connection.send(BODY)
            await connection.send(post("/v1/chat/completions", BODY) + BODY)
            assert (await connection.answer()).status == 200
    await connection.aclose()


async def test_an_early_answer_to_a_large_body_closes_the_connection(gateway: Gateway) -> None:
    connection = await Connection.open(gateway.url)
    with trio.fail_after(10):
        await connection.send(post("/v1/chat/completions", b"", "wrong-key", length=10_000_000))
        answer = await connection.answer()
        assert answer.status == 401
        assert answer.headers["connection"] == "close"
        assert await connection.at_eof()
    await connection.aclose()


async def test_idle_connections_are_closed_after_the_keepalive_timeout(
    nursery: trio.Nursery, fake: FakeOpenAI
) -> None:
    gateway = await start_gateway(nursery, make_config(fake.base_url, keepalive_timeout=1.0))
    connections: list[Connection] = []
    try:
        with trio.fail_after(20):
            for _ in range(25):  # half of them idle after one request...
                connection = await Connection.open(gateway.url)
                connections.append(connection)
                await connection.send(post("/v1/chat/completions", BODY) + BODY)
                assert (await connection.answer()).status == 200
            for _ in range(25):  # ...and half idle before any
                connections.append(await Connection.open(gateway.url))
            started = trio.current_time()
            for connection in connections:
                assert await connection.at_eof()
        assert trio.current_time() - started < 5
    finally:
        for connection in connections:
            await connection.aclose()


async def test_connection_close_is_followed_by_eof(gateway: Gateway) -> None:
    connection = await Connection.open(gateway.url)
    with trio.fail_after(5):
        await connection.send(
            post("/v1/chat/completions", BODY, extra="connection: close\r\n") + BODY
        )
        answer = await connection.answer()
        assert answer.status == 200
        assert answer.headers["connection"] == "close"
        assert await connection.at_eof()
    await connection.aclose()


async def test_content_length_with_transfer_encoding_is_refused(gateway: Gateway) -> None:
    connection = await Connection.open(gateway.url)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    with trio.fail_after(5):
        await connection.send(
            post("/v1/chat/completions", BODY, extra="transfer-encoding: chunked\r\n") + chunked
        )
        answer = await connection.answer()
        assert answer.status == 400
        assert "Transfer-Encoding" in json.loads(answer.body)["error"]["message"]
        assert await connection.at_eof()
    await connection.aclose()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a\x01b", id="SOH"),
        pytest.param("a\x1fb", id="US"),
        pytest.param("a\x7fb", id="DEL"),
        pytest.param("a\x08b", id="BS"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_control_characters_in_a_header_value_are_refused(
    gateway: Gateway, value: str, path: str
) -> None:
    connection = await Connection.open(gateway.url)
    with trio.fail_after(5):
        await connection.send(post(path, BODY, extra=f"x-note: {value}\r\n") + BODY)
        answer = await connection.answer()
    assert answer.status == 400
    error = json.loads(answer.body)
    if path == "/v1/messages":
        assert error["type"] == "error"
    assert "x-note" in json.dumps(error)
    await connection.aclose()


async def test_a_tab_in_a_header_value_is_fine(gateway: Gateway) -> None:
    connection = await Connection.open(gateway.url)
    with trio.fail_after(5):
        await connection.send(post("/v1/chat/completions", BODY, extra="x-note: a\tb\r\n") + BODY)
        assert (await connection.answer()).status == 200
    await connection.aclose()


async def test_request_bodies_past_the_inflight_bound_get_503(
    nursery: trio.Nursery, fake: FakeOpenAI
) -> None:
    gateway = await start_gateway(
        nursery, make_config(fake.base_url, max_inflight_body_bytes=len(BODY) + 50)
    )
    holding = await Connection.open(gateway.url)
    other = await Connection.open(gateway.url)
    with trio.fail_after(5):
        await holding.send(post("/v1/chat/completions", BODY) + BODY[:10])  # the rest held back
        await trio.sleep(0.2)
        for path in ("/v1/chat/completions", "/v1/messages"):
            await other.send(post(path, BODY) + BODY)
            answer = await other.answer()
            assert answer.status == (503 if path == "/v1/chat/completions" else 529)
            assert answer.headers["retry-after"] == "1"
            assert "max_inflight_body_bytes" in answer.body.decode()
        await holding.send(BODY[10:])
        assert (await holding.answer()).status == 200
        # the reservation is given back just after the answer is out: once it is, others get in
        statuses = []
        while 200 not in statuses:
            await other.send(post("/v1/chat/completions", BODY) + BODY)
            statuses.append((await other.answer()).status)
            await trio.sleep(0.01)
        assert set(statuses) <= {200, 503}
    await holding.aclose()
    await other.aclose()


async def test_a_closed_connection_is_freed_at_once(gateway: Gateway) -> None:
    """A closed connection's objects go when it closes, not at the cyclic collector's next full
    pass: with 10,000 streams ending, those waiting for one were 3 KB a stream of peak memory."""
    from proxycast.server.connections import _TCPServer

    def alive() -> int:
        return sum(isinstance(o, _TCPServer) for o in gc.get_objects())

    gc.collect()
    before = alive()
    gc.disable()
    try:
        for _ in range(5):
            connection = await Connection.open(gateway.url)
            await connection.send(post("/v1/chat/completions", BODY) + BODY)
            assert (await connection.answer()).status == 200
            await connection.aclose()
        for _ in range(100):  # the server notices each close
            if alive() == before:
                break
            await trio.sleep(0.02)
        assert alive() == before
    finally:
        gc.enable()
