"""The cost of sharing state through Redis: req/s of one proxycast worker whose named client has
limits (rpm, tpm, a daily budget) counted in-process, the same counted in Redis, and two instances on
one Redis (each loaded by its own wrk, summed), in one run, rounds interleaved, on one nginx upstream;
the Redis round trips per request (as the instance counts them: ``proxycast_redis_calls_total``); and, for the choice of client, a script
call from trio through redis-py in a thread against coredis (if installed).

    .venv/bin/python bench/scale_out.py [--seconds 5] [--rounds 3]

Needs nginx, wrk (``bash bench/run`` installs them) and redis-server. The ledger is off in every
configuration (its cost is bench/accounting.py's). Writes bench/results/scale_out.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
import trio

sys.path.insert(0, str(Path(__file__).parent))
import run

RESULTS = Path(__file__).parent / "results"
CLIENT_KEY = "bench-client-key"


def config(folder: Path, name: str, upstream: str, port: int, redis_url: str) -> Path:
    path = folder / f"{name}.toml"
    state = f'redis_url = "{redis_url}"' if redis_url else 'scope = "process"'
    path.write_text(
        f"""
[server]
port = {port}
access_log = "off"
[[providers]]
name = "json"
type = "openai"
base_url = "{upstream}/json/v1"
models = ["bench-json"]
[[clients]]
name = "bench"
api_key = "{CLIENT_KEY}"
rpm = 100000000
tpm = 1000000000000
max_usd_per_day = 1000000000.0
[prices]
"bench-*" = {{ input = 1.0, output = 2.0 }}
[ledger]
url = "off"
[state]
{state}
"""
    )
    return path


def metrics(port: int) -> dict[str, float]:
    """Redis calls by kind, and requests answered, from an instance's /metrics."""
    text = subprocess.run(
        [
            "curl",
            "-s",
            "-H",
            f"Authorization: Bearer {CLIENT_KEY}",
            f"http://127.0.0.1:{port}/metrics",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out: dict[str, float] = {"requests": 0.0}
    for line in text.splitlines():
        if line.startswith("proxycast_redis_calls_total{"):
            out[line.split('what="')[1].split('"')[0] + "_per_request"] = float(line.split()[-1])
        elif line.startswith("proxycast_requests_total{"):
            out["requests"] += float(line.split()[-1])
    return out


def wrk_all(ports: list[int], connections: int, seconds: int, folder: Path) -> dict[str, Any]:
    """One wrk per port at once (``connections`` each); req/s summed, latencies of the first."""
    body = run.openai_body("bench-json", False)
    results: list[dict[str, Any]] = [{} for _ in ports]

    def one(index: int, port: int) -> None:
        results[index] = run.wrk(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            body,
            {"Authorization": f"Bearer {CLIENT_KEY}"},
            connections,
            seconds,
            folder,
        )

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(ports)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = dict(results[0])
    out["rps"] = sum(float(r["rps"]) for r in results)
    return out


def throughput(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    nginx_port, redis_port = run.free_port(), run.free_port()
    upstream = f"http://127.0.0.1:{nginx_port}"
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    processes: list[subprocess.Popen[bytes]] = []
    runs: list[dict[str, Any]] = []
    trips: dict[str, float] = {}
    try:
        processes.append(
            run.start(
                ["nginx", "-c", str(run.nginx_config(folder, nginx_port))],
                nginx_port,
                folder / "nginx.log",
            )
        )
        processes.append(
            run.start(
                ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                redis_port,
                folder / "redis.log",
            )
        )
        ports: dict[str, list[int]] = {}
        for name, url, count in (
            ("in-process", "", 1),
            ("redis", redis_url, 1),
            ("2x redis", redis_url, 2),
        ):
            ports[name] = []
            for index in range(count):
                port = run.free_port()
                path = config(folder, f"{name.replace(' ', '')}-{index}", upstream, port, url)
                processes.append(
                    run.start(
                        [sys.executable, "-m", "proxycast", "serve", "--config", str(path)],
                        port,
                        folder / f"proxycast-{port}.log",
                        env={"PROXYCAST_HOME": str(folder / f"home-{port}")},
                    )
                )
                ports[name].append(port)
        for connections in (1, 32):
            for _ in range(args.rounds):
                for name, targets in ports.items():
                    measured = wrk_all(targets, connections, args.seconds, folder)
                    entry = {"state": name, "connections": connections, "load1": os.getloadavg()[0]}
                    runs.append({**entry, **measured})
                    print(entry, measured["rps"], flush=True)
        # Redis round trips per request, as the instance counted them (its /metrics)
        calls = metrics(ports["redis"][0])
        requests = calls.pop("requests")
        trips = {what: round(count / requests, 3) for what, count in calls.items()}
        trips["requests"] = requests
    finally:
        for process in reversed(processes):
            run.stop(process)
    ratios: dict[str, Any] = {}
    for connections in (1, 32):
        rps = {
            name: [
                float(r["rps"])
                for r in runs
                if r["state"] == name and r["connections"] == connections
            ]
            for name in ports
        }
        ratios[str(connections)] = {
            "median_rps": {name: round(statistics.median(v), 1) for name, v in rps.items()},
            "redis_over_in_process": [
                round(b / a, 3) for a, b in zip(rps["in-process"], rps["redis"], strict=True)
            ],
            "two_instances_over_one_redis": [
                round(b / a, 3) for a, b in zip(rps["redis"], rps["2x redis"], strict=True)
            ],
        }
    return {"runs": runs, "round_trips": trips, "ratios": ratios}


SCRIPT = "local c = redis.call('HINCRBY', KEYS[1], ARGV[1], 1); return c"


def clients(calls: int) -> dict[str, Any]:
    """µs per script call from trio, one at a time and 32 at once: redis-py in threads vs coredis."""
    port = run.free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    run.wait_port(port)
    out: dict[str, Any] = {}
    try:

        async def redis_py() -> tuple[float, float]:
            client = redis.Redis(port=port, max_connections=16)
            script = client.register_script(SCRIPT)
            limiter = trio.CapacityLimiter(16)

            async def call() -> None:
                await trio.to_thread.run_sync(
                    lambda: script(keys=["{k}"], args=["f"]), limiter=limiter
                )

            return await timed(call, calls)

        out["redis-py in threads"] = trio.run(redis_py)
        try:
            import coredis  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            out["coredis"] = "not installed (pip install coredis)"
        else:

            async def with_coredis() -> tuple[float, float]:
                async with coredis.Redis(port=port) as client:
                    script = client.register_script(SCRIPT)

                    async def call() -> None:
                        await script(keys=["{k}"], args=["f"])

                    return await timed(call, calls)

            out["coredis"] = trio.run(with_coredis)
    finally:
        process.kill()
        process.wait()
    return {
        k: v if isinstance(v, str) else {"sequential_us": v[0], "calls_per_second_32": v[1]}
        for k, v in out.items()
    }


async def timed(call: Any, calls: int) -> tuple[float, float]:
    await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    sequential = (time.perf_counter() - started) / calls * 1e6

    async def worker() -> None:
        for _ in range(calls // 32):
            await call()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(32):
            nursery.start_soon(worker)
    return round(sequential, 1), round(calls // 32 * 32 / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        results = throughput(args, Path(directory))
    results["clients"] = clients(args.calls)
    results["machine"] = run.machine()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale_out.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        json.dumps(
            {
                "ratios": results["ratios"],
                "round_trips": results["round_trips"],
                "clients": results["clients"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
