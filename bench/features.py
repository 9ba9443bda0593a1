"""What each feature costs: req/s and CPU per request of one proxycast worker with one feature on,
against the same worker with everything off, interleaved in rounds on one nginx upstream.

Everything off (the reference): ``[ledger] url = "off"``, the unnamed ``[server].api_keys`` key (no
limits, no ``[[clients]]``, no ``[prices]``), ``[server] metrics = false``, ``[server] access_log =
"off"``, a provider with one key. Each other server turns one thing back on:

- ledger: the default SQLite ledger (``usage.db`` in ``PROXYCAST_HOME``, a temporary folder);
- limits: a named client with ``rpm``, ``tpm`` and ``max_usd_per_day`` (so high that nothing is
  refused) and ``[prices]``; the load presents that client's key;
- metrics: the Prometheus metrics (the default). ``[server] metrics = false`` is new: when the
  install refuses it (``proxycast check`` fails), every server keeps its metrics and this row is
  skipped (said in the results);
- access log: ``access_log = "text"`` (the default), to a file;
- key pool, one key cooled: the provider has two keys, and the upstream answers 429 with a
  one-day ``Retry-After`` to the first (bench/upstream.py ``/pool``): after the first request the pool
  skips a resting key on every request;
- all together: all of the above.

Every server is a separate process (its own data directory) and is measured once per round, the
order reversed every other round; each ratio is on / off within a round, and the table gives the
median of those and the per-round values, plus the median CPU milliseconds per request of the worker
(/proc/PID/stat over the wrk run / requests served): far less noisy than req/s on a shared machine.
Targets: each feature costs <= 10% (ratio >= 0.90), all together <= 20% (>= 0.80).

    .venv/bin/python bench/features.py [--seconds 5] [--rounds 5] [--connections 1,32] [--stream]

About 8 minutes at the defaults (7 servers x 2 connection counts x 5 rounds x 5 s). Writes
bench/results/features.{json,md}.
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
    CLIENT,
    CLIENT_KEY,
    KEY,
    RESULTS,
    cpu_seconds,
    free_port,
    machine,
    median,
    openai_body,
    raise_nofile,
    settle,
    start,
    start_gateway,
    stop,
    write_results,
    wrk,
)
from upstream import COOLED_KEY, nginx_config

FEATURES = ("ledger", "limits", "metrics", "access log", "key pool, one key cooled")
ALL = "all together"


def config_text(upstream: str, port: int, on: tuple[str, ...], metrics_switch: bool) -> str:
    server = [f"port = {port}", f'api_keys = ["{KEY}"]']
    server.append(f'access_log = "{"text" if "access log" in on else "off"}"')
    if metrics_switch and "metrics" not in on:
        server.append("metrics = false")
    keys = f'["{COOLED_KEY}", "good"]' if "key pool, one key cooled" in on else '["good"]'
    text = "[server]\n" + "\n".join(server) + "\n"
    for name, model in (("pool", "bench-json"), ("pool-sse", "bench-sse")):
        text += (
            f'[[providers]]\nname = "{name}"\ntype = "openai"\nbase_url = "{upstream}/{name}/v1"\n'
            f'api_keys = {keys}\nmodels = ["{model}"]\n'
        )
    text += "[routing]\nmax_cooldown = 86400.0\n"  # the cooled key rests for the whole run
    if "limits" in on:
        text += CLIENT
    if "ledger" not in on:
        text += '[ledger]\nurl = "off"\n'
    return text


def metrics_switch_accepted(python: str, folder: Path) -> tuple[bool, str]:
    """Whether this install knows ``[server] metrics = false`` (``proxycast check`` accepts it)."""
    path = folder / "metrics-check.toml"
    path.write_text(config_text("http://127.0.0.1:9", 9, (), True))
    checked = subprocess.run(
        [python, "-m", "proxycast", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=folder,
    )
    return checked.returncode == 0, (checked.stdout + checked.stderr).strip()[-300:]


def attempts(port: int) -> list[str]:
    """The server's ``proxycast_upstream_attempts_total`` lines (from /metrics, when it has them)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/metrics", headers={"authorization": f"Bearer {KEY}"})
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
    finally:
        connection.close()
    lines = [
        line for line in text.splitlines() if line.startswith("proxycast_upstream_attempts_total")
    ]
    return lines or [f"/metrics: {response.status}, no attempts counted"]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    folder = Path(tempfile.mkdtemp(prefix="proxycast-features-"))
    nginx_port = free_port()
    upstream = f"http://127.0.0.1:{nginx_port}"
    switch, why = metrics_switch_accepted(args.python, folder)
    features = [f for f in FEATURES if switch or f != "metrics"]
    servers: dict[str, tuple[str, ...]] = {"off": ()}
    servers.update({f: (f,) for f in features})
    servers[ALL] = tuple(FEATURES)
    result: dict[str, Any] = {
        "machine": machine(),
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "stream": args.stream,
        "metrics_switch": switch,
        "metrics_switch_check": why,
        "load_before": os.getloadavg(),
        "runs": [],
    }
    if not switch:
        print(f"[server] metrics = false refused, metrics row skipped: {why}", flush=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        nginx = ["nginx", "-c", str(nginx_config(folder, nginx_port))]
        processes.append(start(nginx, nginx_port, folder / "nginx.log"))
        ports: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        for index, (name, on) in enumerate(servers.items()):
            port = free_port()
            config = folder / f"server{index}.toml"
            config.write_text(config_text(upstream, port, on, switch))
            process = start_gateway(args.python, config, port, folder, f"server{index}")
            processes.append(process)
            ports[name] = (port, process)
        model = "bench-sse" if args.stream else "bench-json"
        body = openai_body(model, args.stream)
        time.sleep(1.0)
        for name, (port, _) in ports.items():  # warm-up; the pool's first request cools its key
            key = CLIENT_KEY if "limits" in servers[name] else KEY
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            warm = wrk(url, body, {"Authorization": f"Bearer {key}"}, 4, 1, folder)
            if warm["non_2xx"] or not warm["requests"]:
                raise RuntimeError(f"{name}: {warm}; see {folder}")
        for connections in args.connections:
            for rep in range(args.rounds):
                order = list(servers) if rep % 2 == 0 else list(reversed(servers))
                for name in order:
                    port, process = ports[name]
                    key = CLIENT_KEY if "limits" in servers[name] else KEY
                    load = os.getloadavg()[0]
                    cpu = cpu_seconds(process.pid)
                    run = wrk(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        body,
                        {"Authorization": f"Bearer {key}"},
                        connections,
                        args.seconds,
                        folder,
                    )
                    cpu = cpu_seconds(process.pid) - cpu
                    run["cpu_ms_per_request"] = round(1000 * cpu / max(1, run["requests"]), 3)
                    run.update(server=name, connections=connections, round=rep, load1=load)
                    settle(process.pid)
                    result["runs"].append(run)
                    print(
                        f"c={connections:<3} r{rep} {name:26} {run['rps']:8.1f} req/s  CPU "
                        f"{run['cpu_ms_per_request']:6.3f} ms/req  non-2xx {run['non_2xx']}",
                        flush=True,
                    )
        # the evidence that the pool skipped its cooled key: one 429 (the warm-up's), the rest 200
        for name in ("key pool, one key cooled", ALL):
            result[f"attempts: {name}"] = attempts(ports[name][0])
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)
    result["load_after"] = os.getloadavg()
    result["summary"] = summary(result, list(servers))
    return result


