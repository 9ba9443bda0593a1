"""Instructions per request: what one request costs the gateway's worker, counted by valgrind
(callgrind), a figure that does not move with the machine's load the way req/s does.

One ``proxycast serve`` worker (or the bare framework, bench/ceiling.py) runs under callgrind; for
each scenario, after a warm-up, its counters are dumped (``callgrind_control --dump``), N requests are
sent one after another on one keep-alive connection, and the counters are dumped again: the second
dump divided by N is the cost of a request (parsing, routing, the upstream call through httpx, the
relay, accounting, and the background work that ran meanwhile: the ledger's writer, say). The same
scenario repeated gives the same figure to about 0.3%.

It counts instructions, not time: the kernel's work (socket calls, file writes) is not in it, nor
cache misses. bench/run.py and bench/features.py measure time; this says where the work is and
compares versions and configurations exactly on a machine too noisy for small differences in req/s.

    .venv/bin/python bench/instructions.py [--requests 60] \
        [--install before=/path/to/python:bare] [--variants off,default,...] [--chunks]

``--install LABEL=PYTHON:VARIANT,...`` adds another install (a venv's python) measured with the given
variants (``bare``: a configuration with only [server] and [[providers]], for versions before the
accounting). PYTHON may be a source tree instead (a git worktree of another commit): this script's
python runs that tree's ``src`` (first on PYTHONPATH), so versions compare with the same packages.
Each install's ``proxycast.__file__`` is written with the figures: which tree really ran. Needs nginx and valgrind (Debian's ``valgrind``). Writes bench/results/instructions.{json,md}.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import common
import run

HERE = Path(__file__).parent
CLIENT_KEY = "bench-client-key"
CHUNKS_LONG = 200

SCENARIOS: dict[str, tuple[str, str, bool]] = {
    # name: (inbound path, model, stream)
    "openai passthrough": ("/v1/chat/completions", "bench-json", False),
    "openai passthrough, streamed (20 chunks)": ("/v1/chat/completions", "bench-sse", True),
    "openai -> anthropic": ("/v1/chat/completions", "claude-bench-json", False),
    "openai -> anthropic, streamed": ("/v1/chat/completions", "claude-bench-sse", True),
    "anthropic passthrough": ("/v1/messages", "claude-bench-json", False),
    "anthropic passthrough, streamed": ("/v1/messages", "claude-bench-sse", True),
    "anthropic -> openai": ("/v1/messages", "bench-json", False),
    "anthropic -> openai, streamed": ("/v1/messages", "bench-sse", True),
}
LONG = {  # the same streams with 200 chunks: the relay's cost per chunk is the difference / 180
    "openai passthrough, streamed (200 chunks)": ("/v1/chat/completions", "bench-sse200", True),
    # the upstream names another model than the client asked for (OpenAI's dated names, aliases)
    "openai passthrough, streamed (200 chunks, renamed)": (
        "/v1/chat/completions",
        "bench-sse200r",
        True,
    ),
    "openai -> anthropic, streamed (200 chunks)": (
        "/v1/chat/completions",
        "claude-bench-sse200",
        True,
    ),
}

CLIENT = f"""
[[clients]]
name = "bench"
api_key = "{CLIENT_KEY}"
models = ["*"]
{{limits}}
[prices]
"*" = {{{{ input = 1.0, output = 2.0 }}}}
"""
LIMITS = "rpm = 100000000\ntpm = 1000000000000\nmax_usd_per_day = 1000000000.0"
LEDGER_OFF = '[ledger]\nurl = "off"\n'
OFF_SERVER = 'access_log = "off"\nmetrics = false\n'

ROUTING = """
[[routes]]
name = "background"
match = { inbound = "anthropic", model = "claude-*haiku*" }
target = "bench-json"
[[routes]]
name = "team"
match = { header = { "x-team" = "red" }, min_input_tokens = 60000 }
target = "bench-json"
[routing]
strategy = "weighted"
affinity = "session"
"""
"""Agent routing (issue 29): two rules that never match the scenarios' requests (each is looked
at), weighted selection and session affinity."""

VARIANTS: dict[str, tuple[str, str, bool]] = {
    # name: ([server] lines, more tables, uses the named client's key)
    "bare": ("", "", False),
    "off": (OFF_SERVER, LEDGER_OFF, False),
    "default": ("", CLIENT.format(limits=LIMITS), True),
    "routing": ("", CLIENT.format(limits=LIMITS) + ROUTING, True),
    "off+routing": (OFF_SERVER, LEDGER_OFF + ROUTING, False),
    "ledger": (OFF_SERVER, "", False),
    "limits": (OFF_SERVER, LEDGER_OFF + CLIENT.format(limits=LIMITS), True),
    "access log": ('metrics = false\naccess_log = "text"\n', LEDGER_OFF, False),
    "metrics": ('access_log = "off"\n', LEDGER_OFF, False),
}


def long_streams() -> dict[str, bytes]:
    """The 200-chunk streams (OpenAI and Anthropic), by path: too long for an nginx ``return``."""
    return {
        "/sse200/v1/chat/completions": _openai_stream("bench-sse200"),
        "/sse200r/v1/chat/completions": _openai_stream("bench-sse200-2026-01-01"),
        "/anth-sse200/v1/messages": _anthropic_stream(),
    }


def _openai_stream(model: str) -> bytes:
    base = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 0, "model": model}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    chunks += [
        {**base, "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
        for i in range(CHUNKS_LONG - 2)
    ]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()


def _anthropic_stream() -> bytes:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_b", "type": "message", "role": "assistant", "model": "claude-bench-sse200", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    }  # fmt: skip
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", start),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ]  # fmt: skip
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"w{i} "}})
        for i in range(CHUNKS_LONG - 4)
    ]  # fmt: skip
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 17}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events).encode()


class _LongStreams(http.server.BaseHTTPRequestHandler):
    """The upstream of the 200-chunk streams (keep-alive; its speed is not what is counted)."""

    protocol_version = "HTTP/1.1"
    answers = long_streams()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        answer = self.answers[self.path]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def providers_200(upstream: str) -> str:
    return f"""
