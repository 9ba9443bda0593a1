"""Disconnect-to-upstream-close latency: how long after a client goes away the upstream sees its
request abandoned.

The gateway runs in its own process (``proxycast serve``); the fake upstream and the clients run here,
so both ends of the measurement read the same clock. Each round starts a request, waits until the
upstream has it (and, mid-stream, until the client has read two chunks), closes the client's
connection, and records how long the upstream took to see its own connection close.

    python bench/disconnect.py [--rounds 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import trio

from proxycast.testing import FakeOpenAI, Script

KEY = "bench-key"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def one_round(url: str, fake: FakeOpenAI, phase: str) -> float:
    count = len(fake.requests) + 1
    stream = phase != "non-streamed"
    if phase == "mid-stream":
        fake.script(Script(text=" ".join(["w"] * 1000), interval=0.05))
    else:
        fake.script(Script(headers_delay=60))
    async with httpx.AsyncClient() as client:
        if phase == "mid-stream":
            async with client.stream(
                "POST",
                url + "/v1/chat/completions",
                json={**BODY, "stream": True},
                headers={"authorization": f"Bearer {KEY}"},
            ) as response:
                lines = response.aiter_lines()
                seen = 0
                async for line in lines:
                    seen += line.startswith("data: ")
                    if seen == 2:
                        break
                closed_at = trio.current_time()
                await lines.aclose()  # type: ignore[attr-defined]
        else:
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    await client.post(
                        url + "/v1/chat/completions",
                        json={**BODY, "stream": stream},
                        headers={"authorization": f"Bearer {KEY}"},
                    )

                nursery.start_soon(call)
                await fake.wait_for_requests(count)
                closed_at = trio.current_time()
                nursery.cancel_scope.cancel()
    request = fake.requests[count - 1]
    with trio.fail_after(10):
        await request.ended.wait()
    assert request.abandoned_at is not None
    assert not request.completed
    return request.abandoned_at - closed_at


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(rounds: int) -> dict[str, object]:
    fake = FakeOpenAI()
    async with trio.open_nursery() as nursery:
        upstream = await nursery.start(fake.serve)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "proxycast.toml"
            config.write_text(
                f'[server]\nport = 0\napi_keys = ["{KEY}"]\n\n[[providers]]\nname = "fake"\n'
                f'type = "openai"\nbase_url = "{upstream}"\nmodels = ["m"]\n'
            )
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "proxycast", "serve", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            try:
                assert process.stdout is not None
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive_some(1)
                url = line.decode().split()[-1]
                results: dict[str, list[float]] = {}
                for phase in ("waiting for headers", "mid-stream", "non-streamed"):
                    results[phase] = [await one_round(url, fake, phase) for _ in range(rounds)]
            finally:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
        nursery.cancel_scope.cancel()
    everything = [v for values in results.values() for v in values]
    summary: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.release()}",
        "rounds_per_phase": rounds,
        "phases": {
            phase: {
                "p50_ms": round(percentile(values, 0.5) * 1000, 3),
                "p99_ms": round(percentile(values, 0.99) * 1000, 3),
                "max_ms": round(max(values) * 1000, 3),
            }
            for phase, values in results.items()
        },
        "all": {
            "p50_ms": round(percentile(everything, 0.5) * 1000, 3),
            "p99_ms": round(percentile(everything, 0.99) * 1000, 3),
            "mean_ms": round(statistics.fmean(everything) * 1000, 3),
        },
    }
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="disconnects per phase")
    args = parser.parse_args()
    result = trio.run(main, args.rounds)
    out = Path(__file__).parent / "results" / "disconnect.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
