"""Limits, metrics, the ledger and logs of a real ``proxycast serve --workers 2``: rpm, tpm and budgets
exact across the workers (every request on its own connection), metrics summed over the workers,
no ledger row lost to SIGTERM, and no configured key in any log line or error body."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import openai
import trio

from proxycast.testing import FakeOpenAI, Script
from tests.support import CLIENT_KEY, UPSTREAM_KEY
from tests.test_cli import LineReader, Served

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

KEYS = {
    "alice": "alice-key-0c1d2e3f4a5b",
    "bob": "bob-key-9a8b7c6d5e4f",
    "carol": "carol-key-1f2e3d4c5b6a",
}
BODY = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


def team_file(tmp_path: Path, upstream: str, access_log: str = "json") -> Path:
    path = tmp_path / "proxycast.toml"
    path.write_text(
        f"""
[server]
port = 0
api_keys = ["{CLIENT_KEY}"]
shutdown_grace = 10.0
access_log = "{access_log}"

[[providers]]
name = "local"
type = "openai"
base_url = "{upstream}"
api_keys = ["{UPSTREAM_KEY}"]
models = ["llama3.2", "qwen2.5"]

[[clients]]
name = "alice"
api_key = "{KEYS["alice"]}"
models = ["llama3.2"]
rpm = 3

[[clients]]
name = "bob"
api_key = "{KEYS["bob"]}"
tpm = 100

[[clients]]
name = "carol"
api_key = "{KEYS["carol"]}"
max_usd_per_day = 2.5

[prices]
"llama3.2" = {{ input = 0.0, output = 25000.0 }}   # 40 output tokens: $1.00

