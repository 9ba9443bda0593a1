"""The chaos run: `proxycast serve` (2 workers, limits and the ledger on) under mixed load from every
dialect, streamed and not, while its upstreams fail at random points, clients leave at random
points and (``--reload-every``) the gateway reloads; then the invariants, checked from what each
client saw, the ledger and the gateway's log.

    .venv/bin/python bench/chaos.py [--minutes 10] [--concurrency 16] [--reload-every 30]

The upstreams are proxycast's fakes behind a seeded fault plan (``chaos_upstream.py``), in this
process, on loopback; the gateway runs in processes of its own. Each request carries its own
``x-request-id``, which the gateway keeps as the ledger row's ``request_id``. Writes
bench/results/chaos.json and chaos.md (``--out NAME`` for other names).

The invariants:
- every request got exactly one answer (a status, or, for a client that left first, nothing) and
  exactly one ledger row, whose status is the one the client saw (an error frame's status when
  a stream ended in one), marked disconnected only if the client left;
- no 500, to the client or in the ledger;
- no stream without its end: a final event, or an error frame, in the client's dialect;
- limits exact: the capped client's admitted requests never exceed its ``rpm`` in any window of
  60 seconds (the limiter's one-second buckets), nor its admitted tokens ``tpm`` plus the tokens of
  the requests in flight at the time;
- no growth of RSS or open files (``/proc/PID/fd``, the gateway's processes summed) over the last 5
  minutes (the last half of a shorter run);
- no secret (a client key, an upstream key) in any line of the gateway's output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import common
import httpx
import trio
import websockets.sync.client
from chaos_upstream import ChaosAnthropic, ChaosGemini, ChaosOpenAI

CHAOS_KEY = "sk-chaos-client-key-6f1d"
CAPPED_KEY = "sk-chaos-capped-key-93b2"
UPSTREAM_KEYS = ("sk-upstream-chaos-a1", "sk-upstream-chaos-b2")
SECRETS = (CHAOS_KEY, CAPPED_KEY, *UPSTREAM_KEYS)
KEEPALIVE = 5.0
"""The gateway's keepalive_timeout (its default)."""
CAPPED_RPM = 60
CAPPED_TPM = 1500
UPSTREAM_500 = b"chaos: upstream answered 500"
OPENAI_MODELS = ("gpt-chaos", "resp-chaos")
"""The models of OpenAI-compatible providers: OpenAI clients' requests are forwarded to them."""
GENERATE = ("gpt-chaos", "claude-chaos", "gemini-chaos", "resp-chaos")
DIALECTS = (
    # (name, weight)
    ("openai", 0.24),
    ("anthropic", 0.2),
    ("responses", 0.14),
    ("responses-ws", 0.06),
    ("gemini", 0.2),
    ("embeddings", 0.16),
)


SHAPES = {
    "openai": "choices",
    "anthropic": "content",
    "responses": "output",
    "gemini": "candidates",
    "embeddings": "data",
}
"""What a whole answer of each dialect holds."""
MISTYPED = {
    "openai": "messages",
    "anthropic": "max_tokens",
    "responses": "input",
    "gemini": "contents",
    "embeddings": "input",
}
"""The field a ``type`` bad request sends with the wrong JSON type."""


def config(folder: Path, urls: dict[str, str], alias: bool = False) -> Path:
    keys = json.dumps(list(UPSTREAM_KEYS))
    path = folder / "chaos.toml"
    path.write_text(
        f"""
[server]
port = 0
upstream_timeout = 3.0
connect_timeout = 2.0
keepalive_timeout = 5.0
access_log = "json"

[routing]
retries = 2
cooldown = 2.0
max_cooldown = 5.0

[[providers]]
name = "oai"
type = "openai"
base_url = "{urls["openai"]}"
api_keys = {keys}
models = ["gpt-chaos", "embed-chaos"]

[[providers]]
name = "oai-responses"
type = "openai"
responses = true
base_url = "{urls["responses"]}"
api_keys = {keys}
models = ["resp-chaos"]

[[providers]]
name = "claude"
type = "anthropic"
base_url = "{urls["anthropic"]}"
api_keys = {keys}
models = ["claude-chaos"]

[[providers]]
name = "gem"
type = "gemini"
base_url = "{urls["gemini"]}"
api_keys = {keys}
models = ["gemini-chaos"]

[fallbacks]
"claude-chaos" = ["gpt-chaos"]

[[clients]]
name = "chaos"
api_key = "{CHAOS_KEY}"
rpm = 1000000
tpm = 1000000000

[[clients]]
name = "capped"
api_key = "{CAPPED_KEY}"
rpm = {CAPPED_RPM}
tpm = {CAPPED_TPM}

[prices]
"*" = {{ input = 1.0, output = 2.0 }}
"""
        + ('\n[aliases]\n"reloaded" = "gpt-chaos"\n' if alias else "")
    )
    return path


