"""Shutdown of a real ``proxycast serve``: idle connections, streams past the grace, refusing newcomers."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from proxycast.testing import FakeOpenAI, Script
from tests.test_cli import AUTH, BODY, config_file, serve
from tests.test_connections import Connection, post

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_an_idle_connection_does_not_hold_shutdown(
    tmp_path: Path, fake: FakeOpenAI, workers: str
) -> None:
    config = config_file(tmp_path, fake.base_url, shutdown_grace=10.0, keepalive_timeout=60.0)
    async with serve(["--config", str(config), "--workers", workers]) as served:
        connection = await Connection.open(served.url)
        payload = json.dumps(BODY).encode()
        await connection.send(post("/v1/chat/completions", payload) + payload)
        assert (await connection.answer()).status == 200
        started = trio.current_time()
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(9):  # the grace is 10 s
            assert await connection.at_eof()
            assert await served.process.wait() == 0
        print(f"workers={workers}: stopped in {trio.current_time() - started:.2f} s")
        assert trio.current_time() - started < 5
        await connection.aclose()


@pytest.mark.parametrize(
    "script",
    [
        # the deadline finds the stream between two pieces (20 s of them)
        Script(text=" ".join(["word"] * 200), interval=0.1),
        # the deadline finds it waiting on an upstream silent for a minute: the wait is woken
        Script(text=" ".join(["word"] * 5), stall_after=3, stall_seconds=60.0),
    ],
    ids=["pieces", "silent"],
)
async def test_a_stream_past_the_grace_ends_with_an_error_frame(
    tmp_path: Path, fake: FakeOpenAI, script: Script
) -> None:
    config = config_file(tmp_path, fake.base_url, shutdown_grace=1.0)
    async with serve(["--config", str(config)]) as served:
        fake.script(script)
        async with (
            httpx.AsyncClient() as h,
            h.stream(
                "POST",
                served.url + "/v1/chat/completions",
                json={**BODY, "stream": True},
                headers=AUTH,
            ) as response,
        ):
            lines = response.aiter_lines()
            assert (await lines.__anext__()).startswith("data: ")
            started = trio.current_time()
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(8):
                rest = [line async for line in lines if line.startswith("data: ")]
        elapsed = trio.current_time() - started
        print(f"stream ended {elapsed:.2f} s after SIGTERM (grace 1 s)")
        assert "data: [DONE]" not in rest
        error = json.loads(rest[-1][6:])["error"]
        assert "shutting down" in error["message"]
        with trio.fail_after(8):
            assert await served.process.wait() == 0


async def _one_request(url: str) -> None:
    connection = await Connection.open(url)
    payload = json.dumps(BODY).encode()
    await connection.send(post("/v1/chat/completions", payload) + payload)
    await connection.answer()


async def test_two_workers_refuse_new_connections_while_draining(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = config_file(tmp_path, fake.base_url, shutdown_grace=2.0)
    async with serve(["--config", str(config), "--workers", "2"]) as served:
        # a stream keeps one worker draining
        fake.script(Script(text=" ".join(["word"] * 100), interval=0.1))
        async with (
            httpx.AsyncClient() as h,
            h.stream(
                "POST",
                served.url + "/v1/chat/completions",
                json={**BODY, "stream": True},
                headers=AUTH,
            ) as response,
        ):
            lines = response.aiter_lines()
            assert (await lines.__anext__()).startswith("data: ")
            served.process.send_signal(signal.SIGTERM)
            await trio.sleep(0.5)
            started = trio.current_time()
            with trio.fail_after(3):  # hung until the end of the drain, before
                with pytest.raises((OSError, EOFError, trio.BrokenResourceError)):
                    await _one_request(served.url)
            print(f"refused in {trio.current_time() - started:.3f} s")
        with trio.fail_after(15):
            assert await served.process.wait() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_an_open_dashboard_does_not_hold_shutdown(
    tmp_path: Path, fake: FakeOpenAI, workers: str
) -> None:
    # the dashboard's live feed is a stream that never ends by itself: a shutdown ends it at once
    config = config_file(tmp_path, fake.base_url, shutdown_grace=10.0)
    async with (
        serve(["--config", str(config), "--workers", workers]) as served,
        httpx.AsyncClient(base_url=served.url, headers=AUTH) as http,
        http.stream("GET", "/ui/api/live") as live,
    ):
        lines = live.aiter_lines()
        assert await anext(lines) == "event: hello"
        started = trio.current_time()
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(9):  # the grace is 10 s
            rest = [line async for line in lines]
            assert await served.process.wait() == 0
        assert "event: request" not in rest
        assert trio.current_time() - started < 5
