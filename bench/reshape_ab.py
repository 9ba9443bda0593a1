"""Interleaved A/B of two proxycast installs on bench/run.py's nginx upstream and scenarios: one
worker each, wrk alternating between them (the order flips every round), medians per scenario and
connection count, and the 1-minute load average before and after every run.

    python bench/reshape_ab.py BEFORE_VENV AFTER_VENV [--seconds 4] [--rounds 3]

Each venv must have ``proxycast`` installed (``BEFORE_VENV/bin/proxycast``). The target was
every ratio after/before >= 0.95. Writes bench/results/reshape_ab.json and reshape_ab.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).parent))
import run

if TYPE_CHECKING:
    import subprocess

RESULTS = Path(__file__).parent / "results"
# bench/run.py's first four scenarios: OpenAI clients to OpenAI and Anthropic upstreams
SCENARIOS = {
    name: s
    for name, s in run.SCENARIOS.items()
    if s.inbound == "openai" and s.direct_kind != "gemini"
}


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    folder = Path(tempfile.mkdtemp(prefix="proxycast-ab-"))
    nginx_port = run.free_port()
    upstream = f"http://127.0.0.1:{nginx_port}"
    processes: list[subprocess.Popen[bytes]] = []
    runs: list[dict[str, Any]] = []
    venvs = {"before": args.before, "after": args.after}
    headers = {"Authorization": f"Bearer {run.KEY}"}
    try:
        nginx = ["nginx", "-c", str(run.nginx_config(folder, nginx_port))]
        processes.append(run.start(nginx, nginx_port, folder / "nginx.log"))
        targets = {}
        for name, venv in venvs.items():
            port = run.free_port()
            sub = folder / name
            sub.mkdir()
            if name == "after" and args.features_off:
                # what the "before" install had not yet: the ledger, the access log
                config = run.proxycast_config(
                    sub, upstream, port, 'access_log = "off"', '[ledger]\nurl = "off"'
                )
            else:
                config = run.proxycast_config(sub, upstream, port)
            command = [f"{venv}/bin/proxycast", "serve", "--config", str(config), "--workers", "1"]
            env = {"PROXYCAST_HOME": str(sub / "home")}  # its ledger and limits, not the user's
            processes.append(run.start(command, port, sub / "log", env=env))
            targets[name] = f"http://127.0.0.1:{port}/v1/chat/completions"
        time.sleep(1.0)
        for url in targets.values():  # warm-up
            for s in SCENARIOS.values():
                run.wrk(url, run.openai_body(s.model, s.stream), headers, 8, 1, folder)
        for scenario, s in SCENARIOS.items():
            model, stream = s.model, s.stream
            for connections in run.CONCURRENCY:
                for rep in range(args.rounds):
                    order = ["before", "after"] if rep % 2 == 0 else ["after", "before"]
                    for name in order:
                        load_before = os.getloadavg()[0]
                        body = run.openai_body(model, stream)
                        result = run.wrk(
                            targets[name], body, headers, connections, args.seconds, folder
                        )
                        result.update(
                            scenario=scenario,
                            connections=connections,
                            version=name,
                            rep=rep,
                            load1_before=round(load_before, 2),
                            load1_after=round(os.getloadavg()[0], 2),
                        )
                        runs.append(result)
                        print(
                            f"{scenario:42} c={connections:<4} rep{rep} {name:6} "
                            f"{result['rps']:>8.1f} req/s p50 {result['p50_ms']:8.3f} ms "
                            f"load {result['load1_before']}->{result['load1_after']}",
                            flush=True,
                        )
    finally:
        for process in reversed(processes):
            run.stop(process)
        shutil.rmtree(folder, ignore_errors=True)
    return runs


def table(runs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    lines = [
        "| scenario | conns | req/s before (median; runs) | req/s after (median; runs) "
        "| after/before | p50 ms before | p50 ms after | within 5% or better | load1 during |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    cells = []
    for scenario in SCENARIOS:
        for connections in run.CONCURRENCY:

            def of(version: str, s: str = scenario, c: int = connections) -> list[dict[str, Any]]:
                return [
                    r
                    for r in runs
                    if r["scenario"] == s and r["connections"] == c and r["version"] == version
                ]

            before, after = of("before"), of("after")
            if not before or not after:
                continue
            rps_b = statistics.median(r["rps"] for r in before)
            rps_a = statistics.median(r["rps"] for r in after)
            p50_b = statistics.median(r["p50_ms"] for r in before)
            p50_a = statistics.median(r["p50_ms"] for r in after)
            loads = [r[k] for r in before + after for k in ("load1_before", "load1_after")]
            ratio = rps_a / rps_b
            cells.append(
                {"scenario": scenario, "connections": connections, "ratio": round(ratio, 3)}
            )
            runs_b = "/".join(f"{r['rps']:.0f}" for r in before)
            runs_a = "/".join(f"{r['rps']:.0f}" for r in after)
            lines.append(
                f"| {scenario} | {connections} | {rps_b:.0f} ({runs_b}) | {rps_a:.0f} ({runs_a}) "
                f"| {ratio:.3f} | {p50_b:.3f} | {p50_a:.3f} | {'yes' if ratio >= 0.95 else 'NO'} "
                f"| {min(loads):.2f}-{max(loads):.2f} |"
            )
    return "\n".join(lines) + "\n", cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="the venv of the code before (e.g. commit 5bf71a4)")
    parser.add_argument("after", help="the venv of the code after")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--features-off",
        action="store_true",
        help="the after install with the ledger and the access log off (features the before lacks)",
    )
    parser.add_argument("--out", default=str(RESULTS / "reshape_ab"), help="path without suffix")
    args = parser.parse_args()
    started = os.getloadavg()
    runs = measure(args)
    text, cells = table(runs)
    result = {
        "machine": run.machine(),
        "load_before": started,
        "load_after": os.getloadavg(),
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "after_features_off": args.features_off,
        "cells": cells,
        "runs": runs,
    }
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    load = f"load average (1, 5, 15 min) at start {started}, at end {result['load_after']}"
    Path(args.out + ".md").write_text(
        f"# proxycast A/B: {args.before} (before) vs {args.after} (after)\n\n"
        f"{result['machine']}; {args.rounds} interleaved rounds of {args.seconds} s per cell; "
        f"{load}."
        + (
            " The after install ran with the ledger and the access log off."
            if args.features_off
            else ""
        )
        + f"\n\n{text}"
    )
    print(text)


if __name__ == "__main__":
    main()
