"""What proxycast adds to a request over the stack alone, function by function, exactly.

A server runs with a trace function (``sys.settrace``) counting every Python frame's trace events
(its calls, lines and returns) by function; N requests are sent on one connection between two
snapshots (SIGUSR1), and the difference divided by N is a request's events, by function. Run for the
relay floor (bench/relay_floor.py: the stack relaying with nothing of proxycast's) and for proxycast,
the two are diffed by package and by function. Counts, not time: they do not move with the machine's
load, and they point at Python work (a C call is one event, however long). The trace makes the
server ~20x slower; the counts are unaffected.

    .venv/bin/python bench/trace_diff.py [--requests 60] [--model bench-json] [--top 40]

Needs nginx (bench/run.py's upstream). Prints the tables; writes nothing.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

    from _typeshed import TraceFunction

sys.path.insert(0, str(Path(__file__).parent))
import common
import instructions
import run

HERE = Path(__file__).parent

# The traced server: this file run with ``--serve OUT -- COMMAND...`` (a module, or ``-c`` code).
_Key = tuple[str, int, str]


def _serve(out: str, argv: list[str]) -> None:
    counts: collections.Counter[_Key] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: object) -> TraceFunction:
        code = frame.f_code
        name = getattr(code, "co_qualname", code.co_name)  # 3.11+
        counts[(code.co_filename, code.co_firstlineno, name)] += 1
        return trace

    taken = [0]

    def snapshot(*_: object) -> None:
        sys.settrace(None)
        items = list(counts.items())
        path = f"{out}.{taken[0]}"
        taken[0] += 1
        Path(path + ".tmp").write_text(json.dumps([[list(k), v] for k, v in items]))
        os.rename(path + ".tmp", path)
        sys.settrace(trace)

    signal.signal(signal.SIGUSR1, snapshot)
    sys.settrace(trace)
    if argv[0] == "-c":
        exec(argv[1], {"__name__": "__main__"})
    else:
        import runpy

        sys.argv = argv
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


def _snapshot(pid: int, out: str, index: int) -> dict[_Key, int]:
    os.kill(pid, signal.SIGUSR1)
    path = Path(f"{out}.{index}")
    deadline = time.monotonic() + 300
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no snapshot")
        time.sleep(0.1)
    return {(k[0], k[1], k[2]): v for k, v in json.loads(path.read_text())}


def _drive(port: int, payload: bytes, key: str, count: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    for _ in range(count):
        connection.request("POST", "/v1/chat/completions", payload, headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"status {answer.status}")
    connection.close()


def measure(
    target: str, model: str, requests: int, folder: Path, upstream: str
) -> dict[_Key, float]:
    """A request's trace events by function, for ``target`` (``floor`` or ``proxycast``)."""
    port = common.free_port()
    out = str(folder / f"trace-{target}")
    me = [sys.executable, str(Path(__file__).resolve()), "--serve", out, "--"]
    if target == "floor":
        code = (
            "import trio; from hypercorn.config import Config; from hypercorn.trio import serve; "
            f"from relay_floor import app; c = Config(); c.bind = ['127.0.0.1:{port}']; "
            "c.accesslog = None; trio.run(serve, app, c)"
        )
        env = {"UPSTREAM": upstream, "PYTHONPATH": str(HERE)}
        process = run.start([*me, "-c", code], port, folder / "floor.log", cwd=HERE, env=env)
        key = common.KEY
    else:
        config = common.proxycast_config(folder, upstream, port, client=True)
        home = folder / "home"
        home.mkdir(exist_ok=True)
        command = [*me, "proxycast", "serve", "--config", str(config)]
        env = {"PROXYCAST_HOME": str(home)}
        process = run.start(command, port, folder / "proxycast.log", cwd=folder, env=env)
        key = common.CLIENT_KEY
    payload = instructions.body("/v1/chat/completions", model, "sse" in model)
    try:
        _drive(port, payload, key, 20)
        before = _snapshot(process.pid, out, 0)
        _drive(port, payload, key, requests)
        after = _snapshot(process.pid, out, 1)
    finally:
        run.stop(process)
    return {k: (v - before.get(k, 0)) / requests for k, v in after.items() if v != before.get(k)}


def package(key: _Key) -> str:
    path = key[0]
    if found := re.search(r"site-packages/([^/]+)", path):
        return found.group(1)
    if "/src/proxycast/" in path:
        return "proxycast/" + path.split("/src/proxycast/")[1]
    if found := re.search(r"python3\.\d+/(.*)", path):
        return "stdlib: " + found.group(1)
    return path.rsplit("/", 1)[-1]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--model", default="bench-json", help="bench-json or bench-sse")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="proxycast-trace-"))
    nginx_port = common.free_port()
    nginx = run.start(
        ["nginx", "-c", str(run.nginx_config(folder, nginx_port))], nginx_port, folder / "nginx.log"
    )
    upstream = f"http://127.0.0.1:{nginx_port}"
    try:
        floor = measure("floor", args.model, args.requests, folder, upstream)
        ours = measure("proxycast", args.model, args.requests, folder, upstream)
    finally:
        run.stop(nginx)
    print(f"trace events a request: relay floor {sum(floor.values()):.0f}, "
          f"proxycast (default configuration) {sum(ours.values()):.0f}")  # fmt: skip
    by_floor: dict[str, float] = collections.defaultdict(float)
    by_ours: dict[str, float] = collections.defaultdict(float)
    for k, v in floor.items():
        by_floor[package(k)] += v
    for k, v in ours.items():
        by_ours[package(k)] += v
    print(f"\n{'package':60} {'floor':>8} {'proxycast':>10} {'difference':>11}")
    names = sorted(set(by_floor) | set(by_ours), key=lambda n: -abs(by_ours[n] - by_floor[n]))
    for name in names[: args.top]:
        print(f"{name:60} {by_floor[name]:8.1f} {by_ours[name]:10.1f} {by_ours[name] - by_floor[name]:11.1f}")  # fmt: skip
    print(f"\n{'function (proxycast minus floor)':90} {'events':>8}")
    rows = sorted(((v - floor.get(k, 0.0), k) for k, v in ours.items()), reverse=True)
    for difference, key in rows[: args.top]:
        print(f"{package(key) + ': ' + key[2]:90} {difference:8.1f}")


if __name__ == "__main__":
    main()