[[providers]]
name = "sse200"
type = "openai"
base_url = "{upstream}/sse200/v1"
models = ["bench-sse200"]
[[providers]]
name = "sse200r"
type = "openai"
base_url = "{upstream}/sse200r/v1"
models = ["bench-sse200r"]
[[providers]]
name = "anth-sse200"
type = "anthropic"
base_url = "{upstream}/anth-sse200"
api_keys = ["x"]
models = ["claude-bench-sse200"]
"""


def body(path: str, model: str, stream: bool) -> bytes:
    data = run.openai_body(model, stream) if "chat" in path else run.anthropic_body(model, stream)
    return json.dumps(data).encode()


def drive(port: int, path: str, payload: bytes, key: str, count: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    for _ in range(count):
        connection.request("POST", path, payload, headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{path}: {answer.status}")
    connection.close()


def dump(pid: int, folder: Path, prefix: str) -> int:
    """Dump the counters of the callgrind run ``pid`` (zeroing them); the instructions counted."""
    before = set(folder.glob(prefix + ".*"))
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for path in set(folder.glob(prefix + ".*")) - before:
            found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"), re.M)
            if found:
                return int(found.group(1))
        time.sleep(0.2)
    raise TimeoutError(f"no callgrind dump from {pid}")


def measure_server(
    command: list[str],
    port: int,
    folder: Path,
    scenarios: dict[str, tuple[str, str, bool]],
    key: str,
    requests: int,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    idle: float = 0.0,
    collect: bool = False,
) -> dict[str, Any]:
    """Instructions per request of each scenario; with ``idle`` seconds, first the instructions a
    second of the server left alone after a warm-up (its timers: ``idle_per_second``) and each
    scenario's wall time (``seconds``), from which :func:`net` takes the background out. With
    ``collect`` (a server run by bench/still.py), a full garbage collection before each count."""
    prefix = f"cg-{port}"
    process = run.start(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder / prefix}.%p", *command],
        port,
        folder / f"{prefix}.log",
        cwd=cwd,
        env=env,
    )
    out: dict[str, Any] = {}
    try:
        if idle:
            path, model, stream = next(iter(scenarios.values()))
            drive(port, path, body(path, model, stream), key, 10)
            dump(process.pid, folder, prefix)
            started = time.monotonic()
            time.sleep(idle)
            count = dump(process.pid, folder, prefix)
            out["idle_per_second"] = count / (time.monotonic() - started)
            out["seconds"] = {}
            print(f"  idle: {out['idle_per_second'] / 1e6:8.3f} M instructions/s", flush=True)
        for name, (path, model, stream) in scenarios.items():
            payload = body(path, model, stream)
            drive(port, path, payload, key, 10)
            if collect:
                os.kill(process.pid, signal.SIGUSR2)
                time.sleep(3)  # a full collection, under callgrind: well under a second
            dump(process.pid, folder, prefix)
            started = time.monotonic()
            drive(port, path, payload, key, requests)
            out[name] = dump(process.pid, folder, prefix) / requests
            if idle:
                out["seconds"][name] = time.monotonic() - started
            print(f"  {name:45} {out[name] / 1e6:8.3f} M instructions/request", flush=True)
    finally:
        run.stop(process)
    return out


def framework_command(port: int, module: str) -> list[str]:
    """The bare framework serving ``module``'s app (bench/ceiling.py, bench/relay_floor.py)."""
    code = (
        "import trio; from hypercorn.config import Config; from hypercorn.trio import serve; "
        f"from {module} import app; c = Config(); c.bind = ['127.0.0.1:{port}']; "
        "c.accesslog = None; trio.run(serve, app, c)"
    )
    return [sys.executable, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument(
        "--variants", default="off,default,ledger,limits,access log,metrics", help="comma-separated"
    )
    parser.add_argument("--install", action="append", default=[], help="LABEL=PYTHON:VARIANT,...")
    parser.add_argument("--only", default="", help="scenarios whose name contains this")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument(
        "--idle",
        type=float,
        default=0.0,
        help="seconds of each server left idle: its background's instructions a second, then "
        "taken out of each scenario's figure by its wall time (the 'net' table)",
    )
    parser.add_argument(
        "--still",
        action="store_true",
        help="stretch the gateway's periodic timers to an hour (bench/still.py), one hash seed, "
        "a full garbage collection before each count: each request's own work, without the "
        "background's",
    )
    parser.add_argument("--out", default="instructions", help="bench/results/OUT.{json,md}")
    parser.add_argument(
        "--merge", nargs="+", default=[], help="only merge these results files into OUT"
    )
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(Path(path).read_text()) for path in args.merge]
        merged: dict[str, Any] = {
            "machine": parts[0]["machine"],
            "requests_per_scenario": parts[0]["requests_per_scenario"],
            "measured": [m for part in parts for m in part["measured"]],
            "sources": {k: v for part in parts for k, v in part.get("sources", {}).items()},
        }
        write(merged, args.out)
        return
    for tool in ("valgrind", "callgrind_control", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: valgrind, nginx-light)")
    scenarios = {k: v for k, v in {**SCENARIOS, **LONG}.items() if args.only in k}
    installs = [("this tree", str(HERE.parent), [v for v in args.variants.split(",") if v])]
    for spec in args.install:
        label, _, rest = spec.partition("=")
        python, _, variants = rest.rpartition(":")
        installs.append((label, python, variants.split(",")))
    folder = Path(tempfile.mkdtemp(prefix="proxycast-instructions-"))
    nginx_port = run.free_port()
    upstream = f"http://127.0.0.1:{nginx_port}"
    nginx = run.start(
        ["nginx", "-c", str(run.nginx_config(folder, nginx_port))], nginx_port, folder / "nginx.log"
    )
    streams = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LongStreams)
    threading.Thread(target=streams.serve_forever, daemon=True).start()
    long_upstream = f"http://127.0.0.1:{streams.server_address[1]}"
    result: dict[str, Any] = {
        "machine": run.machine(),
        "requests_per_scenario": args.requests,
        "still": args.still,
        "measured": [],
        "sources": {},
    }
    try:
        if not args.no_ceiling:
            bare = (  # the framework answering by itself, then relaying through httpx
                ("framework ceiling", "ceiling", ("openai passthrough",)),
                ("hypercorn alone", "asgi_ceiling", ("openai passthrough",)),
                (
                    "relay floor",
                    "relay_floor",
                    [k for k in SCENARIOS if k.startswith("openai passthrough")],
                ),
            )
            for install, module, names in bare:
                print(install, flush=True)
                port = run.free_port()
                counts = measure_server(
                    framework_command(port, module),
                    port,
                    folder,
                    {name: SCENARIOS[name] for name in names},
                    run.KEY,
                    args.requests,
                    cwd=HERE,
                    env={"UPSTREAM": upstream},
                )
                result["measured"].append({"install": install, "variant": "", **counts})
        for label, python_or_tree, variants in installs:
            python, env = install_command(python_or_tree)
            result["sources"][label] = subprocess.run(
                [python, "-c", "import proxycast; print(proxycast.__file__)"],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            print(f"{label}: {result['sources'][label]}", flush=True)
            for variant in variants:
                server, tables, named = VARIANTS[variant]
                print(f"{label}: {variant}", flush=True)
                port = run.free_port()
                sub = folder / f"{len(result['measured'])}"
                sub.mkdir()
                chosen = scenarios
                if variant == "bare":  # an older version: no 200-chunk providers either
                    chosen = {k: v for k, v in scenarios.items() if k in SCENARIOS}
                else:
                    tables += providers_200(long_upstream)
                path = run.proxycast_config(sub, upstream, port, server, tables)
                launch = [str(HERE / "still.py")] if args.still else ["-m", "proxycast"]
                counts = measure_server(
                    [python, *launch, "serve", "--config", str(path)],
                    port,
                    folder,
                    chosen,
                    CLIENT_KEY if named else run.KEY,
                    args.requests,
                    # still: one hash seed for every server (a dict's collisions and a set's
                    # order move the counts from one process to the next)
                    env={
                        "PROXYCAST_HOME": str(sub / "home"),
                        **({"PYTHONHASHSEED": "0"} if args.still else {}),
                        **env,
                    },
                    idle=args.idle,
                    collect=args.still,
                )
                result["measured"].append({"install": label, "variant": variant, **counts})
    finally:
        run.stop(nginx)
        streams.shutdown()
    write(result, args.out)
    shutil.rmtree(folder, ignore_errors=True)


def install_command(python_or_tree: str) -> tuple[str, dict[str, str]]:
    """The python to run and the environment it needs: a source tree runs with this python and
    its ``src`` first on the path (the venv's own install, an editable one, comes after)."""
    if Path(python_or_tree).is_dir():
        return sys.executable, {"PYTHONPATH": str(Path(python_or_tree).resolve() / "src")}
    return python_or_tree, {}


def net(m: dict[str, Any], requests: int) -> dict[str, float]:
    """A measurement's instructions per request without its idle background (the timers' work
    over the scenario's wall time: under callgrind a request takes about half a second, a hundred
    times its time natively, so a timer's share of a request is a hundred times its real one, and
    moves with the machine's load)."""
    rate, seconds = m.get("idle_per_second"), m.get("seconds", {})
    if rate is None:
        return {}
    return {k: m[k] - rate * t / requests for k, t in seconds.items()}


def write(result: dict[str, Any], name: str) -> None:
    result["analysis"] = analyse(result["measured"], result["requests_per_scenario"])
    common.write_results(name, result, markdown(result))


def analyse(measured: list[dict[str, Any]], requests: int) -> dict[str, Any]:
    """Ratios: each feature's cost against everything off, the default against off, the ceiling
    against each, the relay's instructions per chunk, and other installs against this tree."""
    by = {(m["install"], m["variant"]): m for m in measured}
    out: dict[str, Any] = {}
    off = by.get(("this tree", "off"))
    if off:
        for (install, variant), m in by.items():
            if install == "this tree" and variant != "off":
                out[f"off / {variant}"] = {
                    k: round(off[k] / v, 3) for k, v in m.items() if k in off and k in SCENARIOS
                }
    ceiling = by.get(("framework ceiling", ""))
    if ceiling:
        name = "openai passthrough"
        out["ceiling / variant (openai passthrough)"] = {
            f"{i} {v}".strip(): round(ceiling[name] / m[name], 3)
            for (i, v), m in by.items()
            if i != "framework ceiling" and name in m
        }
    floor = by.get(("relay floor", ""))
    if floor:
        out["relay floor / variant"] = {
            f"{i} {v}: {name}": round(floor[name] / m[name], 3)
            for (i, v), m in by.items()
            for name in floor
            if i not in ("framework ceiling", "relay floor") and name in m and name in SCENARIOS
        }
    for (install, variant), m in by.items():
        mine = by.get(("this tree", variant))
        if (
            install in ("this tree", "framework ceiling", "hypercorn alone", "relay floor")
            or not mine
        ):
            continue
        out[f"this tree / {install} ({variant})"] = {
            k: round(mine[k] / v, 4)
            for k, v in m.items()
            if k in mine and k in {**SCENARIOS, **LONG}
        }
        mine_net, theirs_net = net(mine, requests), net(m, requests)
        if mine_net and theirs_net:
            out[f"this tree / {install} ({variant}), net of the idle background"] = {
                k: round(mine_net[k] / v, 4) for k, v in theirs_net.items() if k in mine_net
            }
    for (install, variant), m in by.items():
        for short, long_ in (
            (
                "openai passthrough, streamed (20 chunks)",
                "openai passthrough, streamed (200 chunks)",
            ),
            ("openai -> anthropic, streamed", "openai -> anthropic, streamed (200 chunks)"),
        ):
            if short in m and long_ in m:
                per_chunk = (m[long_] - m[short]) / (CHUNKS_LONG - 20)
                out.setdefault("instructions per relayed chunk", {})[
                    f"{install} {variant}: {long_}"
                ] = round(per_chunk)
    return out


def markdown(result: dict[str, Any]) -> str:
    measured = result["measured"]
    names = [n for n in {**SCENARIOS, **LONG} if any(n in m for m in measured)]
    lines = [
        "# Instructions per request (callgrind)",
        "",
        f"{result['machine']}; {result['requests_per_scenario']} requests per scenario, one after "
        "another on one connection, after 10 of warm-up. Millions of instructions a request, the "
        "worker's process (its threads included)."
        + (
            " The gateways ran with their periodic timers stretched to an hour (`--still`, "
            "bench/still.py), one hash seed, and a full garbage collection before each count: "
            "each request's own work, without the background's."
            if result.get("still")
            else ""
        ),
        "",
        "| scenario | "
        + " | ".join(f"{m['install']} {m['variant']}".strip() for m in measured)
        + " |",
        "|---|" + "---:|" * len(measured),
    ]
    for name in names:
        cells = [f"{m[name] / 1e6:.3f}" if name in m else "" for m in measured]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if any("idle_per_second" in m for m in measured):
        cells = [
            f"{m['idle_per_second'] / 1e6:.3f}" if "idle_per_second" in m else "" for m in measured
        ]
        lines.append("| idle: millions of instructions a second | " + " | ".join(cells) + " |")
        nets = [net(m, result["requests_per_scenario"]) for m in measured]
        lines += [
            "",
            "Net of the idle background (each figure less the idle instructions a second times "
            "the scenario's wall time, a request):",
            "",
            lines[4],
            lines[5],
        ]
        for name in names:
            cells = [f"{n[name] / 1e6:.3f}" if name in n else "" for n in nets]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("sources"):
        lines += ["", "Sources run (`proxycast.__file__` in each install's environment):", ""]
        lines += [f"- {k}: `{v}`" for k, v in result["sources"].items()]
    for title, values in result["analysis"].items():
        lines += ["", f"**{title}**", ""]
        lines += [f"- {k}: {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
