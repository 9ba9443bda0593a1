"""Reloading the configuration of a running ``proxycast serve`` (a real process, two workers where it
matters): ``proxycast reload``, ``SIGHUP``, ``serve --watch``. A changed model list and a revoked
client key are in effect on every worker once ``reload`` returns; an invalid file changes nothing and
``reload`` says why; a stream in flight finishes on the configuration it started with."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import TYPE_CHECKING

import httpx
import trio

from proxycast.testing import FakeOpenAI, Script
from proxycast.upstream.keys import KeyPool
from tests.support import CLIENT_KEY
from tests.test_cli import serve

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

ALICE, BOB = "alice-key-0123456789", "bob-key-0123456789"
ATTEMPTS = 24
"""Requests sent after a reload, each on a connection of its own: the kernel hands new connections
to either worker, so both serve some of them."""


def write_config(
    path: Path,
    upstream: str,
    *,
    models: tuple[str, ...] = ("llama3.2",),
    clients: tuple[tuple[str, str], ...] = (("alice", ALICE), ("bob", BOB)),
    workers: int = 2,
    port: int = 0,
    provider: str = "local",
    bob_rpm: int | None = None,
) -> Path:
    text = f"""
[server]
port = {port}
workers = {workers}
api_keys = ["{CLIENT_KEY}"]

