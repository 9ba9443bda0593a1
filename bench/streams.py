"""10,000 concurrent slow streams through ONE proxycast worker: do they all complete, and what does a
stream cost in memory (peak RSS, bytes per stream)?

Three kinds of processes, so that neither end of the load runs in the gateway's process or starves it:

- the upstream (this script, ``--role upstream``): a small trio server speaking just enough HTTP/1.1.
  ``/slow/v1/chat/completions`` answers each streamed request with its headers, the role chunk and
  the first content chunk at once, then holds every stream open until the orchestrator releases them
  all (``GET /release``; ``GET /status`` says how many are open), then sends the rest of the chunks
  ``--interval`` seconds apart (20 chunks in all, a usage chunk, ``[DONE]``). ``/fast/...`` answers
  the same stream at once (the warm-up). The hold makes the N streams concurrent however long the
  gateway takes to admit them all. (``/paced/...`` serves bench/relay.py ``--paced``);
- the clients (``--role clients``, ``--client-processes`` of them): raw trio sockets, one connection
  per stream, at most ``--ramp`` streams waiting for their first chunk at once (the gateway's listen
  backlog is 1,024), each read to ``data: [DONE]``;
- the gateway: ``python -m proxycast serve`` with the DEFAULT configuration (SQLite ledger, a named
  client with limits, [prices]; bench/common.py), one worker.

The orchestrator raises RLIMIT_NOFILE (root may raise the hard limit) for every process, warms the
gateway up with 20 fast streams, reads its idle RSS, starts the clients, waits until the upstream holds
all N streams, samples the RSS for a few seconds, releases the streams and waits for the clients. Peak
RSS is the gateway's VmHWM; bytes per stream = (peak - idle) / N.

``--objects`` takes a census of the gateway's live objects by type (``gc.get_objects``, in the
gateway's process, on a signal) at idle and with every stream held: objects per stream by type (cheap:
works at 10,000). ``--tracemalloc`` also runs the gateway under tracemalloc (10x slower: use ~1,000
streams) and reports where the bytes allocated since idle went: by package, by allocating line, and
charged to the innermost proxycast line on the stack.

    .venv/bin/python bench/streams.py [--streams 10000] [--interval 0.5] [--client-processes 2]
    .venv/bin/python bench/streams.py --objects --out streams-objects
    .venv/bin/python bench/streams.py --streams 1000 --interval 0.1 --tracemalloc --out streams-trace

About a minute for 10,000 streams on 2 cores. Writes bench/results/streams.{json,md}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    CLIENT,
    CLIENT_KEY,
    KEY,
    MESSAGES,
    cpu_seconds,
    free_port,
    machine,
    raise_nofile,
    start,
    status_kb,
    stop,
    write_results,
)
from upstream import anthropic_events, openai_chunks

NOFILE = 65536


# --- the upstream ---------------------------------------------------------------------------------------


def _chunks(count: int) -> list[bytes]:
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 0, "model": "slow"}
    out = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    for i in range(count - 2):
        out.append({**base, "choices": [{"index": 0, "delta": {"content": f"word{i} "}}]})
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": 5, "completion_tokens": count - 2, "total_tokens": count + 3}
    out.append({**base, "choices": [], "usage": usage})
    events = [f"data: {json.dumps(c)}\n\n".encode() for c in out] + [b"data: [DONE]\n\n"]
    return events


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def upstream(port: int, chunks: int, interval: float) -> None:
    import trio

    events = _chunks(chunks)
    state = {"arrived": 0, "open": 0, "max_open": 0, "done": 0, "released": False}
    release = trio.Event()
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    fast = b"".join(events)
    fast_answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
        % (len(fast), fast)
    )

    async def slow(stream: Any) -> None:
        state["arrived"] += 1
        state["open"] += 1
        state["max_open"] = max(state["max_open"], state["open"])
        try:
            await stream.send_all(head + _chunked(events[0]) + _chunked(events[1]))
            await release.wait()
            for event in events[2:-2]:
                await trio.sleep(interval)
                await stream.send_all(_chunked(event))
            await stream.send_all(_chunked(events[-2]) + _chunked(events[-1]) + b"0\r\n\r\n")
            state["done"] += 1
        finally:
            state["open"] -= 1

    paced_events: dict[str, list[bytes]] = {}

    async def paced(stream: Any, target: str) -> None:
        """``/paced/{ms}/sse{N}/...`` (OpenAI) or ``/paced/{ms}/anth-sse{N}/...`` (Anthropic): bench/
        upstream.py's stream of N chunks, one chunk per write, ``ms`` milliseconds apart (bench/relay.py
        --paced: every chunk reaches the gateway in a read of its own, as an LLM's tokens do)."""
        _, _, gap, name = target.split("/")[:4]
        if name not in paced_events:
            n = int(name.rsplit("sse", 1)[1])
            text = anthropic_events(n) if name.startswith("anth-") else openai_chunks(n)
            paced_events[name] = [e.encode() + b"\n\n" for e in text.split("\n\n") if e]
        await stream.send_all(head)
        for event in paced_events[name]:
            await stream.send_all(_chunked(event))
            await trio.sleep(float(gap) / 1000)
        await stream.send_all(b"0\r\n\r\n")

    async def handle(stream: Any) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                header, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = header.split(b"\r\n")
                target = lines[0].split(b" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                if target.startswith(b"/status") or target.startswith(b"/release"):
                    if target.startswith(b"/release"):
                        state["released"] = True
                        release.set()
                    body = json.dumps(state).encode()
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(body), body)
                    )
                elif target.startswith(b"/slow"):
                    await slow(stream)
                elif target.startswith(b"/paced/"):
                    await paced(stream, target.decode())
                else:
                    await stream.send_all(fast_answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    await trio.serve_tcp(handle, port, host="127.0.0.1", backlog=4096)


# --- the clients ----------------------------------------------------------------------------------------


async def clients(port: int, count: int, ramp: int, model: str, timeout: float) -> dict[str, Any]:
    import trio

    payload = json.dumps({"model": model, "messages": MESSAGES, "stream": True}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {CLIENT_KEY}\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    limiter = trio.Semaphore(ramp)
    counts = {"first": 0, "completed": 0}
    failures: Counter[str] = Counter()
    first_times: list[float] = []
    started = trio.current_time()

    async def one() -> None:
        held = True
        await limiter.acquire()
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)
                seen = b""
                got_first = False
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        failures[
                            "closed before [DONE]" if got_first else "closed before a chunk"
                        ] += 1
                        return
                    window = seen + data
                    if not got_first and b"word0" in window:
                        if not window.startswith(b"HTTP/1.1 200"):
                            failures[window.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
                            return
                        got_first = True
                        counts["first"] += 1
                        first_times.append(trio.current_time() - started)
                        limiter.release()
                        held = False
                    if b'data: {"error"' in window:
                        failures["error frame"] += 1
                        return
                    if b"data: [DONE]" in window:
                        counts["completed"] += 1
                        return
                    seen = window[-64:] if got_first else window[-4096:]
        except OSError as exc:
            failures[type(exc).__name__] += 1
        finally:
            if held:
                limiter.release()

    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    first_times.sort()
    return {
        **counts,
        "failures": dict(failures),
        "timed_out": count - counts["completed"] - sum(failures.values()),
        "all_first_s": round(first_times[-1], 2) if first_times else None,
        "seconds": round(trio.current_time() - started, 2),
    }


# --- the gateway under tracemalloc ------------------------------------------------------------------------


def traced_gateway(config: str, out: str) -> int:
    """``proxycast serve`` in this process. The first SIGUSR1 takes stock (idle), the second writes
    what grew since (``out``), then ``out.done``: the live objects by type (``gc``, always), and, when
    run under ``-X tracemalloc``, the bytes allocated by line."""
    import gc
    import tracemalloc

    from proxycast.cli import main

    snapshots: list[Any] = []
    censuses: list[tuple[Counter[str], Counter[str]]] = []

    def census() -> tuple[Counter[str], Counter[str]]:
        counts: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for obj in gc.get_objects():  # the objects the collector tracks: containers, instances
            kind = type(obj)
            name = f"{kind.__module__}.{kind.__qualname__}"
            counts[name] += 1
            sizes[name] += sys.getsizeof(obj)
        return counts, sizes

    def dump(signum: int, frame: Any) -> None:
        if tracemalloc.is_tracing():
            snapshots.append(
                tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)]
                )
            )
            if len(snapshots) == 2:
                tracemalloc.stop()  # what comes after is not measured: the analysis runs untraced
        censuses.append(census())
        if len(censuses) == 1:
            Path(out + ".idle").write_text("idle\n")
            return
        (idle_counts, idle_sizes), (counts, sizes) = censuses
        grown = {k: counts[k] - idle_counts.get(k, 0) for k in counts}
        top = sorted(grown.items(), key=lambda kv: -kv[1])[:40]
        result: dict[str, Any] = {
            "types": [
                {"type": k, "objects": v, "bytes": sizes[k] - idle_sizes.get(k, 0)} for k, v in top
            ]
        }
        if len(snapshots) == 2:
            result.update(attribute(snapshots[0], snapshots[1]))
        Path(out).write_text(json.dumps(result, indent=1))
        Path(out + ".done").write_text("done\n")

    signal.signal(signal.SIGUSR1, dump)
    return main(["serve", "--config", config])


