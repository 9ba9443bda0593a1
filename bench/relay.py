"""The cost of relaying one stream chunk: CPU microseconds of the worker per upstream chunk, for the
current tree and for "today" (commit 44fa13a), in ONE run.

nginx serves fixed streams of 20 and of 200 chunks (bench/upstream.py: ``/sse{N}``, OpenAI, relayed as
they are; ``/anth-sse{N}``, Anthropic events, converted for an OpenAI client). One proxycast worker per
install (DEFAULT configuration, bench/common.py); wrk loads one at a time for ``--seconds``, and the
worker's CPU time (user + system, from /proc/PID/stat) over the run divided by the requests served is
its CPU per request. The per-chunk cost is the slope: (cpu(200) - cpu(20)) / 180, per round; the
table gives medians over ``--rounds`` interleaved rounds (the installs' order flips every round).
CPU per request is much less sensitive to a noisy neighbour than req/s.

    git worktree add /work/wt-base 44fa13a
    python3 -m venv /work/wt-base/.venv && /work/wt-base/.venv/bin/pip install /work/wt-base
    .venv/bin/python bench/relay.py --baseline-python /work/wt-base/.venv/bin/python
                                    [--seconds 4] [--rounds 3] [--connections 16]

About 2 minutes at the defaults. Writes bench/results/relay.{json,md}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    CLIENT_KEY,
    RESULTS,
    cpu_seconds,
    free_port,
    machine,
    median,
    openai_body,
    proxycast_config,
    raise_nofile,
    settle,
    start,
    start_gateway,
    stop,
    wrk,
)
from upstream import nginx_config

if TYPE_CHECKING:
    import subprocess

SCENARIOS = {
    # name: (model prefix, the last content word of a stream of N chunks)
    "passthrough (OpenAI -> OpenAI)": ("bench-sse", lambda n: f"word{n - 3} "),
    "converted (OpenAI -> Anthropic)": ("claude-bench-sse", lambda n: f"word{n - 6} "),
}


def whole(port: int, model: str, last: str) -> None:
    """One stream through the gateway carries every chunk, to the last word and [DONE]."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            json.dumps(openai_body(model, True)),
            {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"},
        )
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    if response.status != 200 or last not in text or "data: [DONE]" not in text:
        raise RuntimeError(f"{model} on port {port}: {response.status} {text[-400:]!r}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    chunks = (args.short, args.long)
    folder = Path(tempfile.mkdtemp(prefix="proxycast-relay-"))
    nginx_port = free_port()
    upstream = f"http://127.0.0.1:{nginx_port}"
    installs = {"current": args.python, "today (44fa13a)": args.baseline_python}
    processes: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {
        "machine": machine(),
        "installs": installs,
        "chunks": chunks,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "load_before": os.getloadavg(),
        "runs": [],
    }
    try:
        nginx = ["nginx", "-c", str(nginx_config(folder, nginx_port, chunks))]
        processes.append(start(nginx, nginx_port, folder / "nginx.log"))
        gateways: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        for index, (name, python) in enumerate(installs.items()):
            port = free_port()
            config = proxycast_config(
                folder, upstream, port, client=True, chunks=chunks, name=f"install{index}"
            )
            process = start_gateway(python, config, port, folder, f"install{index}")
            processes.append(process)
            gateways[name] = (port, process)
            for model, last in SCENARIOS.values():
                for n in chunks:
                    whole(port, f"{model}{n}", last(n))
        time.sleep(1.0)
        for rep in range(args.rounds):
            order = list(installs) if rep % 2 == 0 else list(reversed(installs))
            for name in order:
                port, process = gateways[name]
                for scenario, (model, _) in SCENARIOS.items():
                    for n in chunks if rep % 2 == 0 else tuple(reversed(chunks)):
                        cpu = cpu_seconds(process.pid)
                        run = wrk(
                            f"http://127.0.0.1:{port}/v1/chat/completions",
                            openai_body(f"{model}{n}", True),
                            {"Authorization": f"Bearer {CLIENT_KEY}"},
                            args.connections,
                            args.seconds,
                            folder,
                        )
                        cpu = cpu_seconds(process.pid) - cpu
                        run["cpu_us_per_request"] = round(1e6 * cpu / max(1, run["requests"]), 1)
                        run.update(install=name, scenario=scenario, chunks=n, round=rep)
                        settle(process.pid)
                        result["runs"].append(run)
                        print(
                            f"r{rep} {name:16} {scenario:32} {n:4} chunks {run['rps']:8.1f} req/s "
                            f"CPU {run['cpu_us_per_request']:9.1f} µs/request  non-2xx "
                            f"{run['non_2xx']}",
                            flush=True,
                        )
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)
    result["load_after"] = os.getloadavg()
    result["summary"] = summary(result)
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    short, long = result["chunks"]
    out: dict[str, Any] = {}
    for scenario in SCENARIOS:
        row: dict[str, Any] = {}
        for install in result["installs"]:

            def of(n: int, rep: int, i: str = install, s: str = scenario) -> dict[str, Any]:
                return next(
                    r
                    for r in result["runs"]
                    if (r["install"], r["scenario"], r["chunks"], r["round"]) == (i, s, n, rep)
                )

            slopes = [
                (of(long, rep)["cpu_us_per_request"] - of(short, rep)["cpu_us_per_request"])
                / (long - short)
                for rep in range(result["rounds"])
            ]
            row[install] = {
                "us_per_chunk": round(median(slopes), 2),
                "us_per_chunk_per_round": [round(s, 2) for s in slopes],
                f"cpu_us_per_request_{short}": median(
                    [of(short, rep)["cpu_us_per_request"] for rep in range(result["rounds"])]
                ),
                f"cpu_us_per_request_{long}": median(
                    [of(long, rep)["cpu_us_per_request"] for rep in range(result["rounds"])]
                ),
                f"rps_{short}": median([of(short, rep)["rps"] for rep in range(result["rounds"])]),
                f"rps_{long}": median([of(long, rep)["rps"] for rep in range(result["rounds"])]),
            }
        current, today = (row[i]["us_per_chunk"] for i in result["installs"])
        row["current_over_today"] = round(current / today, 3) if today else None
        out[scenario] = row
    return out


