"""Validation amplification: how long other clients wait while the worst body is validated.

The gateway runs in its own process (``proxycast serve``). A ping loop (``GET /v1/models``, one request
at a time) runs while a 3 MB body holding 1,000,000 invalid messages is posted; the script reports the
ping latencies (p50, p99, max), how long the bad request took, the size of its error body and the
gateway's peak RSS (VmHWM) before and after.

    python bench/validation_stall.py [--messages 1000000] [--path /v1/chat/completions]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import trio

KEY = "bench-key"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(url: str, pid: int, body: bytes, path: str) -> dict[str, float]:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    pings: list[float] = []
    result: dict[str, float] = {"rss_before_mb": peak_rss_mb(pid)}
    async with httpx.AsyncClient(timeout=300) as h:
        for _ in range(20):  # warm up
            await h.get(url + "/v1/models", headers=headers)
        done = trio.Event()

        async def bad() -> None:
            started = trio.current_time()
            response = await h.post(url + path, content=body, headers=headers)
            result["bad_request_s"] = trio.current_time() - started
            result["status"] = response.status_code
            result["error_body_bytes"] = len(response.content)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bad)
            while not done.is_set():
                started = trio.current_time()
                await h.get(url + "/v1/models", headers=headers)
                pings.append(trio.current_time() - started)
    pings.sort()
    result["pings"] = len(pings)
    result["ping_p50_ms"] = statistics.median(pings) * 1000
    result["ping_p99_ms"] = pings[min(len(pings) - 1, int(len(pings) * 0.99))] * 1000
    result["ping_max_ms"] = pings[-1] * 1000
    result["rss_peak_mb"] = peak_rss_mb(pid)
    return result


async def main(messages: int, path: str) -> None:
    body = json.dumps({"model": "m", "messages": [1] * messages}, separators=(",", ":")).encode()
    print(f"body: {len(body) / 1e6:.1f} MB, {messages} invalid messages, {path}")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "proxycast.toml"
        config.write_text(
            f'[server]\nport = 0\napi_keys = ["{KEY}"]\n\n[[providers]]\nname = "local"\n'
            'type = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodels = ["m"]\n'
        )
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "proxycast", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            env={**os.environ},
        )
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
            url = line.decode().split()[-1]
            result = await measure(url, process.pid, body, path)
        finally:
            process.terminate()
            await process.wait()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--path", default="/v1/chat/completions")
    args = parser.parse_args()
    trio.run(main, args.messages, args.path)