[ledger]
url = "sqlite:///{tmp_path / "usage.db"}"
"""
    )
    return path


@asynccontextmanager
async def serve(args: list[str], stderr: Path) -> AsyncIterator[Served]:
    """``proxycast serve ARGS``, its stderr (the access log) written to ``stderr``."""
    with stderr.open("wb") as errors:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "proxycast", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=dict(os.environ),
        )
    try:
        assert process.stdout is not None
        reader = LineReader(process.stdout)
        with trio.fail_after(30):
            first = await reader.line()
        yield Served(process, reader, first.rsplit(" ", 1)[1])
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def post(url: str, key: str, body: dict[str, Any] = BODY) -> httpx.Response:
    """One request on a connection of its own (so either worker may take it)."""
    async with httpx.AsyncClient() as h:
        return await h.post(
            url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )


async def test_limits_are_exact_across_two_workers(tmp_path: Path) -> None:
    fake = FakeOpenAI(default=Script(text="ok", completion_tokens=40))
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        config = team_file(tmp_path, fake.base_url)
        stderr = tmp_path / "stderr.log"
        async with serve(["--config", str(config), "--workers", "2"], stderr) as served:
            # rpm = 3: of 8 concurrent requests, exactly 3 pass
            statuses: list[int] = []
            refusals: list[httpx.Response] = []

            async def one() -> None:
                response = await post(served.url, KEYS["alice"])
                statuses.append(response.status_code)
                if response.status_code == 429:
                    refusals.append(response)

            async with trio.open_nursery() as burst:
                for _ in range(8):
                    burst.start_soon(one)
            assert sorted(statuses) == [200] * 3 + [429] * 5
            refused = refusals[0]
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.headers["x-ratelimit-limit-requests"] == "3"
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"
            assert re.fullmatch(r"[\d.]+m?s", refused.headers["x-ratelimit-reset-requests"])

            # tpm = 100: 11 + 40 tokens each, settled after each answer (streamed or not)
            async with openai.AsyncOpenAI(
                base_url=served.url + "/v1", api_key=KEYS["bob"], max_retries=0
            ) as bob:
                stream = await bob.chat.completions.create(**BODY, stream=True)
                assert [c async for c in stream]
                first = await post(served.url, KEYS["bob"])
                assert first.status_code == 200
                assert first.headers["x-ratelimit-limit-tokens"] == "100"
                third = await post(served.url, KEYS["bob"])
                assert third.status_code == 429
                assert third.json()["error"]["code"] == "rate_limit_exceeded"
                assert third.headers["x-ratelimit-remaining-tokens"] == "0"

            # $2.50 a day at $1.00 a request: three requests, then insufficient_quota
            carol = [(await post(served.url, KEYS["carol"])) for _ in range(5)]
            assert [r.status_code for r in carol] == [200, 200, 200, 429, 429]
            assert carol[3].json()["error"]["code"] == "insufficient_quota"

            # every request is counted once, whichever worker served it or answers the scrape
            expected = {("alice", "200"): 3, ("alice", "429"): 5, ("bob", "200"): 2}
            expected |= {("bob", "429"): 1, ("carol", "200"): 3, ("carol", "429"): 2}
            with trio.fail_after(20):
                while True:
                    counted = await _requests_metric(served.url)
                    if counted == expected:
                        break
                    await trio.sleep(0.1)  # the last request's count lands after its answer
            for _ in range(6):  # each scrape on its own connection: either worker answers it
                assert await _requests_metric(served.url) == expected
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await served.process.wait() == 0
        nursery.cancel_scope.cancel()
    db = sqlite3.connect(tmp_path / "usage.db")
    (count, output) = db.execute("SELECT COUNT(*), SUM(output_tokens) FROM requests").fetchone()
    db.close()
    assert count == 16
    assert output == 8 * 40
    lines = [json.loads(line) for line in stderr.read_text().splitlines() if line.startswith("{")]
    assert len([line for line in lines if line["path"] == "/v1/chat/completions"]) == 16


async def _requests_metric(url: str) -> dict[tuple[str, str], int]:
    async with httpx.AsyncClient() as h:
        text = (await h.get(url + "/metrics", headers={"x-api-key": CLIENT_KEY})).text
    out: dict[tuple[str, str], int] = {}
    for match in re.finditer(
        r'proxycast_requests_total\{client="(\w+)",model="[^"]*",provider="[^"]*",'
        r'status="(\d+)"\} ([\d.]+)',
        text,
    ):
        key = (match.group(1), match.group(2))
        out[key] = out.get(key, 0) + int(float(match.group(3)))
    return out


async def test_sigterm_loses_no_ledger_row(tmp_path: Path) -> None:
    fake = FakeOpenAI(default=Script(text="ok"))
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        config = team_file(tmp_path, fake.base_url, access_log="off")
        async with serve(["--config", str(config), "--workers", "2"], tmp_path / "e.log") as served:
            for _ in range(20):
                assert (await post(served.url, CLIENT_KEY)).status_code == 200
            fake.script(Script(text=" ".join(["w"] * 10), interval=0.1))
            async with (
                httpx.AsyncClient() as h,
                h.stream(
                    "POST",
                    served.url + "/v1/chat/completions",
                    json={**BODY, "stream": True},
                    headers={"authorization": f"Bearer {CLIENT_KEY}"},
                ) as response,
            ):
                lines = response.aiter_lines()
                assert (await lines.__anext__()).startswith("data: ")
                served.process.send_signal(signal.SIGTERM)
                rest = [line async for line in lines]
            assert "data: [DONE]" in rest
            with trio.fail_after(30):
                assert await served.process.wait() == 0
        nursery.cancel_scope.cancel()
    db = sqlite3.connect(tmp_path / "usage.db")
    count, streamed = db.execute("SELECT COUNT(*), SUM(streamed) FROM requests").fetchone()
    db.close()
    assert (count, streamed) == (21, 1)


async def test_no_key_in_any_log_line_or_error_body(tmp_path: Path) -> None:
    """A run through every path that logs or answers an error; the keys appear nowhere."""
    fake = FakeOpenAI()
    secrets = [CLIENT_KEY, UPSTREAM_KEY, *KEYS.values()]
    bodies: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        for style in ("text", "json"):
            config = team_file(tmp_path, fake.base_url, access_log=style)
            stderr = tmp_path / f"stderr-{style}.log"
            async with serve(["--config", str(config)], stderr) as served:
                url = served.url
                fake.clear_scripts()  # what the last run's refused requests left queued
                fake.script(
                    Script(text="fine"),
                    Script(status=500, error_message=f"upstream saw key {UPSTREAM_KEY}"),
                    Script(status=401, error_message=f"bad key {UPSTREAM_KEY}"),
                    Script(text="a b c", error_after=1, error_message=f"oops {UPSTREAM_KEY}"),
                )
                answers = [
                    await post(url, KEYS["alice"]),
                    await post(url, KEYS["bob"]),
                    await post(url, KEYS["carol"]),
                    await post(url, KEYS["alice"], {**BODY, "stream": True}),
                    await post(url, KEYS["alice"] + "x"),
                    await post(url, KEYS["alice"], {**BODY, "model": "qwen2.5"}),
                    await post(url, KEYS["alice"], {"model": KEYS["bob"]}),
                    await post(url, KEYS["alice"]),
                    await post(url, KEYS["alice"]),
                    await post(url, KEYS["carol"], {**BODY, "temperature": 9}),
                ]
                async with httpx.AsyncClient() as h:
                    for key in secrets:
                        answers.append(await h.get(url + "/v1/models", headers={"x-api-key": key}))
                        answers.append(
                            await h.get(url + "/v1/nope", headers={"authorization": key})
                        )
                    answers.append(await h.get(url + "/metrics", headers={"x-api-key": CLIENT_KEY}))
                bodies += [a.text for a in answers]
                statuses = {a.status_code for a in answers}
                assert statuses >= {200, 400, 401, 404, 429}
                assert max(statuses) >= 500
                served.process.send_signal(signal.SIGTERM)
                with trio.fail_after(30):
                    await served.process.wait()
            log = stderr.read_text()
            assert log.count("/v1/chat/completions") >= 10
            bodies.append(log)
        nursery.cancel_scope.cancel()
    for text in bodies:
        for secret in secrets:
            assert secret not in text
            assert secret[:16] not in text
