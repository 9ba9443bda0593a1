"""The cost of relaying one stream chunk: CPU microseconds of the worker per upstream chunk, for the
current tree and for "today" (commit 44fa13a), in ONE run.

nginx serves fixed streams of 20 and of 200 chunks (bench/upstream.py: ``/sse{N}``, OpenAI, relayed as
they are; ``/anth-sse{N}``, Anthropic events, converted for an OpenAI client). One proxycast worker per
install (DEFAULT configuration, bench/common.py); a closed-loop load (bench/loadgen.py,
``--connections`` connections) loads one at a time for ``--seconds`` and then finishes its requests in
flight, and the worker's CPU time (user + system, from /proc/PID/stat) over the run divided by the
requests served is its CPU per request. (``--load wrk`` uses wrk instead, which drops the requests in
flight at its deadline, so that their CPU is charged to the others: about connections / requests of a
run, a few % on 200-chunk runs, 10% and more on longer ones.) The per-chunk cost is the slope:
(cpu(200) - cpu(20)) / 180, per round; the table gives medians over ``--rounds`` interleaved rounds
(the installs' order flips every round). CPU per request is much less sensitive to a noisy neighbour
than req/s, but a slope is a difference of two noisy figures: on a busy machine two installs of the
same code came out between 0.6 and 1.35 of each other (load average 3 on 2 cores, 3 rounds; 0.89 and
1.03 with ``--long 1000``). Run it on a quiet machine, with more rounds and ``--long 1000`` if not.

    git worktree add /work/wt-base 44fa13a
    python3 -m venv /work/wt-base/.venv && /work/wt-base/.venv/bin/pip install /work/wt-base
    .venv/bin/python bench/relay.py --baseline-python /work/wt-base/.venv/bin/python
                                    [--seconds 4] [--rounds 3] [--connections 16] [--paced MS]

``--paced 5``: the streams come from a trio upstream (bench/streams.py), one chunk per write, 5 ms
apart, so every chunk is a read and a send of the gateway's, as an LLM's tokens are (nginx's fixed
streams arrive in one read, and the gateway relays them in a few sends); the load is then
bench/loadgen.py, which finishes its requests in flight (a paced 200-chunk stream lasts over a second:
wrk would drop the ones in flight at its deadline and charge their CPU to the few it completed).

About 2 minutes at the defaults. Writes bench/results/relay.{json,md}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    CLIENT_KEY,
    cpu_seconds,
    free_port,
    machine,
    median,
    openai_body,
    proxycast_config,
    raise_nofile,
    raw_request,
    settle,
    start,
    start_gateway,
    stop,
    write_results,
    wrk,
)
from upstream import nginx_config

SCENARIOS = {
    # name: (model prefix, the last content word of a stream of N chunks: bench/upstream.py's
    # OpenAI stream has N - 2 content chunks, its Anthropic stream N - 5 text deltas)
    "passthrough (OpenAI -> OpenAI)": ("bench-sse", 3),
    "converted (OpenAI -> Anthropic)": ("claude-bench-sse", 6),
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


def load(args: argparse.Namespace, port: int, model: str, folder: Path) -> dict[str, Any]:
    """bench/loadgen.py, which finishes the requests in flight at the end (``--load wrk``: wrk,
    which drops them, so that the CPU spent on them is charged to the ones it completed)."""
    body = openai_body(model, True)
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    if args.load == "wrk" and not args.paced:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        return wrk(url, body, headers, args.connections, args.seconds, folder)
    command = [sys.executable, str(Path(__file__).with_name("loadgen.py")), "--port", str(port)]
    command += ["--concurrency", str(args.connections), "--seconds", str(args.seconds)]
    request = raw_request("/v1/chat/completions", body, headers)
    done = subprocess.run(command, input=request, capture_output=True, check=True, timeout=600)
    out = json.loads(done.stdout)
    return {**out, "rps": round(out["requests"] / out["seconds"], 1)}


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
        "paced_ms": args.paced,
        "load": "loadgen" if args.paced else args.load,
        "load_before": os.getloadavg(),
        "runs": [],
    }
    try:
        nginx = ["nginx", "-c", str(nginx_config(folder, nginx_port, chunks))]
        processes.append(start(nginx, nginx_port, folder / "nginx.log"))
        streams_upstream = None
        if args.paced:  # the streams come one chunk per write, from bench/streams.py's upstream
            paced_port = free_port()
            script = str(Path(__file__).with_name("streams.py"))
            command = [sys.executable, script, "--role", "upstream", "--port", str(paced_port)]
            processes.append(start(command, paced_port, folder / "paced.log"))
            streams_upstream = f"http://127.0.0.1:{paced_port}/paced/{args.paced:g}"
        gateways: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        for index, (name, python) in enumerate(installs.items()):
            port = free_port()
            config = proxycast_config(
                folder,
                upstream,
                port,
                client=True,
                chunks=chunks,
                stream_upstream=streams_upstream,
                name=f"install{index}",
            )
            process = start_gateway(python, config, port, folder, f"install{index}")
            processes.append(process)
            gateways[name] = (port, process)
            for model, back in SCENARIOS.values():
                for n in chunks:
                    whole(port, f"{model}{n}", f"word{n - back} ")
        time.sleep(1.0)
        for rep in range(args.rounds):
            order = list(installs) if rep % 2 == 0 else list(reversed(installs))
            for name in order:
                port, process = gateways[name]
                for scenario, (model, _) in SCENARIOS.items():
                    for n in chunks if rep % 2 == 0 else tuple(reversed(chunks)):
                        cpu = cpu_seconds(process.pid)
                        run = load(args, port, f"{model}{n}", folder)
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
        f"{result['machine']}. One proxycast worker per install (default configuration), "
        f"{result.get('load', 'wrk')} at {result['connections']} connections, {result['seconds_per_run']} s per run, "
        f"{result['rounds']} interleaved rounds; CPU of the worker from /proc over each run. Per "
        f"chunk: (CPU per request at {long} chunks - at {short}) / {long - short}, per round, "
        f"median. Load average before {result['load_before']}, after {result['load_after']}.",
        "",
        (
            f"Paced streams: one chunk per write, {result['paced_ms']:g} ms apart (bench/streams.py's "
            "upstream), so each chunk reaches the gateway in a read of its own."
            if result.get("paced_ms")
            else "nginx's fixed streams arrive at once: the gateway reads many chunks in one read and "
            "sends what one read translates to in one piece, so the slope is the cost of parsing "
            "and translating a chunk, not of a read and a send per chunk (see --paced)."
        ),
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
    parser.add_argument(
        "--load",
        choices=("loadgen", "wrk"),
        default="loadgen",
        help="the load: bench/loadgen.py (default: finishes its requests in flight) or wrk "
        "(drops them at its deadline; always loadgen with --paced)",
    )
    parser.add_argument(
        "--paced",
        type=float,
        default=0.0,
        metavar="MS",
        help="streams from a trio upstream, one chunk per write, MS ms apart (e.g. 5), instead of "
        "nginx's all at once: what a chunk costs when each arrives in a read of its own",
    )
    parser.add_argument("--out", default="relay", help="results name (bench/results/NAME.*)")
    args = parser.parse_args()
    if not Path(args.baseline_python).exists():
        parser.error(f"no {args.baseline_python}: see the docstring for the baseline's install")
    result = measure(args)
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