# --- what a client saw --------------------------------------------------------------------------


@attrs.define
class Seen:
    """One request as its client saw it."""

    id: str
    dialect: str
    model: str
    stream: bool
    client: str
    started: float
    tokens_estimate: int
    status: int | None = None
    """The HTTP status (101 -> 200 for a WebSocket response); None: no answer."""
    left: str = ""
    """``before`` (the client left before any answer), ``during`` (mid-stream), or ``""``."""
    ended: bool = False
    """The stream's end was seen: a final event or an error frame."""
    error_frame: int | None = None
    """A stream that ended in an error: its status when the frame says one, else 0."""
    limited: bool = False
    idle_before: float = 0.0
    """Seconds since the client's previous HTTP request ended (its pooled connection's idle time)."""
    relayed_garbage: bool = False
    """An OpenAI stream forwarded to its client with an event that is not JSON (an upstream's)."""
    bad: str = ""
    """A request sent wrong on purpose: ``json`` (cut in half), ``type`` (a field of the wrong JSON
    type), ``model`` (a model no provider serves)."""
    """A 429 of the client's own limit (not an upstream's)."""
    problem: str = ""
    """What was wrong with the answer (a transport error, a body that does not parse...)."""
    body: bytes = b""


def body_for(dialect: str, model: str, stream: bool) -> tuple[str, dict[str, Any]]:
    messages = [{"role": "user", "content": "Say hello, chaos."}]
    if dialect == "openai":
        return "/v1/chat/completions", {
            "model": model,
            "messages": messages,
            "stream": stream,
            "max_tokens": 64,
        }
    if dialect == "anthropic":
        return "/v1/messages", {
            "model": model,
            "messages": messages,
            "stream": stream,
            "max_tokens": 64,
        }
    if dialect == "responses":
        return "/v1/responses", {"model": model, "input": "Say hello, chaos.", "stream": stream}
    if dialect == "gemini":
        verb = "streamGenerateContent" if stream else "generateContent"
        return f"/v1beta/models/{model}:{verb}", {
            "contents": [{"role": "user", "parts": [{"text": "Say hello, chaos."}]}]
        }
    return "/v1/embeddings", {"model": "embed-chaos", "input": ["chaos one", "chaos two"]}


def headers_for(dialect: str, key: str, rid: str) -> dict[str, str]:
    headers = {"x-request-id": rid}
    if dialect == "anthropic":
        return {**headers, "x-api-key": key, "anthropic-version": "2023-06-01"}
    if dialect == "gemini":
        return {**headers, "x-goog-api-key": key}
    return {**headers, "authorization": f"Bearer {key}"}


def sse_events(body: bytes) -> list[tuple[str, str]]:
    """(event, data) of each server-sent event."""
    events = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = "", []
        for line in block.decode("utf-8", "replace").split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _status_of(error: Any) -> int:
    if isinstance(error, dict):
        for key in ("status", "code"):
            if isinstance(error.get(key), int):
                return int(error[key])
    return 0


