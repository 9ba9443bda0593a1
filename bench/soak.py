"""A soak: `proxycast serve` under mixed load for minutes (answers, streams, converted streams, clients
that leave mid-stream, bad requests, wrong keys, idle keep-alive connections), with the gateway's RSS
and open file descriptors sampled all along. Flat series are the result.

    .venv/bin/python bench/soak.py [--minutes 10] [--concurrency 16]

The upstreams are proxycast's own fakes (in this process, on loopback); the gateway runs in its own
process. Writes bench/results/soak.json and soak.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

from proxycast.testing import AnthropicScript, FakeAnthropic, FakeOpenAI, Script
from proxycast.testing import anthropic as fa

RESULTS = Path(__file__).parent / "results"
KEY = "soak-client-key"
AUTH = {"authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "Hi"}]


def config(folder: Path, openai_url: str, anthropic_url: str) -> Path:
    path = folder / "soak.toml"
    path.write_text(
        f"""
[server]
port = 0
api_keys = ["{KEY}"]
keepalive_timeout = 5.0
[[providers]]
name = "local"
type = "openai"
base_url = "{openai_url}"
api_keys = ["sk-soak-upstream-key"]
models = ["llama"]
[[providers]]
name = "claude"
type = "anthropic"
base_url = "{anthropic_url}"
api_keys = ["sk-ant-soak-upstream-key"]
models = ["claude-soak"]
"""
    )
    return path


def sample(pid: int) -> tuple[float, int]:
    """The process's resident memory (MB) and open file descriptors."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def one(
    client: httpx.AsyncClient,
    base: str,
    rng: random.Random,
    counts: Counter[str],
    times: list[float],
) -> None:
    roll = rng.random()
    start = trio.current_time()
    if roll < 0.35:
        kind = "answer"
        r = await client.post(
            f"{base}/v1/chat/completions", json={"model": "llama", "messages": HI}, headers=AUTH
        )
        counts[f"{kind} {r.status_code}"] += 1
    elif roll < 0.55:
        kind = "stream"
        body = {"model": "llama", "messages": HI, "stream": True}
        async with client.stream(
            "POST", f"{base}/v1/chat/completions", json=body, headers=AUTH
        ) as r:
            async for _ in r.aiter_bytes():
                pass
        counts[f"{kind} {r.status_code}"] += 1
    elif roll < 0.70:
        kind = "converted stream"
        body = {"model": "claude-soak", "max_tokens": 50, "messages": HI, "stream": True}
        async with client.stream(
            "POST", f"{base}/v1/messages", json=body, headers={"x-api-key": KEY}
        ) as r:
            async for _ in r.aiter_bytes():
                pass
        counts[f"{kind} {r.status_code}"] += 1
    elif roll < 0.82:
        kind = "left mid-stream"
        body = {"model": "llama", "messages": HI, "stream": True}
        async with httpx.AsyncClient() as own:  # its own connection, dropped when it leaves
            async with own.stream(
                "POST", f"{base}/v1/chat/completions", json=body, headers=AUTH
            ) as r:
                async for _ in r.aiter_bytes():
                    break
        counts[f"{kind} {r.status_code}"] += 1
    elif roll < 0.94:
        kind = "bad request"
        bad = rng.choice(
            [
                (b"{not json", AUTH),
                (json.dumps({"model": "nope", "messages": HI}).encode(), AUTH),
                (
                    json.dumps({"model": "llama", "messages": HI}).encode(),
                    {"authorization": "Bearer wrong"},
                ),
                (b"[" * 500 + b"]" * 500, AUTH),
                (json.dumps({"model": "llama", "messages": HI, "temperature": 9}).encode(), AUTH),
            ]
        )
        r = await client.post(f"{base}/v1/chat/completions", content=bad[0], headers=bad[1])
        counts[f"{kind} {r.status_code}"] += 1
    else:
        kind = "idle connection"
        async with httpx.AsyncClient() as own:
            await own.get(
                f"{base}/health" if rng.random() < 0.5 else f"{base}/v1/models", headers=AUTH
            )
            await trio.sleep(rng.uniform(0.5, 8))  # idle past keepalive_timeout half the time
        counts[kind] += 1
    times.append(trio.current_time() - start)


