"""proxycast against a direct connection, LiteLLM and the bare framework, in ONE run, on one upstream.

The upstream is nginx serving fixed OpenAI, Anthropic and Gemini answers (JSON, and 20-chunk SSE
streams sent at once) on loopback (bench/upstream.py); the load generator is wrk, in its own process,
bounded in time. proxycast runs the DEFAULT configuration (bench/common.py: the SQLite ledger on, one
named client with rpm, tpm and a daily budget, [prices]; wrk presents that client's key) with 1 and 2
workers. Every target is measured in the same run, interleaved: for each connection count, ``--rounds``
rounds, each measuring the framework ceiling (bench/ceiling.py: bare Quart-Trio on Hypercorn answering
a fixed JSON, and a fixed 20-chunk stream) and every scenario on every target, the order of the
targets reversed every other round; the tables give medians. After each run the next waits until the
last target is idle again (work left queued by wrk must not weigh on the next measurement).
Then 10,000 concurrent slow streams (bench/streams.py) and 300 disconnects (bench/disconnect.py).

    .venv/bin/python bench/run.py [--seconds 4] [--rounds 2] [--only 'anthropic ->' ...] [--streams N]
    bash bench/run          # installs nginx, wrk and LiteLLM's proxy first, then runs this

About 18 minutes at the defaults, plus the streams: 106 wrk runs in the first round (10 scenarios x
proxycast 1 and 2 workers and LiteLLM x 1/32/256 connections, nginx directly at 1 connection, the two
ceilings), 76 in the second (LiteLLM only in the first: ``--litellm-rounds``), 4 s each plus the wait
for idle (LiteLLM keeps working ~6 s after a 256-connection run); then the 10,000 streams (1.5 to 6
minutes, depending on the machine's load) and half a minute of disconnects.

Writes bench/results/results.{json,md} and throughput.png; ``--out NAME`` writes NAME.{json,md}
instead (and no plot), e.g. for a quick ``--only`` run.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    CLIENT_KEY,
    HERE,
    KEY,
    MESSAGES,
    RESULTS,
    anthropic_body,
    cpu_seconds,
    free_port,
    gemini_body,
    machine,
    median,
    openai_body,
    parse_wrk,
    proxycast_config,
    raise_nofile,
    session_cpu,
    settle,
    start,
    start_gateway,
    stop,
    wait_port,
    wrk,
)
from upstream import (
    ANTHROPIC_JSON,
    GEMINI_SSE_MODEL,
    OPENAI_JSON,
    anthropic_events,
    nginx_config,
    openai_chunks,
)

__all__ = [  # what the other scripts of bench/ use from here
    "ANTHROPIC_JSON", "CLIENT_KEY", "KEY", "MESSAGES", "OPENAI_JSON", "anthropic_body",
    "anthropic_events", "cpu_seconds", "free_port", "machine", "nginx_config", "openai_body",
    "openai_chunks", "parse_wrk", "proxycast_config", "start", "stop", "wait_port", "wrk",
]  # fmt: skip

CONCURRENCY = (1, 32, 256)
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A client request through a gateway, and the same answer fetched from nginx directly."""

    inbound: str
    """The API the client speaks: ``openai`` (/v1/chat/completions) or ``anthropic`` (/v1/messages)."""
    model: str
    stream: bool
    direct_path: str
    direct_kind: str
    """The body nginx is sent directly: ``openai``, ``anthropic`` or ``gemini``."""

    @property
    def path(self) -> str:
        return "/v1/messages" if self.inbound == "anthropic" else "/v1/chat/completions"

    @property
    def body(self) -> dict[str, Any]:
        if self.inbound == "anthropic":
            return anthropic_body(self.model, self.stream)
        return openai_body(self.model, self.stream)

    @property
    def headers(self) -> dict[str, str]:
        return ANTHROPIC_HEADERS if self.inbound == "anthropic" else {}

    @property
    def direct_body(self) -> dict[str, Any]:
        if self.direct_kind == "gemini":
            return gemini_body()
        if self.direct_kind == "anthropic":
            return anthropic_body(self.model, self.stream)
        return openai_body(self.model, self.stream)


