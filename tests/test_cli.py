"""``proxycast serve`` as a user runs it: a real process, its banner, signals and workers."""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest
import trio

from proxycast.testing import FakeOpenAI, Script
from tests.support import CLIENT_KEY

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def config_file(tmp_path: Path, upstream: str, **server: object) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in server.items())
    path = tmp_path / "proxycast.toml"
    path.write_text(
        f"""
[server]
port = 0
api_keys = ["{CLIENT_KEY}"]
{extra}
[[providers]]
name = "local"
type = "openai"
base_url = "{upstream}"
models = ["llama3.2"]

[aliases]
"gpt-4o" = "llama3.2"
"""
    )
    return path


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def line(self) -> str:
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some()
            if not data:
                raise EOFError(self._buffer.decode())
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


@attrs.define
class Served:
    process: trio.Process
    reader: LineReader
    url: str


@asynccontextmanager
async def serve(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> AsyncIterator[Served]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "proxycast", "serve", *args],
        stdout=__import__("subprocess").PIPE,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        assert process.stdout is not None
        reader = LineReader(process.stdout)
        with trio.fail_after(30):
            first = await reader.line()
        assert first.startswith("proxycast listening on http://127.0.0.1:"), first
        yield Served(process, reader, first.rsplit(" ", 1)[1])
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def test_serve_prints_the_banner_and_serves(tmp_path: Path, fake: FakeOpenAI) -> None:
    async with serve(["--config", str(config_file(tmp_path, fake.base_url))]) as served:
        assert (await served.reader.line()).startswith(
            "  provider local (openai, http://127.0.0.1:"
        )
        assert await served.reader.line() == "  alias gpt-4o -> llama3.2"
        async with httpx.AsyncClient() as h:
            response = await h.post(served.url + "/v1/chat/completions", json=BODY, headers=AUTH)
        assert response.status_code == 200
        assert response.json()["model"] == "gpt-4o"
        served.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await served.process.wait() == 0


async def test_sigterm_lets_an_in_flight_stream_finish(tmp_path: Path, fake: FakeOpenAI) -> None:
    config = config_file(tmp_path, fake.base_url, shutdown_grace=10.0)
    async with serve(["--config", str(config)]) as served:
        fake.script(Script(text=" ".join(f"w{i}" for i in range(10)), interval=0.1))
        async with httpx.AsyncClient() as h:
            async with h.stream(
                "POST",
                served.url + "/v1/chat/completions",
                json={**BODY, "stream": True},
                headers=AUTH,
            ) as response:
                lines = response.aiter_lines()
                first = await lines.__anext__()
                assert first.startswith("data: ")
                served.process.send_signal(signal.SIGTERM)
                rest = [line async for line in lines]
        assert "data: [DONE]" in rest
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in [first, *rest]
            if line.startswith("data: {")
        )
        assert text == " ".join(f"w{i}" for i in range(10))
        with trio.fail_after(15):
            assert await served.process.wait() == 0


async def test_a_client_that_stops_reading_cannot_hold_shutdown(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = config_file(tmp_path, fake.base_url, shutdown_grace=1.0, stalled_client_timeout=1.0)
    async with serve(["--config", str(config)]) as served:
        # ~40 MB answered as fast as possible: far more than the loopback socket buffers hold
        fake.script(Script(text="x" * 40_000_000, chunks=600))
        host, port = served.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        payload = json.dumps({**BODY, "stream": True}).encode()
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {CLIENT_KEY}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 200")
        await trio.sleep(1.0)  # the client reads nothing more; the gateway's writes now block
        started = trio.current_time()
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):  # without TCP_USER_TIMEOUT this waits forever
            await served.process.wait()
        assert trio.current_time() - started < 20
        await stream.aclose()


async def test_two_workers_serve(tmp_path: Path, fake: FakeOpenAI) -> None:
    config = config_file(tmp_path, fake.base_url)
    async with serve(["--config", str(config), "--workers", "2"]) as served:
        async with httpx.AsyncClient() as h:
            for _ in range(6):
                response = await h.post(
                    served.url + "/v1/chat/completions", json=BODY, headers=AUTH
                )
                assert response.status_code == 200
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await served.process.wait() == 0
    assert len(fake.requests) == 6


async def test_environment_only_mode_generates_and_prints_a_key(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    env = {
        "PROXYCAST_HOME": str(tmp_path / "home"),
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake.base_url,
        "PROXYCAST_API_KEY": "",
        "ANTHROPIC_API_KEY": "",
        "GEMINI_API_KEY": "",
        "GOOGLE_API_KEY": "",
    }
    async with serve(["--port", "0"], env=env, cwd=tmp_path) as served:
        lines = [await served.reader.line() for _ in range(2)]
        assert lines[0].startswith("  provider openai (openai, http://127.0.0.1:")
        key_line = lines[1]
        assert key_line.startswith("client key: pc-")
        key = key_line.split()[2]
        assert (tmp_path / "home" / "client-key").read_text().strip() == key
        async with httpx.AsyncClient() as h:
            ok = await h.post(
                served.url + "/v1/chat/completions",
                json={**BODY, "model": "gpt-4o-mini"},
                headers={"authorization": f"Bearer {key}"},
            )
        assert ok.status_code == 200
        assert fake.requests[-1].headers["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("args", [["--port", "99999"], ["--config", "/nonexistent.toml"]])
async def test_serve_fails_clearly(args: list[str]) -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "proxycast", "serve", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("proxycast: ")
    assert b"Traceback" not in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_serve_raises_its_open_file_limit(tmp_path: Path, fake: FakeOpenAI) -> None:
    # every stream holds two sockets: a soft limit of 256 would cap the worker near 128 streams
    command = (
        f"ulimit -Sn 256 && exec {sys.executable} -m proxycast serve "
        f"--config {config_file(tmp_path, fake.base_url)}"
    )
    process = await trio.lowlevel.open_process(
        ["sh", "-c", command], stdout=__import__("subprocess").PIPE
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(30):
            assert (await LineReader(process.stdout).line()).startswith("proxycast listening")
        limits = (trio.Path("/proc") / str(process.pid) / "limits").read_text()
        line = next(x for x in (await limits).splitlines() if x.startswith("Max open files"))
        soft, hard = line.split()[3:5]
        assert soft != "256"
        assert soft == hard or hard == "unlimited"
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
