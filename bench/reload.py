"""Reloads under a steady load: ``proxycast reload`` run again and again against ``proxycast serve
--workers 2`` while clients keep sending streamed and non-streamed requests; not one may fail or be
cut short.

The fake upstream (``proxycast.testing.FakeOpenAI``, each stream a chunk every 20 ms so that many are
in flight at every reload) and the clients run here; the gateway runs in its own process. Each reload
alternates between two files that differ in a model (``swap-a``/``swap-b``), a client (``carol``) and a
provider's second key: after each, a request for the model that just appeared must succeed and one
for the model that just left must be a 404, which shows the new file in effect. Two invalid files
are sent too (``--invalid``): refused, with the load going on.

    python bench/reload.py [--reloads 20] [--streams 4] [--plain 4] [--gap 0.5] [--workers 2]

Writes ``bench/results/reload.json`` and ``reload.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from proxycast.testing import FakeOpenAI, Script

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write_results

KEY = "bench-reload-key-0123"
WORDS = 20
TEXT = " ".join(f"w{i}" for i in range(WORDS))


def config_text(upstream: str, version: int, workers: int, invalid: bool = False) -> str:
    swap = "swap-a" if version % 2 == 0 else "swap-b"
    keys = ["sk-one-0123456789"] + (["sk-two-0123456789"] if version % 2 else [])
    carol = (
        '\n[[clients]]\nname = "carol"\napi_key = "carol-key-0123456789"\n' if version % 2 else ""
    )
    text = f"""
[server]
port = 0
workers = {workers}

[[providers]]
name = "fake"
type = "openai"
base_url = "{upstream}"
api_keys = {keys!r}
models = ["m", "{swap}"]

[[clients]]
name = "alice"
api_key = "{KEY}"
rpm = 1000000
{carol}"""
    return text.replace("models =", "modles =") if invalid else text


class Load:
    """Clients that send requests in a loop until stopped, and what became of each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done = {"streamed": 0, "plain": 0}
        self.failures: list[str] = []
        self.running = True

    async def streamed(self, client: httpx.AsyncClient) -> None:
        while self.running:
            body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            text, finished = [], False
            try:
                async with client.stream(
                    "POST", self.url + "/v1/chat/completions", json=body, headers=_auth()
                ) as response:
                    if response.status_code != 200:
                        self.failures.append(f"stream: status {response.status_code}")
                        continue
                    async for line in response.aiter_lines():
                        if line == "data: [DONE]":
                            finished = True
                        elif line.startswith("data: {"):
                            chunk = httpx.Response(200, content=line[6:]).json()
                            for choice in chunk.get("choices", ()):
                                text.append(choice["delta"].get("content") or "")
            except httpx.HTTPError as exc:
                self.failures.append(f"stream: {type(exc).__name__}: {exc}")
                continue
            if not finished or "".join(text) != TEXT:
                self.failures.append(f"stream cut: {''.join(text)!r}, [DONE] {finished}")
                continue
            self.done["streamed"] += 1

    async def plain(self, client: httpx.AsyncClient) -> None:
        while self.running:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            try:
                response = await client.post(
                    self.url + "/v1/chat/completions", json=body, headers=_auth()
                )
            except httpx.HTTPError as exc:
                self.failures.append(f"plain: {type(exc).__name__}: {exc}")
                continue
            if (
                response.status_code != 200
                or response.json()["choices"][0]["message"]["content"] != TEXT
            ):
                self.failures.append(f"plain: status {response.status_code}")
                continue
            self.done["plain"] += 1


def _auth() -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}"}