GEMINI_JSON_PATH = "/gem-json/v1beta/models/gemini-bench-json:generateContent"
GEMINI_SSE_PATH = f"/gem-sse/v1beta/models/{GEMINI_SSE_MODEL}:streamGenerateContent?alt=sse"
SCENARIOS = {
    "openai passthrough": Scenario(
        "openai", "bench-json", False, "/json/v1/chat/completions", "openai"
    ),
    "openai passthrough, streamed (20 chunks)": Scenario(
        "openai", "bench-sse", True, "/sse/v1/chat/completions", "openai"
    ),
    "openai -> anthropic": Scenario(
        "openai", "claude-bench-json", False, "/anth-json/v1/messages", "anthropic"
    ),
    "openai -> anthropic, streamed": Scenario(
        "openai", "claude-bench-sse", True, "/anth-sse/v1/messages", "anthropic"
    ),
    "anthropic passthrough": Scenario(
        "anthropic", "claude-bench-json", False, "/anth-json/v1/messages", "anthropic"
    ),
    "anthropic passthrough, streamed": Scenario(
        "anthropic", "claude-bench-sse", True, "/anth-sse/v1/messages", "anthropic"
    ),
    "anthropic -> openai": Scenario(
        "anthropic", "bench-json", False, "/json/v1/chat/completions", "openai"
    ),
    "anthropic -> openai, streamed": Scenario(
        "anthropic", "bench-sse", True, "/sse/v1/chat/completions", "openai"
    ),
    "openai -> gemini": Scenario("openai", "gemini-bench-json", False, GEMINI_JSON_PATH, "gemini"),
    "openai -> gemini, streamed": Scenario(
        "openai", GEMINI_SSE_MODEL, True, GEMINI_SSE_PATH, "gemini"
    ),
}
FLOOR = "relay floor"
FLOOR_SCENARIOS = ("openai passthrough", "openai passthrough, streamed (20 chunks)")
CEILINGS = {  # the framework answering without an upstream: a JSON body, or 20 chunks one by one
    "framework ceiling": openai_body("bench-json", False),
    "framework ceiling, streamed": openai_body("bench-sse", True),
}


