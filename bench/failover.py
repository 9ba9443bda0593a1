"""The cost of failing over: requests whose primary provider is cooling down (its only key answered
429 with a long Retry-After, so it is skipped) against requests that reach the same healthy upstream
under another name without a failover (both get the answer's model renamed back), in ONE run on one
nginx upstream, through one proxycast worker. Also the hedging cancel
latency: how soon after a hedged request is answered its slow loser's upstream connection closes.

    .venv/bin/python bench/failover.py [--seconds 4]     # needs nginx and wrk (bash bench/run installs them)

Writes bench/results/failover.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess  # noqa: TC003 - run.start returns Popen objects we annotate
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).parent))
import run

RESULTS = Path(__file__).parent / "results"


def nginx_config(folder: Path, port: int) -> Path:
    """run.py's upstream, plus a location that always answers 429 with a 10-minute Retry-After."""
    config = run.nginx_config(folder, port)
    limited = (
        "location = /limited/v1/chat/completions { add_header retry-after 600 always; "
        "default_type application/json; return 429 "
        '\'{"error": {"message": "slow down", "type": "rate_limit_error"}}\'; }\n'
    )
    text = config.read_text().replace("listen 127.0.0.1:", limited + "        listen 127.0.0.1:", 1)
    config.write_text(text)
    return config


def proxycast_config(folder: Path, upstream: str, port: int, hedge_port: int) -> Path:
    path = folder / "failover.toml"
    path.write_text(
        f"""
[server]
port = {port}
api_keys = ["{run.KEY}"]
[[providers]]
name = "healthy"
type = "openai"
base_url = "{upstream}/json/v1"
models = ["bench-json"]
[[providers]]
name = "limited"
type = "openai"
base_url = "{upstream}/limited/v1"
api_keys = ["sk-limited"]
models = ["bench-failover"]
[[providers]]
name = "stalled"
type = "openai"
base_url = "http://127.0.0.1:{hedge_port}/v1"
models = ["bench-hedged"]
[aliases]
"bench-renamed" = "healthy/bench-json"
[routing]
hedge_after = 0.05
[fallbacks]
"bench-failover" = ["healthy/bench-json"]
"bench-hedged" = ["healthy/bench-json"]
"""
    )
    return path


async def hedge_latency(gateway: str, count: int) -> dict[str, Any]:
    """Requests to a model whose primary never answers: hedged after 50 ms onto the healthy upstream.
    The primary is a bare TCP server here that timestamps when each connection closes."""
    closed: list[float] = []
    answered: list[float] = []
    closing = [trio.Event()]  # set at each close, then replaced
    headers = {"authorization": f"Bearer {run.KEY}"}
    body = run.openai_body("bench-hedged", False)

    async def stalled(stream: trio.SocketStream) -> None:
        try:
            while await stream.receive_some():
                pass  # read the request, never answer
        except trio.BrokenResourceError:
            pass
        closed.append(trio.current_time())
        closing[0].set()
        closing[0] = trio.Event()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, stalled, HEDGE_PORT, host="127.0.0.1")
        )
        assert listeners
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(count):
                seen = len(closed)
                response = await client.post(
                    f"{gateway}/v1/chat/completions", json=body, headers=headers
                )
                assert response.status_code == 200, response.text
                answered.append(trio.current_time())
                with trio.fail_after(5):
                    if len(closed) == seen:
                        await closing[0].wait()
        nursery.cancel_scope.cancel()
    gaps = sorted((c - a) * 1000 for c, a in zip(closed, answered, strict=True))
    return {
        "count": count,
        "p50_ms": round(statistics.median(gaps), 2),
        "p99_ms": round(gaps[int(len(gaps) * 0.99) - 1], 2),
        "max_ms": round(gaps[-1], 2),
    }


HEDGE_PORT = 0


def main() -> None:
    global HEDGE_PORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="proxycast-failover-"))
    nginx_port, port, HEDGE_PORT = run.free_port(), run.free_port(), run.free_port()
    upstream = f"http://127.0.0.1:{nginx_port}"
    processes: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"machine": run.machine(), "seconds_per_run": args.seconds, "runs": []}
    try:
        processes.append(
            run.start(
                ["nginx", "-c", str(nginx_config(folder, nginx_port))],
                nginx_port,
                folder / "nginx.log",
            )
        )
        config = proxycast_config(folder, upstream, port, HEDGE_PORT)
        processes.append(
            run.start(
                [sys.executable, "-m", "proxycast", "serve", "--config", str(config)],
                port,
                folder / "proxycast.log",
            )
        )
        gateway = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {run.KEY}"}
        # the first request meets the 429 and rests the key; every later one skips it
        first = httpx.post(
            f"{gateway}/v1/chat/completions",
            json=run.openai_body("bench-failover", False),
            headers=headers,
        )
        assert first.status_code == 200, first.text
        assert first.headers["x-proxycast-provider"] == "healthy"
        for connections in run.CONCURRENCY:
            # bench-renamed reaches the same upstream under another name (the answer's model is
            # renamed back, as on the failover path): the pair isolates the cost of the cooled key
            for model in ("bench-renamed", "bench-failover") * 2 + ("bench-json",):
                measured = run.wrk(
                    f"{gateway}/v1/chat/completions",
                    run.openai_body(model, False),
                    headers,
                    connections,
                    args.seconds,
                    folder,
                )
                result["runs"].append({"model": model, "connections": connections, **measured})
                print(model, connections, measured, flush=True)
        result["hedging"] = trio.run(hedge_latency, gateway, 200)
        print("hedging", result["hedging"], flush=True)
    finally:
        for process in reversed(processes):
            run.stop(process)
    ratios = {}
    for connections in run.CONCURRENCY:

        def rps(model: str, connections: int = connections) -> float:
            return statistics.mean(
                float(r["rps"])
                for r in result["runs"]
                if r["model"] == model and r["connections"] == connections
            )

        ratios[str(connections)] = {
            "failover / renamed": round(rps("bench-failover") / rps("bench-renamed"), 3),
            "renamed / same name": round(rps("bench-renamed") / rps("bench-json"), 3),
        }
    result["ratios"] = ratios
    print("req/s ratios:", ratios)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "failover.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