def markdown(result: dict[str, Any]) -> str:
    short, long = result["chunks"]
    installs = list(result["installs"])
    lines = [
        "# Relay cost per stream chunk: current tree vs today (44fa13a)",
        "",
        f"{result['machine']}. One proxycast worker per install (default configuration), wrk at "
        f"{result['connections']} connections, {result['seconds_per_run']} s per run, "
        f"{result['rounds']} interleaved rounds; CPU of the worker from /proc over each run. Per "
        f"chunk: (CPU per request at {long} chunks - at {short}) / {long - short}, per round, "
        f"median. Load average before {result['load_before']}, after {result['load_after']}.",
        "",
        f"| stream | install | µs per chunk | per round | CPU µs/request, {short} chunks | "
        f"{long} chunks | req/s, {short} | req/s, {long} |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for scenario, row in result["summary"].items():
        for install in installs:
            r = row[install]
            lines.append(
                f"| {scenario} | {install} | {r['us_per_chunk']} | "
                f"{' / '.join(str(v) for v in r['us_per_chunk_per_round'])} | "
                f"{r[f'cpu_us_per_request_{short}']:.0f} | {r[f'cpu_us_per_request_{long}']:.0f} | "
                f"{r[f'rps_{short}']:.0f} | {r[f'rps_{long}']:.0f} |"
            )
    lines += [""]
    lines += [
        f"- {scenario}: current / today = {row['current_over_today']}"
        for scenario, row in result["summary"].items()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline-python",
        default="/work/wt-base/.venv/bin/python",
        help="the interpreter of the install of 44fa13a (non-editable)",
    )
    parser.add_argument("--python", default=sys.executable, help="the current tree's interpreter")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--short", type=int, default=20, help="chunks of the short stream")
    parser.add_argument("--long", type=int, default=200, help="chunks of the long stream")
    parser.add_argument("--out", default="relay", help="results name (bench/results/NAME.*)")
    args = parser.parse_args()
    if not Path(args.baseline_python).exists():
        parser.error(f"no {args.baseline_python}: see the docstring for the baseline's install")
    result = measure(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