def judge_stream(seen: Seen, dialect: str, body: bytes, gemini_sse: bool) -> None:
    """Whether the stream ended (a final event or an error frame) and in an error."""
    if dialect == "gemini" and not gemini_sse:
        chunks = _json(body.decode("utf-8", "replace"))
        if (
            not isinstance(chunks, list)
            or not chunks
            or not all(isinstance(c, dict) for c in chunks)
        ):
            seen.problem = "gemini JSON-array stream is not a whole array"
            return
        last = chunks[-1]
        if isinstance(last, dict) and "error" in last:
            seen.ended, seen.error_frame = True, _status_of(last["error"])
        elif isinstance(last, dict) and any(
            c.get("finishReason") for c in last.get("candidates") or []
        ):
            seen.ended = True
        return
    for name, data in sse_events(body):
        parsed = _json(data)
        if seen.ended:
            seen.problem = f"an event after the stream's end: {data[:100]!r}"
            return
        if not isinstance(parsed, dict) and data != "[DONE]":
            if dialect == "openai" and seen.model in OPENAI_MODELS:
                # the OpenAI passthrough forwards what it cannot parse as it came (bytes in,
                # bytes out: docs/guarantees.md), an upstream's garbage included
                seen.relayed_garbage = True
                continue
            seen.problem = f"an event whose data is not a JSON object: {data[:100]!r}"
            return
        if dialect in ("openai", "embeddings"):
            if data == "[DONE]":
                seen.ended = True
            elif isinstance(parsed, dict) and "error" in parsed:
                seen.ended, seen.error_frame = True, _status_of(parsed["error"])
        elif dialect == "anthropic":
            if name == "message_stop":
                seen.ended = True
            elif name == "error":
                seen.ended = True
                seen.error_frame = 0
        elif dialect == "responses":
            kind = parsed.get("type") if isinstance(parsed, dict) else None
            if kind == "response.completed":
                seen.ended = True
            elif kind in ("response.failed", "response.incomplete", "error"):
                seen.ended = True
                seen.error_frame = _status_of(parsed) if kind == "error" else 0
        elif dialect == "gemini":
            if isinstance(parsed, dict) and "error" in parsed:
                seen.ended, seen.error_frame = True, _status_of(parsed["error"])
            elif isinstance(parsed, dict) and any(
                c.get("finishReason") for c in parsed.get("candidates") or []
            ):
                seen.ended = True
    if not body:
        seen.problem = "empty stream"


def judge_json(seen: Seen, body: bytes) -> None:
    parsed = _json(body.decode("utf-8", "replace"))
    if not isinstance(parsed, dict):
        seen.problem = f"status {seen.status} with a body that is not a JSON object"
        return
    if seen.status == 429 and "Rate limit reached: this client" in json.dumps(parsed):
        seen.limited = True
    if seen.status == 200 and SHAPES[seen.dialect] not in parsed:
        seen.problem = f"a 200 without {SHAPES[seen.dialect]!r}"
    if seen.status != 200 and "error" not in parsed:
        seen.problem = f"status {seen.status} without an error object"


