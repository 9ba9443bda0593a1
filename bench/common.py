"""What the benchmark scripts share: processes (start, stop, wait until idle), wrk, CPU and memory of a
process from /proc, and the gateway's configuration.

The DEFAULT configuration (``proxycast_config(..., client=True)``) is what a team runs: the SQLite
ledger on (its default place, the data directory: ``PROXYCAST_HOME``, a temporary folder here), one
named client with ``rpm``, ``tpm`` and ``max_usd_per_day`` (set so high that nothing is refused) and
``[prices]``; the load uses that client's key (``CLIENT_KEY``). ``KEY`` is the unnamed
``[server].api_keys`` key (unlimited, never in a limit's window).
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"
KEY = "bench-key"
CLIENT_KEY = "bench-client-key"
MESSAGES = [{"role": "user", "content": "Say hello."}]


# --- processes ---------------------------------------------------------------------------------------


def raise_nofile(wanted: int = 65536) -> int:
    """Raise this process's open-file limit (its children inherit it); root may raise the hard limit
    too. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass  # not root: as far as the hard limit goes
    soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {seconds} s")


def start(
    cmd: list[str], port: int, log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session of its own (stopped as a group), wait until ``port`` accepts."""
    process = subprocess.Popen(
        cmd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:  # a loaded machine starts a process under valgrind slowly: BENCH_START_SECONDS waits longer
        wait_port(port, float(os.environ.get("BENCH_START_SECONDS", "90")))
    except TimeoutError:
        process.kill()
        raise RuntimeError(
            f"{cmd[0]} did not start; see {log}:\n{log.read_text()[-2000:]}"
        ) from None
    if process.poll() is not None:
        raise RuntimeError(f"{cmd[0]} exited; see {log}:\n{log.read_text()[-2000:]}")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_gateway(
    python: str,
    config: Path,
    port: int,
    folder: Path,
    name: str,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m proxycast serve`` with its own data directory (``folder/name-home``)."""
    home = folder / f"{name}-home"
    home.mkdir(parents=True, exist_ok=True)
    command = [python, "-m", "proxycast", "serve", "--config", str(config)]
    command += ["--workers", str(workers)]
    log = folder / f"{name}.log"
    # cwd: the folder, so that ``-m proxycast`` imports the install's package, never a source tree
    return start(command, port, log, cwd=folder, env={"PROXYCAST_HOME": str(home), **(env or {})})


# --- /proc -----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_pids(sid: int) -> list[int]:
    """The processes of a session (``start`` gives each server a session of its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of stat: the session id
            pids.append(int(entry))
    return pids


def session_cpu(sid: int) -> float:
    total = 0.0
    for pid in session_pids(sid):
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def settle(sid: int, seconds: float = 10.0, busy: float = 0.05) -> float:
    """Wait until a server (its whole session) uses less than ``busy`` of a core (work abandoned by
    the last load, e.g. requests queued when wrk stopped), at most ``seconds``; returns the wait."""
    started = time.monotonic()
    before = session_cpu(sid)
    while time.monotonic() - started < seconds:
        time.sleep(0.2)
        now = session_cpu(sid)
        if now - before < busy * 0.2:
            break
        before = now
    return time.monotonic() - started


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in kB (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, CPython {platform.python_version()}"


def write_results(name: str, result: dict[str, Any], report: str) -> None:
    """``bench/results/NAME.json`` (the measurements) and ``NAME.md`` (``report``), and the report
    on standard output."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(report)
    print(report)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- load: wrk -------------------------------------------------------------------------------------------


def wrk_script(
    folder: Path, body: dict[str, Any], headers: dict[str, str], method: str = "POST"
) -> Path:
    text = json.dumps(body)
    script = folder / f"wrk-{abs(hash((text, tuple(sorted(headers.items())))))}.lua"
    header_lines = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    script.write_text(
        f'wrk.method = "{method}"\n'
        f"wrk.body = [[{text}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + header_lines
    )
    return script


def wrk_command(
    url: str, script: Path, connections: int, seconds: float, timeout: float = 30.0
) -> list[str]:
    threads = min(2, connections)
    return [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
        "--timeout", f"{timeout:g}s", "--latency", "-s", str(script), url,
    ]  # fmt: skip


def wrk(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    connections: int,
    seconds: float,
    folder: Path,
) -> dict[str, Any]:
    """One wrk run (POST of ``body``): req/s, p50, p99, requests, non-2xx, socket errors."""
    command = wrk_command(url, wrk_script(folder, body, headers), connections, seconds)
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return parse_wrk(out)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    assert match, value
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+(\S+)", out)
    p99 = re.search(r"\s99%\s+(\S+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": round(rps, 1),
        "requests": requests,
        "p50_ms": round(_ms(p50.group(1)), 3) if p50 else None,
        "p99_ms": round(_ms(p99.group(1)), 3) if p99 else None,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def raw_request(path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    """The bytes of a POST of ``body`` as JSON (for the raw-socket clients)."""
    payload = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", "host: bench", "content-type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"content-length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


# --- bodies --------------------------------------------------------------------------------------------


def openai_body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": stream, "max_tokens": 64}


def anthropic_body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": stream, "max_tokens": 64}


def gemini_body() -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]}


# --- the gateway's configuration ------------------------------------------------------------------------

CLIENT = f"""
[[clients]]
name = "bench"
api_key = "{CLIENT_KEY}"
rpm = 1000000000
tpm = 1000000000000000
max_usd_per_day = 1000000000.0
[prices]
"*" = {{ input = 1.0, output = 2.0 }}
"""


def providers(
    upstream: str, chunks: tuple[int, ...] = (), stream_upstream: str | None = None
) -> str:
    """One provider per fixed answer of bench/upstream.py (model = provider's answer); the N-chunk
    streams' providers go to ``stream_upstream`` when given (bench/relay.py --paced)."""
    table = [
        (upstream, "json", "openai", "/json/v1", "bench-json"),
        (upstream, "sse", "openai", "/sse/v1", "bench-sse"),
        (upstream, "anth-json", "anthropic", "/anth-json", "claude-bench-json"),
        (upstream, "anth-sse", "anthropic", "/anth-sse", "claude-bench-sse"),
        (upstream, "gem-json", "gemini", "/gem-json", "gemini-bench-json"),
        (upstream, "gem-sse", "gemini", "/gem-sse", "gemini-bench-sse"),
    ]
    for n in chunks:
        base = stream_upstream or upstream
        table.append((base, f"sse{n}", "openai", f"/sse{n}/v1", f"bench-sse{n}"))
        table.append((base, f"anth-sse{n}", "anthropic", f"/anth-sse{n}", f"claude-bench-sse{n}"))
    return "".join(
        f'[[providers]]\nname = "{name}"\ntype = "{kind}"\nbase_url = "{base}{path}"\n'
        f'api_keys = ["x"]\nmodels = ["{model}"]\n'
        for base, name, kind, path, model in table
    )


def proxycast_config(
    folder: Path,
    upstream: str,
    port: int,
    server: str = "",
    tables: str = "",
    *,
    client: bool = False,
    chunks: tuple[int, ...] = (),
    stream_upstream: str | None = None,
    name: str = "proxycast",
) -> Path:
    """``server``: more ``[server]`` lines; ``tables``: more tables, at the end; ``client``: the
    DEFAULT configuration's named client and prices (the ledger is on unless ``tables`` says
    otherwise)."""
    path = folder / f"{name}.toml"
    path.write_text(
        f'[server]\nport = {port}\napi_keys = ["{KEY}"]\n{server}\n'
        + providers(upstream, chunks, stream_upstream)
        + (CLIENT if client else "")
        + tables
        + "\n"
    )
    return path