def litellm_config(folder: Path, upstream: str) -> Path:
    path = folder / "litellm.yaml"
    entries = [
        ("bench-json", "openai/bench-json", f"{upstream}/json/v1"),
        ("bench-sse", "openai/bench-sse", f"{upstream}/sse/v1"),
        ("claude-bench-json", "anthropic/claude-bench-json", f"{upstream}/anth-json"),
        ("claude-bench-sse", "anthropic/claude-bench-sse", f"{upstream}/anth-sse"),
        # LiteLLM builds {api_base}/models/{model}:generateContent (or :streamGenerateContent?alt=sse)
        ("gemini-bench-json", "gemini/gemini-bench-json", f"{upstream}/gem-json/v1beta"),
        (GEMINI_SSE_MODEL, f"gemini/{GEMINI_SSE_MODEL}", f"{upstream}/gem-sse/v1beta"),
    ]
    lines = ["model_list:"]
    for name, model, base in entries:
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            f"      model: {model}",
            f"      api_base: {base}",
            "      api_key: x",
        ]
    lines += [
        "general_settings:",
        f"  master_key: {KEY}",
        "litellm_settings:",
        "  drop_params: true",
        # /v1/messages to an OpenAI model: chat/completions, as proxycast (not the Responses API)
        "  use_chat_completions_url_for_anthropic_messages: true",
        "  telemetry: false",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- one request, to see that a target can serve a scenario at all ---------------------------------------


def probe(base: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> str | None:
    """None if one request answers 200 with the fixed answer's text; else why not (the reason a
    target is n/a for a scenario)."""
    port = int(base.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST",
            path,
            json.dumps(body),
            {"content-type": "application/json", **headers},
        )
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    if response.status != 200:
        return f"{response.status}: {' '.join(text.split())[:300]}"
    wanted = "word1" if body.get("stream") or "alt=sse" in path else "Hello from"
    if wanted not in text:
        return f"200 without the answer's text: {' '.join(text.split())[:300]}"
    return None


# --- the measurement ---------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    folder = Path(tempfile.mkdtemp(prefix="proxycast-bench-"))
    nginx_port = free_port()
    upstream = f"http://127.0.0.1:{nginx_port}"
    processes: list[Any] = []
    scenarios = {
        name: s
        for name, s in SCENARIOS.items()
        if not args.only or any(o in name for o in args.only)
    }
    results: dict[str, Any] = {
        "machine": machine(),
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "load_before": os.getloadavg(),
        "runs": [],
        "not_applicable": {},
    }
    try:
        nginx = ["nginx", "-c", str(nginx_config(folder, nginx_port))]
        processes.append(start(nginx, nginx_port, folder / "nginx.log"))
        targets: dict[str, tuple[str, Any]] = {}  # name -> (base URL, process)
        for workers in (1, 2):
            port = free_port()
            config = proxycast_config(folder, upstream, port, client=True, name=f"pc{workers}")
            process = start_gateway(
                sys.executable, config, port, folder, f"proxycast-{workers}", workers
            )
            processes.append(process)
            targets[f"proxycast {workers}w"] = (f"http://127.0.0.1:{port}", process)
        litellm = HERE / ".litellm" / "bin" / "litellm"
        if litellm.exists() and not args.no_litellm:
            port = free_port()
            command = [
                str(litellm), "--config", str(litellm_config(folder, upstream)),
                "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1",
            ]  # fmt: skip
            env = {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
            processes.append(start(command, port, folder / "litellm.log", env=env))
            targets["litellm"] = (f"http://127.0.0.1:{port}", processes[-1])
        port = free_port()
        hypercorn = Path(sys.executable).with_name("hypercorn")
        command = [str(hypercorn), "--worker-class", "trio", "--bind", f"127.0.0.1:{port}"]
        processes.append(start([*command, "ceiling:app"], port, folder / "ceiling.log", cwd=HERE))
        ceiling = (f"http://127.0.0.1:{port}", processes[-1])
        # the stack alone relaying (bench/relay_floor.py), in its own process as the ceiling: served
        # as proxycast's own OpenAI passthrough scenarios (its only routes)
        port = free_port()
        command = [sys.executable, str(HERE / "relay_floor.py"), f"127.0.0.1:{port}"]
        env = {"UPSTREAM": upstream}
        processes.append(start(command, port, folder / "floor.log", cwd=HERE, env=env))
        targets[FLOOR] = (f"http://127.0.0.1:{port}", processes[-1])
        time.sleep(1.0)

        # which target can serve which scenario (LiteLLM may not: n/a, with the reason)
        serves: dict[tuple[str, str], bool] = {}
        for name, scenario in scenarios.items():
            for target, (base, _) in targets.items():
                key = KEY if target == "litellm" else CLIENT_KEY
                headers = {"Authorization": f"Bearer {key}", **scenario.headers}
                if target == FLOOR and name not in FLOOR_SCENARIOS:
                    serves[(name, target)] = False
                    continue
                problem = probe(base, scenario.path, scenario.body, headers)
                serves[(name, target)] = problem is None
                if problem is not None:
                    if target != "litellm":
                        raise RuntimeError(f"{target} cannot serve {name!r}: {problem}")
                    results["not_applicable"][f"{name} / {target}"] = problem
                    print(f"n/a: {name} / {target}: {problem}", flush=True)
            problem = probe(upstream, scenario.direct_path, scenario.direct_body, {})
            assert problem is None, (name, problem)
        for body in CEILINGS.values():
            assert probe(ceiling[0], "/v1/chat/completions", body, {}) is None

        def one(
            name: str, target: str, url: str, body: dict[str, Any], headers: dict[str, str],
            connections: int, rep: int, process: Any,
        ) -> None:  # fmt: skip
            cpu = session_cpu(process.pid)
            run = wrk(url, body, headers, connections, args.seconds, folder)
            cpu = session_cpu(process.pid) - cpu
            run["cpu_ms_per_request"] = round(1000 * cpu / max(1, run["requests"]), 3)
            run["settle_s"] = round(settle(process.pid), 1)
            run.update(scenario=name, target=target, connections=connections, round=rep)
            results["runs"].append(run)
            print(
                f"{name:40} {target:27} c={connections:<4} r{rep} {run['rps']:>8.1f} req/s  "
                f"p50 {run['p50_ms']:8.3f} ms  p99 {run['p99_ms']:9.3f} ms  "
                f"non-2xx {run['non_2xx']}  {run['socket_errors']}",
                flush=True,
            )

        for connections in CONCURRENCY:
            for rep in range(args.rounds):
                for target, body in CEILINGS.items():
                    url = ceiling[0] + "/v1/chat/completions"
                    one(target, target, url, body, {}, connections, rep, ceiling[1])
                for name, scenario in scenarios.items():
                    order = ["direct", *targets] if connections == 1 else list(targets)
                    if rep % 2:
                        order.reverse()
                    for target in order:
                        if target == "direct":
                            url = upstream + scenario.direct_path
                            one(name, target, url, scenario.direct_body, {}, connections, rep,
                                processes[0])  # fmt: skip
                            continue
                        if not serves[(name, target)]:
                            continue
                        if target == "litellm" and rep >= args.litellm_rounds:
                            continue
                        base, process = targets[target]
                        key = KEY if target == "litellm" else CLIENT_KEY
                        headers = {"Authorization": f"Bearer {key}", **scenario.headers}
                        one(name, target, base + scenario.path, scenario.body, headers,
                            connections, rep, process)  # fmt: skip
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    return results


# --- the report -----------------------------------------------------------------------------------------


def cell(results: dict[str, Any], scenario: str, target: str, connections: int) -> dict[str, Any]:
    """The medians of a target's runs in one scenario and connection count ({} if none)."""
    runs = [
        r
        for r in results["runs"]
        if (r["scenario"], r["target"], r["connections"]) == (scenario, target, connections)
    ]
    if not runs:
        return {}
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(median(values), 3) if values else None
    out["per_round_rps"] = [r["rps"] for r in runs]
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    return out


def _ratio(a: Any, b: Any, digits: int = 3) -> float | None:
    return round(a / b, digits) if a and b else None


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    scenarios = list(dict.fromkeys(r["scenario"] for r in results["runs"]))
    for scenario in scenarios:
        if scenario in CEILINGS:
            continue
        stream = SCENARIOS[scenario].stream
        for connections in CONCURRENCY:
            ours = cell(results, scenario, "proxycast 1w", connections)
            if not ours:
                continue
            ceiling = cell(results, "framework ceiling", "framework ceiling", connections)
            streamed = cell(
                results, "framework ceiling, streamed", "framework ceiling, streamed", connections
            )
            litellm = cell(results, scenario, "litellm", connections)
            two = cell(results, scenario, "proxycast 2w", connections)
            floor = cell(results, scenario, FLOOR, connections)
            row: dict[str, Any] = {
                "scenario": scenario,
                "stream": stream,
                "connections": connections,
                "rps": ours["rps"],
                "vs_litellm": _ratio(ours["rps"], litellm.get("rps"), 2),
                "vs_ceiling": _ratio(ours["rps"], ceiling.get("rps")),
                "vs_stream_ceiling": _ratio(ours["rps"], streamed.get("rps")) if stream else None,
                "floor_vs_ceiling": _ratio(
                    floor.get("rps"), (streamed if stream else ceiling).get("rps")
                ),
                "vs_floor": _ratio(ours["rps"], floor.get("rps")),
                "litellm_completed_nothing": bool(litellm) and not litellm.get("rps"),
                "two_workers_vs_one": _ratio(two.get("rps"), ours["rps"], 2),
                "cpu_ms_per_request": ours["cpu_ms_per_request"],
            }
            if connections == 1:
                direct = cell(results, scenario, "direct", 1)
                json_direct = cell(results, "openai passthrough", "direct", 1)
                if direct and ceiling and json_direct:
                    row["added_p50_ms"] = round(ours["p50_ms"] - direct["p50_ms"], 3)
                    # the framework's own added latency: the ceiling's p50 over nginx's answer
                    # of the same size (the OpenAI JSON)
                    row["framework_added_p50_ms"] = round(
                        ceiling["p50_ms"] - json_direct["p50_ms"], 3
                    )
                    if stream and streamed:
                        row["framework_stream_added_p50_ms"] = round(
                            streamed["p50_ms"] - json_direct["p50_ms"], 3
                        )
            rows.append(row)
    return rows


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}{suffix}" if abs(value) < 100 else f"{value:.0f}{suffix}"
    return f"{value}{suffix}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# proxycast benchmark",
        "",
        f"Machine: {results['machine']}. One run; wrk, {results['seconds_per_run']} s per "
        f"measurement, {results['rounds']} interleaved rounds (medians), loopback; upstream: nginx "
        "with fixed answers. proxycast runs the default configuration (SQLite ledger, a named client "
        "with rpm/tpm/daily budget, [prices]). Load average at start "
        f"{results['load_before']}, at end {results['load_after']}. Absolute numbers drift on a "
        "shared machine: the ratios are the result.",
        "",
        "| scenario | target | conns | req/s (median) | per round | p50 ms | p99 ms | CPU ms/req | non-2xx |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    seen = list(
        dict.fromkeys((r["scenario"], r["target"], r["connections"]) for r in results["runs"])
    )
    for scenario, target, connections in sorted(
        seen, key=lambda k: (list(dict.fromkeys(s for s, _, _ in seen)).index(k[0]), k[2])
    ):
        c = cell(results, scenario, target, connections)
        per_round = "/".join(f"{v:.0f}" for v in c["per_round_rps"])
        lines.append(
            f"| {scenario} | {target} | {connections} | {c['rps']:.0f} | {per_round} | "
            f"{_fmt(c['p50_ms'])} | {_fmt(c['p99_ms'])} | {_fmt(c['cpu_ms_per_request'])} | "
            f"{c['non_2xx']} |"
        )
    lines += [
        "",
        "## Ratios (proxycast, one worker)",
        "",
        "The ceiling is bare Quart-Trio answering a fixed JSON; the stream ceiling, the same answering "
        "the fixed 20-chunk stream as a streamed response, in one piece (as proxycast relays nginx's "
        "stream, which arrives at once). Added p50: proxycast's p50 minus nginx's for the same answer; "
        "the framework's: the ceiling's p50 minus nginx's fixed JSON (streamed: the stream ceiling's). "
        "The relay floor (bench/relay_floor.py) is the same framework relaying through httpx's "
        "transport with nothing of proxycast's: floor / ceiling is what the stack alone reaches "
        "(against the stream ceiling for a stream).",
        "",
        "| scenario | conns | / LiteLLM | / ceiling | / stream ceiling | floor / ceiling | / floor "
        "| 2 workers / 1 | CPU ms/req | added p50 ms | framework added p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["ratios"]:
        framework = row.get("framework_added_p50_ms")
        if row.get("framework_stream_added_p50_ms") is not None:
            framework = f"{framework} (stream {row['framework_stream_added_p50_ms']})"
        litellm = row["vs_litellm"]
        if row.get("litellm_completed_nothing"):
            litellm = "unmeasured (LiteLLM 0 req/s)"
        elif litellm is None and any(
            k.startswith(row["scenario"] + " /") for k in results["not_applicable"]
        ):
            litellm = "n/a"
        lines.append(
            f"| {row['scenario']} | {row['connections']} | {_fmt(litellm)} | "
            f"{_fmt(row['vs_ceiling'])} | {_fmt(row['vs_stream_ceiling'])} | "
            f"{_fmt(row.get('floor_vs_ceiling'))} | {_fmt(row.get('vs_floor'))} | "
            f"{_fmt(row['two_workers_vs_one'])} | {_fmt(row['cpu_ms_per_request'])} | "
            f"{_fmt(row.get('added_p50_ms'))} | {_fmt(framework)} |"
        )
    if results["not_applicable"]:
        lines += ["", "Not applicable (one request tried before measuring):", ""]
        lines += [f"- {k}: {v}" for k, v in results["not_applicable"].items()]
    if "slow_streams" in results:
        s = results["slow_streams"]
        lines += [
            "",
            f"{s['streams']:,} concurrent slow streams (one worker, default configuration): "
            f"{s['completed']:,} completed, {s['max_concurrent']:,} open at once at the upstream; "
            f"peak RSS {s['peak_rss_mb']} MB (idle {s['idle_rss_mb']} MB), "
            f"{s['bytes_per_stream']:,} bytes per stream (bench/streams.py).",
        ]
    if "disconnect" in results:
        d = results["disconnect"]["all"]
        lines += [
            "",
            f"Disconnect -> upstream closed, {3 * results['disconnect']['rounds_per_phase']} "
            f"disconnects: p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms.",
        ]
    lines += [
        "",
        "Time to first chunk under load: bench/ttfc.py (ttfc.md); relay cost per chunk against "
        "44fa13a: bench/relay.py (relay.md); the cost of each feature: bench/features.py "
        "(features.md).",
    ]
    if results.get("targets"):
        lines += ["", "## Targets", ""] + [
            f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in results["targets"]
        ]
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any]) -> list[tuple[str, bool]]:
    """The targets of the performance issue that this run measures (TTFC, the relay cost and the
    feature costs are checked by their own scripts)."""
    rows = results["ratios"]
    out = []
    vs_litellm = [(r["vs_litellm"], r) for r in rows if r["vs_litellm"] is not None]
    if vs_litellm:
        low, row = min(vs_litellm, key=lambda p: p[0])
        where = f"{row['scenario']}, {row['connections']} conns"
        out.append(
            (
                f">= 8x LiteLLM in every scenario and connection count (lowest {low}x: {where})",
                low >= 8,
            )
        )
    nothing = [r for r in rows if r.get("litellm_completed_nothing")]
    if nothing:
        where = ", ".join(f"{r['scenario']} at {r['connections']}" for r in nothing)
        out.append(
            (
                f"LiteLLM completed no request within a run, so its ratio is unmeasured (a longer "
                f"--seconds): {where}",
                False,
            )
        )
    if results["not_applicable"]:
        out.append(("LiteLLM n/a in: " + ", ".join(results["not_applicable"]), True))
    for stream, floor in ((False, 0.55), (True, 0.50)):
        values = [
            (r["vs_ceiling"], r)
            for r in rows
            if r["stream"] == stream and r["vs_ceiling"] is not None and r["connections"] > 1
        ]
        if values:
            low, row = min(values, key=lambda p: p[0])
            kind = "streamed" if stream else "non-streamed"
            out.append(
                (
                    f"{kind} >= {floor:.0%} of the framework ceiling at 32 and 256 conns (lowest "
                    f"{low:.0%}: {row['scenario']}, {row['connections']} conns)",
                    low >= floor,
                )
            )
    added = [r for r in rows if r.get("added_p50_ms") is not None]
    if added:
        worst = max(added, key=lambda r: r["added_p50_ms"] - r["framework_added_p50_ms"])
        excess = worst["added_p50_ms"] - worst["framework_added_p50_ms"]
        out.append(
            (
                "added p50 at 1 connection <= the framework's own + 0.4 ms (worst: "
                f"{worst['scenario']}, {worst['added_p50_ms']} ms vs "
                f"{worst['framework_added_p50_ms']} ms + 0.4)",
                excess <= 0.4,
            )
        )
    two = [
        r["two_workers_vs_one"] for r in rows if r["two_workers_vs_one"] and r["connections"] > 1
    ]
    if two:
        out.append(
            (f"--workers 2 / 1: {min(two)}x to {max(two)}x at 32 and 256 conns (reported)", True)
        )
    if "slow_streams" in results:
        s = results["slow_streams"]
        ok = s["completed"] == s["streams"] >= 10_000 and s["peak_rss_mb"] < 600
        fewer = (
            f" (only {s['streams']:,} measured: not the target's 10,000)"
            if s["streams"] < 10_000
            else ""
        )
        out.append(
            (
                f"10,000 concurrent slow streams all complete ({s['completed']:,} of "
                f"{s['streams']:,}) in < 600 MB peak RSS ({s['peak_rss_mb']} MB; "
                f"{s['bytes_per_stream']:,} bytes per stream){fewer}",
                ok,
            )
        )
    if "disconnect" in results:
        p99 = results["disconnect"]["all"]["p99_ms"]
        out.append((f"disconnect -> upstream closed p99 < 10 ms ({p99} ms)", p99 < 10))
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        t
        for t in ("proxycast 1w", "proxycast 2w", "litellm")
        if any(r["target"] == t for r in results["runs"])
    ]
    scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in results["runs"])]
    fig, ax = plt.subplots(figsize=(13, 5.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [cell(results, s, name, 32).get("rps") or 0 for s in scenarios]
        ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=name)
    for target, style in (("framework ceiling", "--"), ("framework ceiling, streamed", ":")):
        rps = cell(results, target, target, 32).get("rps")
        if rps:
            ax.axhline(rps, linestyle=style, color="grey", label=target)
    ax.set_xticks(
        [x + width * (len(names) - 1) / 2 for x in range(len(scenarios))],
        [
            s.replace(", ", ",\n").replace(" -> ", "\n-> ").replace(" passthrough", "\npassthrough")
            for s in scenarios
        ],
        fontsize=8,
    )
    ax.set_ylabel("requests/s at 32 connections")
    ax.set_title("proxycast throughput by scenario (one run, loopback, nginx upstream, medians)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4, help="wrk duration of each measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (medians)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SCENARIO",
        help="only the scenarios whose name contains this (repeatable); the ceilings always run",
    )
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument(
        "--litellm-rounds",
        type=int,
        default=1,
        help="rounds that measure LiteLLM too (default 1: it is ~8x slower, and each of its runs "
        "at 256 connections leaves ~6 s of queued work to wait out)",
    )
    parser.add_argument(
        "--streams", type=int, default=10_000, help="concurrent slow streams (0: skip)"
    )
    parser.add_argument(
        "--disconnects", type=int, default=100, help="disconnect rounds per phase (0: skip)"
    )
    parser.add_argument("--out", help="results name (default: results, with the plot)")
    parser.add_argument(
        "--report", action="store_true", help="only rewrite the report from the JSON"
    )
    args = parser.parse_args()
    name = args.out or "results"
    if args.report:
        results = json.loads((RESULTS / f"{name}.json").read_text())
        results["ratios"] = ratios(results)
        results["targets"] = targets(results)
        (RESULTS / f"{name}.md").write_text(markdown(results))
        if not args.out:
            plot(results, RESULTS / "throughput.png")
        return
    results = measure(args)
    results["ratios"] = ratios(results)
    if args.streams:
        import streams

        print(f"{args.streams} slow streams...", flush=True)
        results["slow_streams"] = streams.measure(count=args.streams)
        print(json.dumps(results["slow_streams"]), flush=True)
    if args.disconnects:
        import disconnect
        import trio

        print("disconnects...", flush=True)
        results["disconnect"] = trio.run(disconnect.main, args.disconnects)
    results["targets"] = targets(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(results))
    if not args.out:
        plot(results, RESULTS / "throughput.png")
    print(markdown(results))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