def summary(result: dict[str, Any], servers: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for connections in dict.fromkeys(r["connections"] for r in result["runs"]):

        def runs(name: str, c: int = connections) -> list[dict[str, Any]]:
            return sorted(
                (r for r in result["runs"] if r["server"] == name and r["connections"] == c),
                key=lambda r: r["round"],
            )

        off = runs("off")
        rows: dict[str, Any] = {}
        for name in servers:
            mine = runs(name)
            rps_ratios = [m["rps"] / o["rps"] for m, o in zip(mine, off, strict=True)]
            cpu_ratios = [
                o["cpu_ms_per_request"] / m["cpu_ms_per_request"]
                for m, o in zip(mine, off, strict=True)
            ]
            rows[name] = {
                "rps": median([m["rps"] for m in mine]),
                "cpu_ms_per_request": round(median([m["cpu_ms_per_request"] for m in mine]), 3),
                "rps_ratio": round(median(rps_ratios), 3),
                "rps_ratio_per_round": [round(r, 3) for r in rps_ratios],
                "cpu_ratio": round(median(cpu_ratios), 3),
                "cpu_ratio_per_round": [round(r, 3) for r in cpu_ratios],
                "non_2xx": sum(m["non_2xx"] for m in mine),
            }
        out[str(connections)] = rows
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# The cost of each feature (one worker, on vs everything off)",
        "",
        f"{result['machine']}. wrk, {result['seconds_per_run']} s per run, {result['rounds']} "
        f"interleaved rounds, {'streamed (20 chunks)' if result['stream'] else 'non-streamed'} "
        "OpenAI passthrough on one nginx upstream. Ratio = on / off within a round (req/s), and "
        "off / on of the CPU per request (both: 1.0 = free, 0.9 = costs 10%). Load average "
        f"before {result['load_before']}, after {result['load_after']}.",
    ]
    for name in ("key pool, one key cooled", ALL):
        if result.get(f"attempts: {name}"):
            lines += ["", f"Upstream attempts of '{name}' (/metrics): "
                      + "; ".join(f"`{a}`" for a in result[f"attempts: {name}"])]  # fmt: skip
    if not result["metrics_switch"]:
        lines += [
            "",
            "`[server] metrics = false` was refused by this install, so every server kept its "
            f"metrics and the metrics row is missing (`proxycast check`: {result['metrics_switch_check']}).",
        ]
    for connections, rows in result["summary"].items():
        lines += [
            "",
            f"## {connections} connection{'s' if connections != '1' else ''}",
            "",
            "| feature on | req/s | req/s ratio | per round | CPU ms/req | CPU ratio | per round "
            "| target | non-2xx |",
            "|---|---:|---:|---|---:|---:|---|---|---:|",
        ]
        for name, row in rows.items():
            floor = 0.80 if name == ALL else 0.90
            verdict = "-" if name == "off" else (
                f">= {floor}: {'met' if row['rps_ratio'] >= floor else 'NOT met'} (req/s), "
                f"{'met' if row['cpu_ratio'] >= floor else 'NOT met'} (CPU)"
            )  # fmt: skip
            lines.append(
                f"| {name} | {row['rps']:.0f} | {row['rps_ratio']} | "
                f"{' / '.join(str(v) for v in row['rps_ratio_per_round'])} | "
                f"{row['cpu_ms_per_request']} | {row['cpu_ratio']} | "
                f"{' / '.join(str(v) for v in row['cpu_ratio_per_round'])} | {verdict} | "
                f"{row['non_2xx']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--connections",
        type=lambda text: [int(c) for c in text.split(",")],
        default=[1, 32],
        help="comma-separated connection counts (default 1,32)",
    )
    parser.add_argument("--stream", action="store_true", help="streamed requests (20 chunks)")
    parser.add_argument("--python", default=sys.executable, help="the install's interpreter")
    parser.add_argument("--out", default="features", help="results name (bench/results/NAME.*)")
    parser.add_argument("--report", action="store_true", help="only rewrite the Markdown")
    args = parser.parse_args()
    if args.report:
        result = json.loads((RESULTS / f"{args.out}.json").read_text())
        (RESULTS / f"{args.out}.md").write_text(markdown(result))
        return
    result = measure(args)
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
