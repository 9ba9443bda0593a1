"""Time to first chunk (TTFC) under load: a background wrk load of 255 streamed connections, plus a
probe that measures, for each of its streamed requests, the time from sending the request to receiving
the first content chunk (the text ``word0``), against nginx directly, against one proxycast worker
(DEFAULT configuration, bench/common.py) and against the bare framework streaming the same chunks
(bench/ceiling.py).

The probe runs in a process of its own (blocking sockets, one keep-alive connection, at a higher
scheduling priority when allowed) so the load does not starve it; it is the 256th connection. nginx's
fixed stream arrives all at once (its whole body is in the first read), which is fine for the *added*
latency: p99(proxycast) - p99(direct). Targets are measured in interleaved rounds (the order reversed
every other round), each round with a fresh wrk load against that target.

    .venv/bin/python bench/ttfc.py [--probes 300] [--rounds 3] [--connections 256]
                                   [--scenario 'openai -> anthropic, streamed'] [--no-ceiling]

About 3-4 minutes (proxycast's streams take ~0.4 s each at 256 connections on 2 cores). Writes
bench/results/ttfc.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    CLIENT_KEY,
    HERE,
    free_port,
    machine,
    parse_wrk,
    proxycast_config,
    raise_nofile,
    raw_request,
    settle,
    start,
    start_gateway,
    stop,
    write_results,
    wrk_command,
    wrk_script,
)
from run import CEILINGS, SCENARIOS
from upstream import FIRST_CONTENT, nginx_config

# --- the probe (its own process) --------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection, blocking: send a request, time the answer's first content."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
        return self.sock

    def _read(self) -> bytes:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        return data

    def ask(self, request: bytes) -> tuple[float, float]:
        """Seconds to the first content chunk, and to the end of the answer."""
        sock = self._connect()
        started = time.perf_counter()
        sock.sendall(request)
        first = None
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"answer {status!r}")
        headers = head.lower()
        body = b""
        if b"transfer-encoding: chunked" in headers:
            while True:  # chunked: size line, data, CRLF; a size of 0 ends it
                while b"\r\n" not in self.buffer:
                    self.buffer += self._read()
                line, _, self.buffer = self.buffer.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                while len(self.buffer) < size + 2:
                    self.buffer += self._read()
                body += self.buffer[:size]
                self.buffer = self.buffer[size + 2 :]
                if first is None and FIRST_CONTENT in body:
                    first = time.perf_counter()
                if size == 0:
                    break
        else:
            length = int(headers.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            while len(self.buffer) < length:
                if first is None and FIRST_CONTENT in self.buffer:
                    first = time.perf_counter()
                self.buffer += self._read()
            body, self.buffer = self.buffer[:length], self.buffer[length:]
            if first is None and FIRST_CONTENT in body:
                first = time.perf_counter()
        ended = time.perf_counter()
        if first is None:
            raise RuntimeError(f"no {FIRST_CONTENT!r} in the answer: {body[:300]!r}")
        if b"connection: close" in headers:
            self.close()
        return first - started, ended - started

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def probe(port: int, request: bytes, count: int) -> dict[str, Any]:
    try:
        os.nice(-10)  # the probe must not wait for the CPU behind the load it measures
        niced = True
    except OSError:
        niced = False
    connection = Connection(port)
    firsts, totals, errors = [], [], []
    for _ in range(count):
        try:
            first, total = connection.ask(request)
            firsts.append(first)
            totals.append(total)
        except (OSError, RuntimeError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            connection.close()
        time.sleep(random.uniform(0, 0.004))  # not in step with the load
    connection.close()
    return {"ttfc_s": firsts, "total_s": totals, "errors": errors, "niced": niced}


# --- the orchestration ------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    scenario = SCENARIOS[args.scenario]
    folder = Path(tempfile.mkdtemp(prefix="proxycast-ttfc-"))
    nginx_port, port, ceiling_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{nginx_port}"
    processes: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {
        "machine": machine(),
        "scenario": args.scenario,
        "connections": args.connections,
        "probes": args.probes,
        "rounds": args.rounds,
        "load_before": os.getloadavg(),
        "runs": [],
    }
    try:
        nginx = ["nginx", "-c", str(nginx_config(folder, nginx_port))]
        processes.append(start(nginx, nginx_port, folder / "nginx.log"))
        config = proxycast_config(folder, upstream, port, client=True)
        processes.append(start_gateway(sys.executable, config, port, folder, "proxycast"))
        gateway_headers = {"authorization": f"Bearer {CLIENT_KEY}", **scenario.headers}
        targets: dict[str, tuple[int, str, dict[str, Any], dict[str, str], Any]] = {
            "direct": (nginx_port, scenario.direct_path, scenario.direct_body, {}, processes[0]),
            "proxycast": (port, scenario.path, scenario.body, gateway_headers, processes[1]),
        }
        if not args.no_ceiling:
            hypercorn = Path(sys.executable).with_name("hypercorn")
            command = [str(hypercorn), "--worker-class", "trio"]
            command += ["--bind", f"127.0.0.1:{ceiling_port}", "ceiling:app"]
            processes.append(start(command, ceiling_port, folder / "ceiling.log", cwd=HERE))
            body = CEILINGS["framework ceiling, streamed"]
            targets["framework ceiling, streamed"] = (
                ceiling_port, "/v1/chat/completions", body, {}, processes[-1],
            )  # fmt: skip
        time.sleep(1.0)
        per_round = -(-args.probes // args.rounds)
        for rep in range(args.rounds):
            order = list(targets) if rep % 2 == 0 else list(reversed(targets))
            for name in order:
                target_port, path, body, headers, process = targets[name]
                script = wrk_script(folder, body, headers)
                url = f"http://127.0.0.1:{target_port}{path}"
                load = subprocess.Popen(
                    wrk_command(url, script, args.connections - 1, 3600),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                time.sleep(args.warmup)
                request = raw_request(path, body, headers)
                probe_command = [sys.executable, __file__, "--role", "probe"]
                probe_command += ["--port", str(target_port), "--probes", str(per_round)]
                measured = subprocess.run(
                    probe_command,
                    input=request,
                    capture_output=True,
                    check=True,
                    timeout=1800,
                )
                load.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
                out, _ = load.communicate(timeout=60)
                outcome = json.loads(measured.stdout.decode().strip().splitlines()[-1])
                try:
                    background = parse_wrk(out)
                except AttributeError:
                    background = {"unparsed": out[-500:]}
                settle(process.pid)
                run = {"target": name, "round": rep, "background": background, **outcome}
                result["runs"].append(run)
                ttfc = outcome["ttfc_s"]
                print(
                    f"r{rep} {name:28} probes {len(ttfc)} errors {len(outcome['errors'])} "
                    f"TTFC p50 {1000 * percentile(ttfc, 50):8.2f} ms p99 "
                    f"{1000 * percentile(ttfc, 99):8.2f} ms; background "
                    f"{background.get('rps')} req/s",
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
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["target"] for r in result["runs"]):
        runs = [r for r in result["runs"] if r["target"] == name]
        ttfc = [v for r in runs for v in r["ttfc_s"]]
        total = [v for r in runs for v in r["total_s"]]
        out[name] = {
            "probes": len(ttfc),
            "errors": sum(len(r["errors"]) for r in runs),
            "ttfc_p50_ms": round(1000 * percentile(ttfc, 50), 3),
            "ttfc_p90_ms": round(1000 * percentile(ttfc, 90), 3),
            "ttfc_p99_ms": round(1000 * percentile(ttfc, 99), 3),
            "ttfc_max_ms": round(1000 * max(ttfc), 3),
            "total_p50_ms": round(1000 * percentile(total, 50), 3),
            "per_round_p99_ms": [round(1000 * percentile(r["ttfc_s"], 99), 3) for r in runs],
            "background_rps": [r["background"].get("rps") for r in runs],
            "background_p99_ms": [r["background"].get("p99_ms") for r in runs],
            "probe_niced": all(r["niced"] for r in runs),
        }
    direct = out.get("direct")
    for name, row in out.items():
        if direct and name != "direct":
            row["added_p50_ms"] = round(row["ttfc_p50_ms"] - direct["ttfc_p50_ms"], 3)
            row["added_p99_ms"] = round(row["ttfc_p99_ms"] - direct["ttfc_p99_ms"], 3)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Time to first chunk under load: {result['scenario']}",
        "",
        f"{result['machine']}. A background wrk load of {result['connections'] - 1} streamed "
        f"connections on the target, plus one probe connection (its own process) timing "
        f"{result['probes']} streamed requests from sending to the first content chunk; "
        f"{result['rounds']} interleaved rounds. proxycast: one worker, default configuration. "
        f"Load average before {result['load_before']}, after {result['load_after']}.",
        "",
        "| target | probes | errors | TTFC p50 ms | p90 ms | p99 ms | max ms | added p50 ms | "
        "added p99 ms | p99 per round | background req/s per round | background p99 ms per round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for name, row in result["summary"].items():
        lines.append(
            f"| {name} | {row['probes']} | {row['errors']} | {row['ttfc_p50_ms']} | "
            f"{row['ttfc_p90_ms']} | {row['ttfc_p99_ms']} | {row['ttfc_max_ms']} | "
            f"{row.get('added_p50_ms', '-')} | {row.get('added_p99_ms', '-')} | "
            f"{' / '.join(str(v) for v in row['per_round_p99_ms'])} | "
            f"{' / '.join(str(v) for v in row['background_rps'])} | "
            f"{' / '.join(str(v) for v in row['background_p99_ms'])} |"
        )
    lines += [
        "",
        "nginx sends its fixed stream in one piece, so its TTFC is its whole answer; "
        "the added figures are the gateway's (or the framework's) share. Under a load of 255 "
        "connections the TTFC is mostly queueing: each connection's next request waits behind "
        "the others' on one worker.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=300, help="probe requests per target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=256, help="the load's plus the probe's")
    parser.add_argument(
        "--scenario",
        default="openai passthrough, streamed (20 chunks)",
        choices=[name for name, s in SCENARIOS.items() if s.stream],
    )
    parser.add_argument("--no-ceiling", action="store_true", help="leave the framework out")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before probing")
    parser.add_argument("--out", default="ttfc", help="results name (bench/results/NAME.*)")
    parser.add_argument("--role", default="orchestrator", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "probe":
        outcome = probe(args.port, sys.stdin.buffer.read(), args.probes)
        print(json.dumps(outcome), flush=True)
        return
    result = measure(args)
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
