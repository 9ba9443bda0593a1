"""The cost of accounting: req/s through one proxycast worker with a named client, its limits
(rpm, tpm, a daily budget: decided in the worker's memory, written behind to the machine's SQLite
file) and the SQLite ledger, against the same worker with all of it off, interleaved A/B/A/B on one
nginx upstream; and how long
``proxycast usage`` takes on a ledger of 1,000,000 rows.

    .venv/bin/python bench/accounting.py [--seconds 5] [--rounds 3] [--rows 1000000]

Needs nginx and wrk (``bash bench/run`` installs them). Writes bench/results/accounting.json.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "src"))
import run
from common import cpu_seconds

from proxycast.ledger import LedgerConfig
from proxycast.ledger import sqlite as ledger_sqlite
from proxycast.ledger.report import usage
from proxycast.ledger.rows import COLUMNS

RESULTS = Path(__file__).parent / "results"
CLIENT_KEY = "bench-client-key"


def proxycast_config(folder: Path, upstream: str, port: int, accounting: bool) -> Path:
    path = folder / f"proxycast-{'on' if accounting else 'off'}.toml"
    text = f"""
[server]
port = {port}
api_keys = ["{run.KEY}"]
access_log = "off"
[[providers]]
name = "json"
type = "openai"
base_url = "{upstream}/json/v1"
models = ["bench-json"]
"""
    if accounting:
        text += f"""
[[clients]]
name = "bench"
api_key = "{CLIENT_KEY}"
models = ["bench-*"]
rpm = 100000000
tpm = 1000000000000
max_usd_per_day = 1000000000.0
[prices]
"bench-*" = {{ input = 1.0, output = 2.0 }}
[ledger]
url = "sqlite:///{folder / "usage.db"}"
"""
    else:
        text += '[ledger]\nurl = "off"\n'
    path.write_text(text)
    return path


def throughput(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    nginx_port, off_port, on_port = run.free_port(), run.free_port(), run.free_port()
    upstream = f"http://127.0.0.1:{nginx_port}"
    processes: list[subprocess.Popen[bytes]] = []
    runs: list[dict[str, Any]] = []
    try:
        processes.append(
            run.start(
                ["nginx", "-c", str(run.nginx_config(folder, nginx_port))],
                nginx_port,
                folder / "nginx.log",
            )
        )
        pids = {}
        for port, accounting in ((off_port, False), (on_port, True)):
            config = proxycast_config(folder, upstream, port, accounting)
            processes.append(
                run.start(
                    [sys.executable, "-m", "proxycast", "serve", "--config", str(config)],
                    port,
                    folder / f"proxycast-{port}.log",
                    env={"PROXYCAST_HOME": str(folder / "home")},
                )
            )
            pids["on" if accounting else "off"] = processes[-1].pid
        body = run.openai_body("bench-json", False)
        for connections in (1, 32):
            for _ in range(args.rounds):
                for name, port, key in (("off", off_port, run.KEY), ("on", on_port, CLIENT_KEY)):
                    load = os.getloadavg()[0]
                    cpu = cpu_seconds(pids[name])
                    measured = run.wrk(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        body,
                        {"Authorization": f"Bearer {key}"},
                        connections,
                        args.seconds,
                        folder,
                    )
                    cpu = cpu_seconds(pids[name]) - cpu
                    served = float(measured["rps"]) * args.seconds
                    measured["cpu_ms_per_request"] = round(1000 * cpu / max(1.0, served), 3)
                    entry = {"accounting": name, "connections": connections, "load1": load}
                    runs.append({**entry, **measured})
                    print(entry, measured["rps"], flush=True)
    finally:
        for process in reversed(processes):
            run.stop(process)
    db = ledger_sqlite.open_db(folder / "usage.db")
    rows = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    db.close()
    ratios = {}
    for connections in (1, 32):
        pairs = [
            float(b["rps"]) / float(a["rps"])
            for a, b in zip(
                [r for r in runs if r["connections"] == connections and r["accounting"] == "off"],
                [r for r in runs if r["connections"] == connections and r["accounting"] == "on"],
                strict=True,
            )
        ]
        cpu_median = {
            name: statistics.median(
                r["cpu_ms_per_request"]
                for r in runs
                if r["connections"] == connections and r["accounting"] == name
            )
            for name in ("off", "on")
        }
        ratios[str(connections)] = {
            "per_round": [round(p, 3) for p in pairs],
            "median": round(statistics.median(pairs), 3),
            "cpu_ms_per_request_off": cpu_median["off"],
            "cpu_ms_per_request_on": cpu_median["on"],
            "cpu_on_over_off": round(cpu_median["on"] / cpu_median["off"], 3),
        }
    return {"runs": runs, "on_over_off": ratios, "ledger_rows_written": rows}


def fill(path: Path, count: int) -> float:
    """A ledger of ``count`` rows over the last 30 days: 20 clients, 12 models, 4 providers."""
    db = ledger_sqlite.open_db(path)
    now = time.time()
    rng = random.Random(1)
    started = time.perf_counter()
    batch: list[tuple[Any, ...]] = []
    insert = (
        f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    )
    db.execute("BEGIN")
    for index in range(count):
        provider = rng.randrange(4)
        batch.append(
            (
                now - rng.random() * 30 * 86400,
                f"req-{index}",
                f"client-{rng.randrange(20)}",
                "openai",
                f"model-{rng.randrange(12)}",
                f"provider-{provider}",
                "upstream",
                f"provider-{provider}#1",
                200 if rng.random() > 0.03 else 429,
                "",
                rng.randrange(2000),
                rng.randrange(800),
                0,
                0,
                0,
                rng.random() / 100,
                rng.random() * 5,
                rng.random(),
                f"provider-{provider}#1:200",
                rng.randrange(2),
                0,
            )
        )
        if len(batch) == 10_000:
            db.executemany(insert, batch)
            batch = []
    db.executemany(insert, batch)
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - started


def usage_timing(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    path = folder / "million.db"
    filled = fill(path, args.rows)
    config = folder / "million.toml"
    config.write_text(f'[ledger]\nurl = "sqlite:///{path}"\n')
    out: dict[str, Any] = {
        "rows": args.rows,
        "fill_seconds": round(filled, 1),
        "file_mb": round(path.stat().st_size / 1e6),
    }
    for since in ("30d", "24h"):
        for by in ("client", "model", "day"):
            query = []
            for _ in range(3):
                started = time.perf_counter()
                usage(
                    LedgerConfig(url=f"sqlite:///{path}"),
                    time.time() - (30 * 86400 if since == "30d" else 86400),
                    by,
                )
                query.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "proxycast",
                    "usage",
                    "--config",
                    str(config),
                    "--since",
                    since,
                    "--by",
                    by,
                ],
                check=True,
                capture_output=True,
            )
            command = time.perf_counter() - started
            key = f"since {since}, by {by}"
            out[key] = {
                "query_s": round(min(query), 3),
                "command_s": round(command, 3),
            }
            print(key, out[key], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000, help="0: skip the usage timing")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="proxycast-accounting-"))
    result: dict[str, Any] = {
        "machine": run.machine(),
        "load_before": os.getloadavg(),
        "seconds_per_run": args.seconds,
    }
    result["throughput"] = throughput(args, folder)
    if args.rows:
        result["usage"] = usage_timing(args, folder)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result["throughput"]["on_over_off"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "accounting.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