def _short(frame: Any) -> str:
    name = frame.filename
    if "/src/proxycast/" in name or "site-packages/proxycast/" in name:
        name = "proxycast/" + name.split("/proxycast/", 1)[1]
    elif "site-packages/" in name:
        name = name.split("site-packages/", 1)[1]
    else:
        name = "/".join(name.rsplit("/", 2)[-2:])
    return f"{name}:{frame.lineno}"


def _where(traceback: Any) -> tuple[str, str, str]:
    """Where an allocation is charged: the line that allocated; the innermost proxycast frame
    (else the innermost third-party frame); the package of the innermost frame outside the standard
    library ("proxycast", "trio", "hypercorn", ...)."""
    frames = list(reversed(traceback))  # a tracemalloc traceback is ordered oldest first
    package = None
    caller = None
    for frame in frames:
        name = frame.filename
        own = "/src/proxycast/" in name or "site-packages/proxycast/" in name
        if own or "site-packages/" in name:
            if package is None:
                part = "proxycast" if own else name.split("site-packages/", 1)[1].split("/")[0]
                package = part
            if own:
                caller = _short(frame)
                break
            caller = caller or _short(frame)
    return _short(frames[0]), caller or _short(frames[0]), package or "stdlib"


def attribute(idle: Any, peak: Any) -> dict[str, Any]:
    """What grew between two snapshots, by allocating line, by calling proxycast line, by package."""

    def sums(snapshot: Any) -> list[Counter[str]]:
        tables: list[Counter[str]] = [Counter() for _ in range(4)]
        for stat in snapshot.statistics("traceback"):  # grouped in C: one entry per call stack
            site, caller, package = _where(stat.traceback)
            tables[0][site] += stat.size
            tables[1][caller] += stat.size
            tables[2][package] += stat.size
            tables[3][site] += stat.count
        return tables

    before, after = sums(idle), sums(peak)

    def grown(index: int, top: int) -> list[tuple[str, int]]:
        table = {k: after[index][k] - before[index].get(k, 0) for k in after[index]}
        return sorted(table.items(), key=lambda kv: -kv[1])[:top]

    return {
        "traced_idle_bytes": sum(before[0].values()),
        "traced_peak_bytes": sum(after[0].values()),
        "by_package": dict(grown(2, 30)),
        "by_site": [
            {"where": k, "bytes": v, "blocks": after[3][k] - before[3].get(k, 0)}
            for k, v in grown(0, 40)
        ],
        "by_proxycast_caller": [{"where": k, "bytes": v} for k, v in grown(1, 40)],
    }