async def http_request(
    client: httpx.AsyncClient, base: str, seen: Seen, rng: random.Random, leave: float
) -> None:
    path, body = body_for(seen.dialect, seen.model, seen.stream)
    gemini_sse = seen.dialect == "gemini" and seen.stream and rng.random() < 0.7
    if gemini_sse:
        path += "?alt=sse"
    key = CAPPED_KEY if seen.client == "capped" else CHAOS_KEY
    headers = headers_for(seen.dialect, key, seen.id)
    if seen.bad == "model":
        path = path.replace(seen.model, "no-such-model")
        body["model"] = "no-such-model"
    elif seen.bad == "type":
        field = MISTYPED[seen.dialect]
        body[field] = "five" if isinstance(body.get(field), int) else 5
    payload = json.dumps(body).encode()
    if seen.bad == "json":
        payload = payload[: len(payload) // 2]
    seen.tokens_estimate = math.ceil(len(payload) / 4)
    leave_at = rng.randrange(0, 1200) if leave else -1  # bytes read before leaving a stream
    got = bytearray()
    try:
        with trio.fail_after(90):
            with trio.move_on_after(rng.uniform(0.05, 2.0) if leave else math.inf) as early:
                request = client.build_request(
                    "POST",
                    base + path,
                    content=payload,
                    headers={**headers, "content-type": "application/json"},
                )
                response = await client.send(request, stream=True)
            if early.cancelled_caught:
                seen.left = "before"
                return
            try:
                seen.status = response.status_code
                async for piece in response.aiter_raw():
                    got += piece
                    if seen.stream and 0 <= leave_at < len(got) and response.status_code == 200:
                        seen.left = "during"
                        return
            finally:
                await response.aclose()
    except trio.TooSlowError:
        seen.problem = "no answer within 90 s"
        return
    except httpx.HTTPError as exc:
        seen.problem = f"{type(exc).__name__}: {exc}"
        return
    seen.body = bytes(got[:4000])
    if seen.stream and seen.status == 200:
        judge_stream(seen, seen.dialect, bytes(got), gemini_sse)
        if not seen.ended and not seen.problem:
            seen.problem = "stream without its end"
    else:
        judge_json(seen, bytes(got))


def ws_request(base: str, seen: Seen, leave: bool) -> None:
    """A Responses API WebSocket: one ``response.create`` per connection (the ledger row takes the
    upgrade's ``x-request-id``)."""
    url = base.replace("http://", "ws://") + "/v1/responses"
    key = CAPPED_KEY if seen.client == "capped" else CHAOS_KEY
    try:
        with websockets.sync.client.connect(
            url,
            additional_headers={"authorization": f"Bearer {key}", "x-request-id": seen.id},
            open_timeout=30,
            close_timeout=2,
        ) as socket:
            seen.status = 200
            socket.send(json.dumps({"type": "response.create", "model": seen.model, "input": "Hi"}))
            while True:
                text = socket.recv(timeout=90)
                event = json.loads(text)
                kind = event.get("type")
                seen.body = (str(text) if kind in ("error", "response.failed") else "").encode()
                if leave:
                    seen.left = "during"
                    return
                if kind == "response.completed":
                    seen.ended = True
                    return
                if kind in ("response.failed", "response.incomplete"):
                    seen.ended, seen.error_frame = True, 0
                    return
                if kind == "error":
                    seen.ended, seen.error_frame = True, _status_of(event)
                    if event.get("status") == 429 and "Rate limit reached: this client" in str(
                        event
                    ):
                        seen.limited = True
                    return
    except TimeoutError:
        seen.problem = "WebSocket: no event within 90 s"
    except (OSError, websockets.exceptions.WebSocketException) as exc:
        seen.problem = f"WebSocket {type(exc).__name__}: {exc}"


# --- the gateway's processes ---------------------------------------------------------------------


def sample(sid: int) -> dict[str, Any]:
    pids = sorted(common.session_pids(sid))
    rss = fds = 0
    each = {}
    for pid in pids:
        try:
            kb = common.status_kb(pid, "VmRSS")
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        rss += kb
        each[str(pid)] = round(kb / 1024, 1)
    return {"pids": pids, "rss_mb": round(rss / 1024, 1), "fds": fds, "rss_mb_each": each}


def growth(series: list[dict[str, Any]], minutes: float) -> dict[str, Any]:
    """RSS and fds over the last 5 minutes (the last half of a shorter run): the median of its
    first minute (fifth) against its last."""
    span = min(300.0, minutes * 30)
    end = series[-1]["t"]
    tail = [s for s in series if s["t"] >= end - span]
    slice_ = max(1, len(tail) // 5)
    first, last = tail[:slice_], tail[-slice_:]
    out: dict[str, Any] = {"window_s": round(span)}
    for what in ("rss_mb", "fds"):
        a = statistics.median(s[what] for s in first)
        b = statistics.median(s[what] for s in last)
        early = [s[what] for s in series if s["t"] < span] or [series[0][what]]
        out[what] = {
            "first": a,
            "last": b,
            "max": max(s[what] for s in tail),
            "first_window_median": round(statistics.median(early), 1),
            "first_window_max": max(early),
            "last_window_median": round(statistics.median(s[what] for s in tail), 1),
        }
    return out


# --- the run ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    common.raise_nofile()
    folder = Path(tempfile.mkdtemp(prefix="proxycast-chaos-"))
    home = folder / "home"
    home.mkdir()
    upstreams: dict[str, ChaosOpenAI | ChaosAnthropic | ChaosGemini] = {
        "openai": ChaosOpenAI(args.seed),
        "responses": ChaosOpenAI(args.seed + 1),
        "anthropic": ChaosAnthropic(args.seed + 2),
        "gemini": ChaosGemini(args.seed + 3),
    }
    seen_all: list[Seen] = []
    series: list[dict[str, Any]] = []
    reloads: list[dict[str, Any]] = []
    pids_seen: set[int] = set()
    async with trio.open_nursery() as nursery:
        urls = {name: await nursery.start(up.serve) for name, up in upstreams.items()}
        path = config(folder, urls)
        log_path = folder / "gateway.log"
        log = log_path.open("wb")
        gateway = await trio.lowlevel.open_process(
            [sys.executable, "-m", "proxycast", "serve", "--config", str(path), "--workers", "2"],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PROXYCAST_HOME": str(home)},
            start_new_session=True,
        )
        assert gateway.stdout is not None
        banner = b""
        while b"\n" not in banner:
            piece = await gateway.stdout.receive_some()
            if not piece:
                raise RuntimeError(f"the gateway did not start: {log_path.read_text()[-3000:]}")
            banner += piece
        base = banner.split(b"\n")[0].decode().split()[-1]
        nursery.start_soon(drain, gateway.stdout)
        started = trio.current_time()
        deadline = started + args.minutes * 60
        rng = random.Random(args.seed)
        counter = iter(range(10**9))

        async def one(client: httpx.AsyncClient, last_http: list[float]) -> None:
            roll, dialect = rng.random(), DIALECTS[-1][0]
            for name, weight in DIALECTS:
                if roll < weight:
                    dialect = name
                    break
                roll -= weight
            model = rng.choice(GENERATE) if dialect != "embeddings" else "embed-chaos"
            capped = dialect != "responses-ws" and rng.random() < 0.15
            leave = not capped and rng.random() < 0.12
            stream = dialect == "responses-ws" or (dialect != "embeddings" and rng.random() < 0.6)
            seen = Seen(
                id=f"chaos-{args.seed}-{next(counter)}",
                dialect=dialect,
                model=model,
                stream=stream,
                client="capped" if capped else "chaos",
                started=time.time(),
                tokens_estimate=0,
            )
            if dialect != "responses-ws" and not capped and not leave and rng.random() < 0.04:
                seen.bad = rng.choice(("json", "type", "model"))
            seen_all.append(seen)
            if dialect == "responses-ws":
                await trio.to_thread.run_sync(ws_request, base, seen, leave, abandon_on_cancel=True)
            else:
                seen.idle_before = round(time.monotonic() - last_http[0], 3)
                await http_request(client, base, seen, rng, leave)
                last_http[0] = time.monotonic()

        async def worker() -> None:
            async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
                last_http = [time.monotonic()]  # when its last HTTP request ended
                while trio.current_time() < deadline:
                    await one(client, last_http)

        async def sampler() -> None:
            while trio.current_time() < deadline + 5:
                point = sample(gateway.pid)
                pids_seen.update(point["pids"])
                series.append({"t": round(trio.current_time() - started, 1), **point})
                await trio.sleep(5)

        async def reloader() -> None:
            flip = False
            while trio.current_time() + args.reload_every < deadline:
                await trio.sleep(args.reload_every)
                flip = not flip
                config(folder, urls, alias=flip)
                gateway.send_signal(signal.SIGHUP)
                at = round(trio.current_time() - started, 1)
                await trio.sleep(3)  # then the alias is there (every other reload) or gone
                probe = Seen(
                    id=f"chaos-{args.seed}-reload-{len(reloads)}",
                    dialect="openai",
                    model="reloaded",
                    stream=False,
                    client="chaos",
                    started=time.time(),
                    tokens_estimate=0,
                )
                seen_all.append(probe)
                async with httpx.AsyncClient(timeout=60) as own:
                    await http_request(own, base, probe, rng, leave=False)
                took = probe.status != 404 if flip else probe.status == 404
                reloads.append({"at_s": at, "alias": flip, "probe": probe.status, "took": took})

        async with trio.open_nursery() as load:
            load.start_soon(sampler)
            if args.reload_every:
                load.start_soon(reloader)
            for _ in range(args.concurrency):
                load.start_soon(worker)
        for up in upstreams.values():
            up.chaos.enabled = False
        gateway.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            await gateway.wait()
        if gateway.returncode is None:
            gateway.kill()
            await gateway.wait()
        log.close()
        nursery.cancel_scope.cancel()
    rows = ledger_rows(home)
    log_lines = log_path.read_text(errors="replace").splitlines()
    fired: Counter[str] = Counter()
    for _name, up in upstreams.items():
        for kind, count in up.chaos.fired.items():
            fired[kind] += count
    with (folder / "seen.jsonl").open("w") as out:
        for seen in seen_all:
            record = attrs.asdict(seen)
            record["body"] = seen.body.decode("utf-8", "replace")
            out.write(json.dumps(record) + "\n")
    result = check(args, seen_all, rows, log_lines, series, fired, reloads)
    result["reload_log"] = [line[:300] for line in log_lines if "reload" in line.lower()][:12]
    result["gateway_pids"] = sorted(pids_seen)
    result["exit_code"] = gateway.returncode
    result["folder"] = str(folder)
    return result


async def drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


def ledger_rows(home: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(home / "usage.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        db.close()


# --- the invariants ------------------------------------------------------------------------------


def expected_status(seen: Seen) -> int | None:
    """The status the ledger should hold; None: any (a race the client cannot see)."""
    if seen.left == "before":
        return None  # the gateway may have answered as the client left
    if seen.left == "during":
        return None  # 200, or the error frame it wrote as the client left
    if seen.error_frame is not None:
        return seen.error_frame or -1  # -1: any error status
    return seen.status


def _tokens(row: dict[str, Any]) -> int:
    return int(
        row["input_tokens"]
        + row["output_tokens"]
        + row["cache_read_tokens"]
        + row["cache_write_tokens"]
    )


def tokens_at_admission(
    admitted: list[tuple[int, dict[str, Any]]], capped: dict[str, Seen], margin: float = 0.5
) -> int:
    """The most tokens the limiter can have counted when it admitted a request, its own estimate
    included, replayed from the ledger (its times are the requests' starts): a request admitted before holds its estimate until it
    settles (about when it ends), its usage after. Whatever the timing leaves unsure (an end within
    ``margin`` s of the admission, a request one second from the window's edge) counts at its
    least, so the figure is a lower bound: above ``tpm``, the limiter admitted too much."""
    worst = 0
    for second, row in admitted:
        start = row["time"]
        used = capped[row["request_id"]].tokens_estimate
        for other_second, other in admitted:
            if other is row or other["time"] >= start or not second - 60 < other_second <= second:
                continue
            if other_second == second - 59:
                continue  # it may have left the window by the time this one was admitted
            estimate, actual = capped[other["request_id"]].tokens_estimate, _tokens(other)
            end = other["time"] + other["duration"]
            if abs(end - start) < margin:
                used += min(estimate, actual)
            else:
                used += actual if end < start else estimate
        worst = max(worst, used)
    return worst


def check(
    args: argparse.Namespace,
    seen_all: list[Seen],
    rows: list[dict[str, Any]],
    log_lines: list[str],
    series: list[dict[str, Any]],
    fired: Counter[str],
    result_reloads: list[dict[str, Any]],
) -> dict[str, Any]:
    violations: dict[str, list[str]] = {}

    def bad(what: str, text: str) -> None:
        violations.setdefault(what, []).append(text)

    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_id.setdefault(row["request_id"], []).append(row)
    by_seen = {s.id: s for s in seen_all}
    logged = set()  # the request ids of the access log's lines
    for line in log_lines:
        entry = _json(line) if line.startswith("{") else None
        if isinstance(entry, dict) and "request_id" in entry:
            logged.add(entry["request_id"])
    unseen = 0
    keepalive_races: list[str] = []
    for rid in by_id:
        if rid not in by_seen:
            bad("ledger rows of no request", f"{rid}: {by_id[rid][0]['status']}")
    for seen in seen_all:
        got = by_id.get(seen.id, [])
        where = f"{seen.id} {seen.dialect} {seen.model} stream={seen.stream} client={seen.client}"
        if seen.bad and not (seen.status and 400 <= seen.status < 500):
            seen.problem = seen.problem or f"a bad request ({seen.bad}) answered {seen.status}"
        if (
            seen.problem.startswith(("ReadError", "RemoteProtocolError"))
            and seen.idle_before >= KEEPALIVE - 0.5
            and seen.id not in logged
        ):
            # httpx's pooled connection, idle as long as the gateway keeps one (httpx's default
            # keepalive_expiry is 5 s, as is the gateway's keepalive_timeout), closed by the gateway
            # as the request went out on it: HTTP/1.1's keep-alive race, which the SDKs retry
            keepalive_races.append(f"{seen.id} after {seen.idle_before} s idle: {seen.problem}")
            continue
        if seen.problem:
            bad("answers", f"{where}: {seen.problem} (status {seen.status}) {seen.body[-300:]!r}")
        if not got and seen.left == "before" and seen.id not in logged:
            unseen += 1  # gone before the gateway's app saw the request: nothing to account
            continue
        if len(got) != 1:
            bad(
                "one ledger row",
                f"{where}: {len(got)} rows "
                f"{[(r['status'], r['error_type']) for r in got]} (client saw {seen.status}, "
                f"left {seen.left or 'no'})",
            )
            continue
        row = got[0]
        if row["disconnected"] and not seen.left and not seen.problem:
            bad(
                "ledger status = client's",
                f"{where}: recorded as disconnected, the client got its whole answer",
            )
        want = expected_status(seen)
        if seen.problem or want is None:
            continue
        if (want == -1 and row["status"] < 400) or want not in (-1, row["status"]):
            bad(
                "ledger status = client's",
                f"{where}: ledger {row['status']} {row['error_type']}, client saw "
                f"{seen.status} (error frame {seen.error_frame})",
            )
    relayed_500 = 0
    for seen in seen_all:
        if seen.status == 500 or seen.error_frame == 500:
            if UPSTREAM_500 in seen.body:  # every attempt failed, the last with an upstream's 500:
                relayed_500 += 1  # its status and message, as docs/resilience.md says
            else:
                bad("no 500", f"{seen.id} {seen.dialect}: {seen.body[-300:]!r}")
    for row in rows:
        upstreams = row["attempts"].endswith(":500")  # the last attempt: an upstream's 500
        if row["status"] == 500 and not upstreams:
            bad("no 500", f"ledger {row['request_id']}: {row['error_type']}")

    # limits: the capped client's admitted requests, by the limiter's one-second buckets
    capped = {s.id: s for s in seen_all if s.client == "capped"}
    admitted = sorted(
        (
            (int(r["time"]), r)
            for r in rows
            if r["request_id"] in capped and not capped[r["request_id"]].limited
        ),
        key=lambda pair: pair[0],
    )
    # at each admission, the requests admitted before it in the limiter's window (by the seconds
    # the requests started in, which may be one before their admission's: the oldest second of the
    # window is left out, so the count is a lower bound), itself included
    worst = 0
    for second, row in admitted:
        count = sum(
            1 for s, r in admitted if second - 59 < s <= second and r["time"] <= row["time"]
        )
        worst = max(worst, count)
    if worst > CAPPED_RPM:
        bad("limits", f"{worst} requests admitted within 60 s (rpm {CAPPED_RPM})")
    worst_tokens = tokens_at_admission(admitted, capped)
    if worst_tokens > CAPPED_TPM:
        bad("limits", f"{worst_tokens} tokens in the window at an admission (tpm {CAPPED_TPM})")

    # resources
    grew = growth(series, args.minutes)
    if grew["rss_mb"]["last"] > grew["rss_mb"]["first"] * 1.1 + 10:
        bad("no growth", f"RSS {grew['rss_mb']}")
    if grew["fds"]["last"] > grew["fds"]["first"] + 20:
        bad("no growth", f"fds {grew['fds']}")

    for reload in result_reloads:
        if not reload["took"]:
            bad("reloads take", f"{reload}")
    leaked = [line for line in log_lines if any(secret in line for secret in SECRETS)]
    for line in leaked:
        bad("no secret in the log", line[:300])
    tracebacks = [line for line in log_lines if "Traceback" in line]

    statuses: Counter[str] = Counter()
    per_dialect: Counter[str] = Counter()
    for seen in seen_all:
        shape = f"bad: {seen.bad}" if seen.bad else "streamed" if seen.stream else "whole"
        per_dialect[f"{seen.dialect} {shape}"] += 1
        outcome = (
            f"left {seen.left}"
            if seen.left
            else (
                "no answer"
                if seen.status is None
                else f"{seen.status}"
                + (f" + error frame {seen.error_frame}" if seen.error_frame is not None else "")
            )
        )
        statuses[outcome] += 1
    return {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "reloads": result_reloads,
        "seed": args.seed,
        "requests": len(seen_all),
        "ledger_rows": len(rows),
        "per_dialect": dict(sorted(per_dialect.items())),
        "statuses": dict(sorted(statuses.items())),
        "ledger_statuses": dict(sorted(Counter(str(r["status"]) for r in rows).items())),
        "faults_injected": dict(sorted(fired.items())),
        "relayed_upstream_500": relayed_500,
        "left_before_the_app_saw_them": unseen,
        "keepalive_races": keepalive_races,
        "garbage_relayed": sum(1 for seen in seen_all if seen.relayed_garbage),
        "capped": {
            "requests": len(capped),
            "admitted": len(admitted),
            "limited": sum(1 for s in capped.values() if s.limited),
            "most_in_60s": worst,
            "rpm": CAPPED_RPM,
            "most_tokens_in_60s": worst_tokens,
            "tpm": CAPPED_TPM,
        },
        "resources": grew,
        "log_lines": len(log_lines),
        "tracebacks": len(tracebacks),
        "violations": violations,
        "series": series,
    }


def markdown(result: dict[str, Any]) -> str:
    v = result["violations"]
    names = (
        "answers",
        "one ledger row",
        "ledger rows of no request",
        "ledger status = client's",
        "no 500",
        "limits",
        "reloads take",
        "no growth",
        "no secret in the log",
    )
    res = result["resources"]
    cap = result["capped"]
    lines = [
        f"# Chaos run: {result['minutes']:g} minutes, {result['concurrency']} concurrent clients, "
        f"seed {result['seed']}",
        "",
        f"`proxycast serve --workers 2` (pids {result['gateway_pids']}), limits and the SQLite ledger "
        f"on; {len(result['reloads'])} reloads (SIGHUP, the config's alias added and removed in turn), "
        f"{sum(1 for r in result['reloads'] if r['took'])} seen to take; exit code {result['exit_code']}.",
        f"{result['requests']} requests, {result['ledger_rows']} ledger rows, "
        f"{result['log_lines']} log lines ({result['tracebacks']} tracebacks). "
        f"{result['left_before_the_app_saw_them']} clients left before the gateway's app saw "
        "their request (no access log line, no row: nothing to account); "
        f"{result['relayed_upstream_500']} answers were an upstream's own 500 relayed after every "
        'attempt failed (docs/resilience.md, "Everything failed"), not counted as the '
        "gateway's 500s. "
        f"{result['garbage_relayed']} OpenAI streams forwarded an upstream's event that is not JSON "
        "as it came (the passthrough forwards bytes it cannot parse), not counted as violations. "
        f"{len(result['keepalive_races'])} requests met HTTP/1.1's keep-alive race (sent on a pooled "
        "connection idle for the gateway's keepalive_timeout as the gateway closed it: a reset, no "
        "answer; SDKs retry these), not counted as violations"
        + (f": {result['keepalive_races']}." if result["keepalive_races"] else "."),
        "",
        "## Invariants",
        "",
        "| invariant | violations |",
        "|---|---:|",
        *(f"| {n} | {len(v.get(n, []))} |" for n in names),
        "",
        f"Limits: the capped client sent {cap['requests']}, {cap['admitted']} admitted, "
        f"{cap['limited']} refused by its limit; at most {cap['most_in_60s']} admitted in 60 s "
        f"(rpm {cap['rpm']}), {cap['most_tokens_in_60s']} tokens (tpm {cap['tpm']}).",
        f"Resources over the last {res['window_s']} s (gateway + workers): RSS "
        f"{res['rss_mb']['first']} -> {res['rss_mb']['last']} MB (max {res['rss_mb']['max']}), "
        f"open files {res['fds']['first']} -> {res['fds']['last']} (max {res['fds']['max']}); "
        f"whole run: RSS {result['series'][0]['rss_mb']} -> {result['series'][-1]['rss_mb']} MB, "
        f"fds {result['series'][0]['fds']} -> {result['series'][-1]['fds']}.",
        "",
        f"| gateway + workers | first {res['window_s']} s: median (max) | last {res['window_s']} s: median (max) |",
        "|---|---:|---:|",
        *(
            f"| {label} | {res[key]['first_window_median']} ({res[key]['first_window_max']}) | "
            f"{res[key]['last_window_median']} ({res[key]['max']}) |"
            for label, key in (("RSS (MB)", "rss_mb"), ("open files", "fds"))
        ),
        "",
        "## Requests",
        "",
        "| dialect | requests |",
        "|---|---:|",
        *(f"| {k} | {n} |" for k, n in result["per_dialect"].items()),
        "",
        "| what the client saw | requests |",
        "|---|---:|",
        *(f"| {k} | {n} |" for k, n in result["statuses"].items()),
        "",
        "| ledger status | rows |",
        "|---|---:|",
        *(f"| {k} | {n} |" for k, n in result["ledger_statuses"].items()),
        "",
        "| fault injected (upstream) | times |",
        "|---|---:|",
        *(f"| {k} | {n} |" for k, n in result["faults_injected"].items()),
        "",
    ]
    if v:
        lines += ["## Violations (first 20 of each)", ""]
        for name, items in v.items():
            lines += [f"### {name}", "", *(f"- `{item}`" for item in items[:20]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument(
        "--reload-every", type=float, default=30.0, help="seconds between SIGHUPs (0: none)"
    )
    parser.add_argument("--out", default="chaos")
    args = parser.parse_args()
    result = trio.run(run, args)
    common.write_results(args.out, result, markdown(result))
    sys.exit(1 if result["violations"] else 0)


if __name__ == "__main__":
    main()