[[providers]]
name = "{provider}"
type = "openai"
base_url = "{upstream}"
api_keys = ["sk-upstream-one", "sk-upstream-two"]
models = {json.dumps(list(models))}
"""
    for name, key in clients:
        text += f'\n[[clients]]\nname = "{name}"\napi_key = "{key}"\n'
        if name == "bob" and bob_rpm is not None:
            text += f"rpm = {bob_rpm}\n"
    path.write_text(text)
    return path


async def reload(config: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    args = [sys.executable, "-m", "proxycast", "reload"]
    if config is not None:
        args += ["--config", str(config)]
    return await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)


async def statuses(url: str, model: str, key: str, count: int = ATTEMPTS) -> list[int]:
    """``count`` chat completions, each on a new connection (so every worker gets some)."""
    found: list[int] = []

    async def one() -> None:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                url + "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {key}"},
            )
            found.append(response.status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return found


async def metric(url: str, line_start: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (
            await client.get(url + "/metrics", headers={"authorization": f"Bearer {CLIENT_KEY}"})
        ).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


async def test_a_new_model_is_served_by_every_worker_once_reload_returns(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url)
    async with serve(["--config", str(config)]) as served:
        assert set(await statuses(served.url, "qwen3", ALICE, 4)) == {404}
        write_config(config, fake.base_url, models=("llama3.2", "qwen3"))
        done = await reload(config)
        assert done.returncode == 0, done.stderr
        assert b"configuration reloaded from" in done.stdout
        assert set(await statuses(served.url, "qwen3", ALICE)) == {200}
        assert set(await statuses(served.url, "llama3.2", ALICE)) == {200}
        assert await metric(served.url, 'proxycast_reloads_total{result="ok"}') == 1


async def test_a_revoked_client_key_is_refused_by_every_worker_once_reload_returns(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url)
    async with serve(["--config", str(config)]) as served:
        assert set(await statuses(served.url, "llama3.2", BOB, 4)) == {200}
        write_config(config, fake.base_url, clients=(("alice", ALICE),))
        done = await reload()  # the file the server runs from, found in serve.json
        assert done.returncode == 0, done.stderr
        assert set(await statuses(served.url, "llama3.2", BOB)) == {401}
        assert set(await statuses(served.url, "llama3.2", ALICE)) == {200}


async def test_an_invalid_file_changes_nothing_and_reload_says_why(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url)
    async with serve(["--config", str(config)]) as served:
        good = config.read_text()
        config.write_text(good.replace("models =", "modles =") + "\n[[clients]]\nname = 'x'\n")
        done = await reload(config)
        assert done.returncode == 1
        error = done.stderr.decode()
        assert "reload refused" in error
        assert "modles" in error  # what proxycast check would say of the file
        assert set(await statuses(served.url, "llama3.2", BOB)) == {200}  # the old one runs
        assert await metric(served.url, 'proxycast_reloads_total{result="invalid"}') == 1
        # a reload that does not name the server's file is refused before anything is signalled
        other = write_config(tmp_path / "other.toml", fake.base_url)
        refused = await reload(other)
        assert refused.returncode == 1
        assert b"reloads its own file" in refused.stderr


async def test_what_needs_a_restart_is_named_and_kept(tmp_path: Path, fake: FakeOpenAI) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url, workers=1)
    async with serve(["--config", str(config)]) as served:
        write_config(config, fake.base_url, workers=3, port=1, models=("qwen3",))
        done = await reload(config)
        assert done.returncode == 0, done.stderr
        said = done.stdout.decode()
        assert "need a restart" in said
        assert "server.port" in said
        assert "server.workers" in said
        # the rest is in effect, on the same address
        assert set(await statuses(served.url, "qwen3", ALICE, 3)) == {200}


async def test_a_stream_in_flight_finishes_on_its_configuration(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url)
    words = [f"w{i}" for i in range(12)]
    async with serve(["--config", str(config)]) as served:
        fake.script(Script(text=" ".join(words), interval=0.1))
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream(
                "POST",
                served.url + "/v1/chat/completions",
                json={
                    "model": "llama3.2",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"authorization": f"Bearer {BOB}"},
            ) as response,
        ):
            lines = response.aiter_lines()
            first = await lines.__anext__()
            # the model, its provider and the client are all gone from the new configuration
            write_config(config, fake.base_url, models=("qwen3",), clients=(), provider="other")
            done = await reload(config)
            assert done.returncode == 0, done.stderr
            rest = [line async for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in [first, *rest]
            if line.startswith("data: {")
        )
        assert text == " ".join(words)
        assert set(await statuses(served.url, "llama3.2", CLIENT_KEY, 4)) == {404}


async def test_limits_appear_at_a_reload_and_their_counts_carry_over(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url, workers=1)
    async with serve(["--config", str(config)]) as served:
        assert set(await statuses(served.url, "llama3.2", BOB, 3)) == {200}  # no limit yet
        write_config(config, fake.base_url, workers=1, bob_rpm=2)
        assert (await reload(config)).returncode == 0
        assert sorted(await statuses(served.url, "llama3.2", BOB, 3)) == [200, 200, 429]
        # another reload: the minute's count is the same one
        write_config(config, fake.base_url, workers=1, bob_rpm=2, models=("llama3.2", "qwen3"))
        assert (await reload(config)).returncode == 0
        assert set(await statuses(served.url, "llama3.2", BOB, 2)) == {429}
        assert set(await statuses(served.url, "qwen3", ALICE, 2)) == {200}


async def test_a_resting_key_keeps_resting_after_a_reload(tmp_path: Path, fake: FakeOpenAI) -> None:
    # one worker: its key health is in its memory alone (two share it through a file, and would
    # learn the rest again from there)
    config = write_config(tmp_path / "proxycast.toml", fake.base_url, workers=1)
    async with serve(["--config", str(config)]) as served:
        fake.script(Script(status=429, headers=(("retry-after", "60"),)))
        assert await statuses(served.url, "llama3.2", ALICE, 1) == [200]  # on the second key
        write_config(config, fake.base_url, workers=1, models=("llama3.2", "qwen3"))
        assert (await reload(config)).returncode == 0
        before = len(fake.requests)
        assert set(await statuses(served.url, "llama3.2", ALICE, 4)) == {200}
        used = {r.headers["authorization"] for r in fake.requests[before:]}
        assert used == {"Bearer sk-upstream-two"}


async def test_sighup_reloads_a_single_worker(tmp_path: Path, fake: FakeOpenAI) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url, workers=1)
    home = os.environ["PROXYCAST_HOME"]
    async with serve(["--config", str(config)]) as served:
        write_config(config, fake.base_url, workers=1, models=("qwen3",))
        served.process.send_signal(signal.SIGHUP)
        status = tmp_path / "proxycast-home" / "serve.json"
        assert str(status).startswith(home)
        with trio.fail_after(10):
            while json.loads(status.read_text()).get("reloads", 0) < 1:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert json.loads(status.read_text())["last"]["result"] == "ok"
        assert set(await statuses(served.url, "qwen3", ALICE, 3)) == {200}
        served.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await served.process.wait() == 0
        assert not status.exists()  # removed by the server that wrote it


async def test_watch_reloads_when_the_file_changes(tmp_path: Path, fake: FakeOpenAI) -> None:
    config = write_config(tmp_path / "proxycast.toml", fake.base_url)
    async with serve(["--config", str(config), "--watch"]) as served:
        write_config(config, fake.base_url, models=("qwen3",))
        with trio.fail_after(10):
            while set(await statuses(served.url, "qwen3", ALICE, 2)) != {200}:  # noqa: ASYNC110
                await trio.sleep(0.1)  # another process: nothing to wait on here
        assert set(await statuses(served.url, "qwen3", ALICE)) == {200}


def test_key_health_follows_each_key_by_its_fingerprint() -> None:
    now = [100.0]
    old = KeyPool("local", 3, lambda: now[0], fingerprints=("aaa", "bbb", "ccc"))
    old.rest(1, 60, "upstream 429")
    old.bench(30, "unreachable")
    new = KeyPool("local", 2, lambda: now[0], fingerprints=("bbb", "ddd"))
    assert new.carry(old, same_upstream=False) == {1: 0}
    assert new.left(0) == (60, "upstream 429")  # bbb moved up, with its rest
    assert new.left(1) == (0, "")
    assert new.left(None) == (0, "")  # another upstream: the provider's rest is not its
    again = KeyPool("local", 3, lambda: now[0], fingerprints=("aaa", "bbb", "ccc"))
    again.carry(old, same_upstream=True)
    assert again.left(None) == (30, "unreachable")


async def test_a_second_server_of_the_data_directory_gives_reload_back(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    """A second ``serve`` on the same data directory (another port) takes ``serve.json``; when it
    stopped it removed it, and ``proxycast reload`` said no server was running while the first
    still did. It gives it back to the first."""
    config = write_config(tmp_path / "proxycast.toml", fake.base_url, workers=1)
    status = tmp_path / "proxycast-home" / "serve.json"
    async with serve(["--config", str(config)]) as first:
        async with serve(["--config", str(config)]) as second:
            assert json.loads(status.read_text())["url"] == second.url
            second.process.send_signal(signal.SIGINT)
            with trio.fail_after(15):
                assert await second.process.wait() == 0
        assert json.loads(status.read_text())["url"] == first.url
        done = await reload(config)
        assert done.returncode == 0, done.stderr
        assert json.loads(status.read_text())["reloads"] == 1
        first.process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await first.process.wait() == 0
    assert not status.exists()


async def test_reload_never_signals_a_process_that_took_a_crashed_servers_pid(
    tmp_path: Path,
) -> None:
    """A server killed outright leaves ``serve.json``; its pid, once another process has it (a
    container's small pid space reuses them soon), got the SIGHUP of ``proxycast reload``, which
    ends most programs. The file names the process's start time too."""
    other = await trio.lowlevel.open_process(["sleep", "60"])
    try:
        status = tmp_path / "proxycast-home" / "serve.json"
        status.parent.mkdir(parents=True, exist_ok=True)
        status.write_text(
            json.dumps(
                {"pid": other.pid, "config": "x", "url": "http://127.0.0.1:1", "reloads": 0}
                | {"started": "1"}  # the crashed server's, not sleep's
            )
        )
        done = await reload()
        assert done.returncode == 1
        assert "no proxycast serve is running" in done.stderr.decode()
        await trio.sleep(0.2)
        assert other.returncode is None  # not signalled
    finally:
        other.kill()
        await other.wait()