async def reload_once(env: dict[str, str]) -> tuple[int, float, float, str]:
    """``proxycast reload``: its exit status, its wall time, the server's own time for the reload
    (from the signal's handling to every worker swapped, ``serve.json``), what it said."""
    started = time.monotonic()
    done = await trio.run_process(
        [sys.executable, "-m", "proxycast", "reload"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    said = (done.stdout + done.stderr).decode().strip()
    status = json.loads((Path(env["PROXYCAST_HOME"]) / "serve.json").read_text())
    return done.returncode, time.monotonic() - started, status["last"]["seconds"], said


async def status_of(url: str, model: str) -> int:
    async with httpx.AsyncClient() as client:  # a new connection: either worker
        response = await client.post(
            url + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers=_auth(),
        )
    return response.status_code


async def main(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeOpenAI(default=Script(text=TEXT, interval=0.02))
    async with trio.open_nursery() as nursery:
        upstream = await nursery.start(fake.serve)
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            env = {**os.environ, "PROXYCAST_HOME": str(home)}
            config = Path(tmp) / "proxycast.toml"
            config.write_text(config_text(upstream, 0, args.workers))
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "proxycast", "serve", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            try:
                assert process.stdout is not None
                line = b""
                with trio.fail_after(60):
                    while not line.endswith(b"\n"):
                        line += await process.stdout.receive_some(1)
                url = line.decode().split()[-1]
                result = await _run(args, url, upstream, config, env)
            finally:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(20):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
        nursery.cancel_scope.cancel()
    return result


async def _run(
    args: argparse.Namespace, url: str, upstream: str, config: Path, env: dict[str, str]
) -> dict[str, Any]:
    load = Load(url)
    reloads: list[dict[str, Any]] = []
    checks: list[str] = []
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        clients = [httpx.AsyncClient(timeout=60) for _ in range(args.streams + args.plain)]
        for index, client in enumerate(clients):
            nursery.start_soon(load.streamed if index < args.streams else load.plain, client)
        await trio.sleep(1.0)  # the load under way
        plan = [(version, False) for version in range(1, args.reloads + 1)]
        for at in range(args.invalid):  # invalid files among the valid ones
            plan.insert((at + 1) * len(plan) // (args.invalid + 1), (-1, True))
        version = 0
        for wanted, invalid in plan:
            if not invalid:
                version = wanted
            await trio.Path(config).write_text(
                config_text(upstream, version, args.workers, invalid)
            )
            code, seconds, server, said = await reload_once(env)
            reloads.append(
                {
                    "invalid": invalid,
                    "exit": code,
                    "seconds": round(seconds, 3),
                    "server_seconds": server,
                    "said": said,
                }
            )
            if (code != 0) != invalid:
                checks.append(f"reload {len(reloads)}: exit {code}: {said}")
            here, gone = ("swap-a", "swap-b") if version % 2 == 0 else ("swap-b", "swap-a")
            found = [await status_of(url, here), await status_of(url, gone)]
            if found != [200, 404]:
                checks.append(f"after reload {len(reloads)}: {here} {found[0]}, {gone} {found[1]}")
            await trio.sleep(args.gap)
        load.running = False  # the loops finish the request they are in
    elapsed = time.monotonic() - started
    for client in clients:
        await client.aclose()
    valid = [r["seconds"] for r in reloads if not r["invalid"]]
    took = [r["server_seconds"] for r in reloads if not r["invalid"]]
    return {
        "machine": machine(),
        "load_average": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
        "workers": args.workers,
        "streamed_clients": args.streams,
        "plain_clients": args.plain,
        "reloads": len(valid),
        "invalid_reloads": len(reloads) - len(valid),
        "seconds": round(elapsed, 1),
        "streamed_completed": load.done["streamed"],
        "plain_completed": load.done["plain"],
        "failed_or_cut": len(load.failures),
        "failures": load.failures[:20],
        "checks_failed": checks,
        "reload_seconds_p50": round(statistics.median(valid), 3),
        "reload_seconds_max": round(max(valid), 3),
        "server_seconds_p50": round(statistics.median(took), 4),
        "server_seconds_max": round(max(took), 4),
        "reload_log": reloads,
    }


def report(result: dict[str, Any]) -> str:
    ok = not result["failed_or_cut"] and not result["checks_failed"]
    lines = [
        "# Reloads under load",
        "",
        f"`bench/reload.py`: {result['reloads']} reloads (plus {result['invalid_reloads']} invalid "
        f"files, refused) of `proxycast serve --workers {result['workers']}` by `proxycast reload`, "
        f"while {result['streamed_clients']} clients stream and {result['plain_clients']} send "
        "non-streamed chat completions without a pause, against the fake OpenAI upstream (streams "
        f"of {WORDS} chunks, 20 ms apart). Machine: {result['machine']}.",
        "",
        "| | |",
        "|---|---|",
        f"| duration | {result['seconds']} s |",
        f"| streamed requests completed whole | {result['streamed_completed']} |",
        f"| non-streamed requests completed | {result['plain_completed']} |",
        f"| failed or cut requests | **{result['failed_or_cut']}** |",
        f"| new file in effect after each reload (appeared model 200, removed one 404) | "
        f"{'every time' if not result['checks_failed'] else result['checks_failed']} |",
        f"| the server's time per reload (file read and validated, built and swapped in every "
        f"worker), p50 / max | {result['server_seconds_p50']} s / {result['server_seconds_max']} s |",
        f"| `proxycast reload` wall time (its own start included), p50 / max | "
        f"{result['reload_seconds_p50']} s / {result['reload_seconds_max']} s |",
        "",
        "Result: " + ("zero failed or cut requests." if ok else "FAILURES (see reload.json)."),
        "",
        "`proxycast reload`'s wall time is mostly its own start (a Python process importing "
        "proxycast, ~1.6 s of CPU) on a machine shared with other work (load average "
        f"{result['load_average']} during the run); the server's time is measured in the server, "
        "from the signal's handling to the outcome written. The swap itself is one step in each "
        "worker once all have built the new configuration.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--invalid", type=int, default=2, help="invalid files among them")
    parser.add_argument("--streams", type=int, default=4, help="clients streaming in a loop")
    parser.add_argument("--plain", type=int, default=4, help="clients of non-streamed requests")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between two reloads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="reload")
    arguments = parser.parse_args()
    outcome = trio.run(main, arguments)
    write_results(arguments.out, outcome, report(outcome))