# --- the orchestration ------------------------------------------------------------------------------------


def _get(port: int, path: str) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())  # type: ignore[no-any-return]
    finally:
        connection.close()


def _warm_up(port: int, count: int) -> None:
    body = json.dumps({"model": "fast", "messages": MESSAGES, "stream": True})
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request(
            "POST",
            "/v1/chat/completions",
            body,
            {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"},
        )
        response = connection.getresponse()
        text = response.read()
        if response.status != 200 or b"[DONE]" not in text:
            raise RuntimeError(f"warm-up stream failed: {response.status} {text[:300]!r}")
        connection.close()


def measure(
    count: int = 10_000,
    chunks: int = 20,
    interval: float = 0.5,
    client_processes: int = 2,
    ramp: int = 256,
    python: str = sys.executable,
    trace: bool = False,
    timeout: float = 600.0,
    objects: bool = False,
    floor: bool = False,
    config_extra: str = "",
) -> dict[str, Any]:
    nofile = raise_nofile(NOFILE)
    requested = count
    fits = (nofile - 100) // 2  # the gateway holds two sockets per stream (client, upstream)
    if count > fits:
        print(
            f"RLIMIT_NOFILE is {nofile} (hard limit; raising it needs CAP_SYS_RESOURCE): one "
            f"process cannot hold {count} streams (2 sockets each), measuring {fits}",
            file=sys.stderr,
            flush=True,
        )
        count = fits
    folder = Path(tempfile.mkdtemp(prefix="proxycast-streams-"))
    up_port, port = free_port(), free_port()
    script = str(Path(__file__).resolve())
    processes: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {
        "requested": requested,
        "streams": count,
        "chunks": chunks,
        "interval_s": interval,
        "client_processes": client_processes,
        "nofile": nofile,
        "load_before": os.getloadavg(),
        "gateway": "relay floor" if floor else "proxycast",
        "config_extra": config_extra,
    }
    try:
        command = [sys.executable, script, "--role", "upstream", "--port", str(up_port)]
        command += ["--chunks", str(chunks), "--interval", str(interval)]
        processes.append(start(command, up_port, folder / "upstream.log"))
        config = folder / "proxycast.toml"
        config.write_text(
            f'[server]\nport = {port}\napi_keys = ["{KEY}"]\n'
            + "".join(
                f'[[providers]]\nname = "{name}"\ntype = "openai"\n'
                f'base_url = "http://127.0.0.1:{up_port}/{name}/v1"\napi_keys = ["x"]\n'
                f'models = ["{name}"]\n'
                for name in ("slow", "fast")
            )
            + CLIENT
            + config_extra
        )
        home = folder / "home"
        home.mkdir()
        env = {"PROXYCAST_HOME": str(home)}
        out = str(folder / "tracemalloc.json")
        if floor:  # the stack alone, relaying (bench/relay_floor.py)
            command = [python, str(Path(script).parent / "relay_floor.py"), f"127.0.0.1:{port}"]
            env["UPSTREAM"] = f"http://127.0.0.1:{up_port}"
        elif trace or objects:
            command = [python, *(["-X", "tracemalloc=10"] if trace else []), script]
            command += ["--role", "traced-gateway", "--config", str(config), "--trace-out", out]
        else:
            command = [python, "-m", "proxycast", "serve", "--config", str(config)]
        gateway = start(command, port, folder / "gateway.log", cwd=folder, env=env)
        processes.append(gateway)
        _warm_up(port, 20)
        time.sleep(1.0)
        idle_kb = status_kb(gateway.pid, "VmRSS")
        if trace or objects:
            gateway.send_signal(signal.SIGUSR1)
            _wait_file(Path(out + ".idle"), 120)
        cpu_before = cpu_seconds(gateway.pid)
        started = time.monotonic()
        share = [
            count // client_processes + (i < count % client_processes)
            for i in range(client_processes)
        ]
        workers = []
        for n in share:
            command = [sys.executable, script, "--role", "clients", "--port", str(port)]
            command += ["--streams", str(n), "--ramp", str(max(1, ramp // client_processes))]
            command += ["--timeout", str(timeout)]
            workers.append(
                subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
                )
            )
        peak_sampled = idle_kb
        status: dict[str, Any] = {}
        progress = (0, time.monotonic())
        while time.monotonic() - started < timeout:
            peak_sampled = max(peak_sampled, status_kb(gateway.pid, "VmRSS"))
            status = _get(up_port, "/status")
            print(f"{time.monotonic() - started:6.1f} s: {status}", file=sys.stderr, flush=True)
            if status["arrived"] >= count or any(w.poll() is not None for w in workers):
                break
            if status["arrived"] != progress[0]:
                progress = (status["arrived"], time.monotonic())
            elif time.monotonic() - progress[1] > 30:
                result["stalled_at"] = status["arrived"]  # released anyway; reported
                break
            time.sleep(1.0)
        held_at = time.monotonic() - started
        for _ in range(6):  # every stream held: the gateway's steady state with N streams open
            time.sleep(0.5)
            peak_sampled = max(peak_sampled, status_kb(gateway.pid, "VmRSS"))
        held_kb = status_kb(gateway.pid, "VmRSS")
        status = _get(up_port, "/status")
        if trace or objects:
            gateway.send_signal(signal.SIGUSR1)
            _wait_file(Path(out + ".done"), 600)
            result["tracemalloc" if trace else "objects"] = json.loads(Path(out).read_text())
        _get(up_port, "/release")
        while any(w.poll() is None for w in workers):
            peak_sampled = max(peak_sampled, status_kb(gateway.pid, "VmRSS"))
            time.sleep(0.5)
        seconds = time.monotonic() - started
        peak_kb = status_kb(gateway.pid, "VmHWM")
        cpu = cpu_seconds(gateway.pid) - cpu_before
        outcomes = []
        for worker in workers:
            stdout, stderr = worker.communicate()
            if worker.returncode != 0:
                raise RuntimeError(f"a client process failed:\n{stderr.decode()[-3000:]}")
            outcomes.append(json.loads(stdout.decode().strip().splitlines()[-1]))
        failures: Counter[str] = Counter()
        for outcome in outcomes:
            failures.update(outcome["failures"])
        completed = sum(o["completed"] for o in outcomes)
        result.update(
            completed=completed,
            failures=dict(failures),
            timed_out=sum(o["timed_out"] for o in outcomes),
            arrived_at_upstream=status["arrived"],
            max_concurrent=status["max_open"],
            idle_rss_mb=round(idle_kb / 1024, 1),
            held_rss_mb=round(held_kb / 1024, 1),
            peak_rss_mb=round(peak_kb / 1024, 1),
            peak_rss_sampled_mb=round(peak_sampled / 1024, 1),
            bytes_per_stream=round((peak_kb - idle_kb) * 1024 / count),
            held_bytes_per_stream=round((held_kb - idle_kb) * 1024 / count),
            all_held_after_s=round(held_at, 1),
            total_s=round(seconds, 1),
            gateway_cpu_s=round(cpu, 1),
            gateway_cpu_ms_per_stream=round(1000 * cpu / count, 2),
            load_after=os.getloadavg(),
        )
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _wait_file(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} after {seconds} s")
        time.sleep(0.2)


def markdown(result: dict[str, Any]) -> str:
    r = result
    floor = r.get("gateway") == "relay floor"
    what = (
        "the relay floor (bench/relay_floor.py: Quart-Trio on Hypercorn relaying through httpx's "
        "transport, nothing of proxycast's)"
        if floor
        else "Default configuration (SQLite ledger, a named client with limits, [prices])"
    )
    lines = [
        f"# {r['streams']:,} concurrent slow streams, one "
        + ("worker of the relay floor" if floor else "proxycast worker"),
        "",
        f"{r['machine']}. {what[0].upper() + what[1:]}. Each stream: {r['chunks']} chunks, the first two at once, then held until all "
        f"{r['streams']:,} were open at the upstream, then one every {r['interval_s']} s. "
        f"{r['client_processes']} client processes (raw trio sockets), RLIMIT_NOFILE {r['nofile']}. "
        f"Load average before {r['load_before']}, after {r['load_after']}.",
    ]
    if r["requested"] != r["streams"]:
        lines += [
            "",
            f"**{r['requested']:,} streams were asked for; {r['streams']:,} measured**: the gateway "
            f"holds two sockets per stream and the open-file limit is {r['nofile']:,} (its hard "
            "limit: raising it needs CAP_SYS_RESOURCE, which this machine's root lacks).",
        ]
    if r.get("stalled_at") is not None:
        lines += [
            "",
            f"**Stalled**: the upstream saw no new stream for 30 s at {r['stalled_at']:,}.",
        ]
    lines += [
        "",
        "| | |",
        "|---|---:|",
        f"| completed | {r['completed']:,} of {r['streams']:,} |",
        f"| failures | {r['failures'] or 'none'}; timed out {r['timed_out']} |",
        f"| open at once at the upstream (max) | {r['max_concurrent']:,} |",
        f"| all open after | {r['all_held_after_s']} s |",
        f"| whole run | {r['total_s']} s |",
        f"| idle RSS (after 20 warm-up streams) | {r['idle_rss_mb']} MB |",
        f"| RSS with every stream open | {r['held_rss_mb']} MB |",
        f"| peak RSS (VmHWM) | {r['peak_rss_mb']} MB |",
        f"| bytes per stream, (peak - idle) / N | {r['bytes_per_stream']:,} |",
        f"| bytes per stream, all held (RSS - idle) / N | {r['held_bytes_per_stream']:,} |",
        f"| gateway CPU | {r['gateway_cpu_s']} s ({r['gateway_cpu_ms_per_stream']} ms per stream) |",
        "",
        f"Target: all complete, peak RSS < 600 MB: "
        f"{'met' if r['completed'] == r['streams'] and r['peak_rss_mb'] < 600 else 'NOT met'}.",
    ]
    census = (r.get("tracemalloc") or r.get("objects") or {}).get("types")
    if census:
        per = r["streams"]
        lines += [
            "",
            "## Live objects per held stream, by type (gc, all streams open, minus idle)",
            "",
            "Objects the garbage collector tracks (instances, containers; not bytes or str); bytes "
            "are sys.getsizeof, shallow (an instance's __dict__ counts as a dict of its own).",
            "",
            "| type | objects per stream | bytes per stream |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {t['type']} | {t['objects'] / per:.2f} | {t['bytes'] / per:,.0f} |"
            for t in census[:30]
        ]
    trace = r.get("tracemalloc")
    if trace:
        per = r["streams"]
        lines += [
            "",
            "## Where a held stream's memory goes (tracemalloc, all streams open, minus idle)",
            "",
            "Under tracemalloc the RSS figures above are not the gateway's own (the tracing and the "
            "snapshots take memory); the traced Python allocations are.",
            "",
            f"Traced Python allocations: idle {trace['traced_idle_bytes'] / 1e6:.1f} MB, with every "
            f"stream open {trace['traced_peak_bytes'] / 1e6:.1f} MB: "
            f"{(trace['traced_peak_bytes'] - trace['traced_idle_bytes']) / per:,.0f} bytes per stream "
            "(the rest of the RSS is the allocator's and the kernel's: socket buffers are not in RSS).",
            "",
            "By package (innermost frame outside the standard library):",
            "",
            "| package | bytes per stream |",
            "|---|---:|",
        ]
        lines += [
            f"| {k} | {v / per:,.0f} |"
            for k, v in trace["by_package"].items()
            if abs(v) / per >= 10
        ]
        lines += [
            "",
            "Top allocating lines:",
            "",
            "| line | bytes per stream | blocks per stream |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {t['where']} | {t['bytes'] / per:,.0f} | {t['blocks'] / per:.1f} |"
            for t in trace["by_site"][:25]
        ]
        lines += [
            "",
            "The same, charged to the innermost proxycast line on the stack (else the innermost "
            "third-party line):",
            "",
            "| line | bytes per stream |",
            "|---|---:|",
        ]
        lines += [
            f"| {t['where']} | {t['bytes'] / per:,.0f} |" for t in trace["by_proxycast_caller"][:25]
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between chunks")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--ramp", type=int, default=256, help="streams awaiting a first chunk at once"
    )
    parser.add_argument("--python", default=sys.executable, help="the gateway's interpreter")
    parser.add_argument("--tracemalloc", action="store_true", help="where the bytes go (slow)")
    parser.add_argument(
        "--objects", action="store_true", help="the live objects per stream, by type (gc; cheap)"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="measure the relay floor (bench/relay_floor.py: the stack alone) instead of proxycast",
    )
    parser.add_argument(
        "--config-extra", default="", help="TOML appended to the gateway's configuration"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", default="streams", help="results name (bench/results/NAME.*)")
    parser.add_argument("--role", default="orchestrator", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--trace-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "upstream":
        import trio

        raise_nofile(NOFILE)
        trio.run(upstream, args.port, args.chunks, args.interval)
    elif args.role == "clients":
        import trio

        raise_nofile(NOFILE)
        outcome = trio.run(clients, args.port, args.streams, args.ramp, "slow", args.timeout)
        print(json.dumps(outcome), flush=True)
    elif args.role == "traced-gateway":
        sys.exit(traced_gateway(args.config, args.trace_out))
    else:
        result = {"machine": machine()}
        result.update(
            measure(
                args.streams,
                args.chunks,
                args.interval,
                args.client_processes,
                args.ramp,
                args.python,
                args.tracemalloc,
                args.timeout,
                args.objects,
                args.floor,
                args.config_extra.replace("\\n", "\n"),
            )
        )
        write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