async def soak(minutes: float, concurrency: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="proxycast-soak-"))
    openai = FakeOpenAI(Script(text="soak " * 20, chunks=10, interval=0.02))
    claude = FakeAnthropic(
        AnthropicScript(blocks=(fa.Text("soak " * 20),), pieces=10, interval=0.02)
    )
    counts: Counter[str] = Counter()
    times: list[float] = []
    series: list[dict[str, float]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(openai.serve)
        await nursery.start(claude.serve)
        log = (folder / "gateway.log").open("wb")
        env = {**os.environ, "PROXYCAST_HOME": str(folder / "home")}
        gateway = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "proxycast",
                "serve",
                "--config",
                str(config(folder, openai.base_url, claude.base_url)),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
        assert gateway.stdout is not None
        banner = b""
        while b"\n" not in banner:
            banner += await gateway.stdout.receive_some()
        base = banner.split(b"\n")[0].decode().split()[-1]  # "proxycast listening on http://..."
        started = time.monotonic()
        deadline = trio.current_time() + minutes * 60
        rng = random.Random(7)

        async def worker() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                while trio.current_time() < deadline:
                    try:
                        await one(client, base, rng, counts, times)
                    except httpx.HTTPError as exc:
                        counts[f"client error {type(exc).__name__}"] += 1

        async def sampler() -> None:
            while trio.current_time() < deadline + 10:  # and after the load stops
                rss, fds = sample(gateway.pid)
                series.append(
                    {"t": round(time.monotonic() - started, 1), "rss_mb": round(rss, 1), "fds": fds}
                )
                await trio.sleep(5)

        async with trio.open_nursery() as load:
            load.start_soon(sampler)
            for _ in range(concurrency):
                load.start_soon(worker)
        gateway.terminate()
        await gateway.wait()
        nursery.cancel_scope.cancel()
    leaked = [
        line
        for line in (folder / "gateway.log").read_text().splitlines()
        if "sk-soak" in line or "sk-ant-soak" in line
    ]
    steady = [s for s in series if s["t"] >= 60] or series
    return {
        "minutes": minutes,
        "concurrency": concurrency,
        "requests": sum(counts.values()),
        "per_second": round(sum(counts.values()) / (minutes * 60), 1),
        "outcomes": dict(sorted(counts.items())),
        "latency_p50_ms": round(statistics.median(times) * 1000, 1),
        "latency_p99_ms": round(sorted(times)[int(len(times) * 0.99)] * 1000, 1),
        "rss_mb": {
            "first": series[0]["rss_mb"],
            "after_1_min": steady[0]["rss_mb"],
            "last": series[-1]["rss_mb"],
            "max": max(s["rss_mb"] for s in series),
        },
        "fds": {
            "first": series[0]["fds"],
            "max": max(s["fds"] for s in series),
            "last": series[-1]["fds"],
        },
        "log_lines_with_a_key": len(leaked),
        "series": series,
    }


def markdown(result: dict[str, Any]) -> str:
    rss, fds = result["rss_mb"], result["fds"]
    lines = [
        f"# Soak: {result['minutes']:g} minutes, {result['concurrency']} concurrent clients",
        "",
        f"- {result['requests']} requests ({result['per_second']}/s), latency p50 {result['latency_p50_ms']} ms, "
        f"p99 {result['latency_p99_ms']} ms",
        f"- RSS (MB): first {rss['first']}, after 1 min {rss['after_1_min']}, last {rss['last']}, max {rss['max']}",
        f"- open fds: first {fds['first']}, max {fds['max']}, last (10 s after the load) {fds['last']}",
        f"- gateway log lines holding an upstream key: {result['log_lines_with_a_key']}",
        "",
        "| outcome | count |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in result["outcomes"].items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    result = trio.run(soak, args.minutes, args.concurrency)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "soak.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
