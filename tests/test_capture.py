"""Request capture (``[capture]``) through the real server: a streamed tool call shown whole by
``proxycast requests show`` (a real subprocess reading the same ledger file), no secret anywhere in
a capture, the size cap, retention, sampling, and a named client seeing only its own captures."""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
import time
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import openai
import pytest
import trio

from proxycast.accounting.capture import cut_marker
from proxycast.accounting.clients import ClientConfig
from proxycast.config import CaptureConfig, Config, ProviderConfig, ServerConfig, load_config
from proxycast.errors import ConfigError
from proxycast.ledger import LedgerConfig
from proxycast.ledger.captures import details
from proxycast.ledger.rows import CaptureRow, Row
from proxycast.ledger.sqlite import SQLiteStore
from proxycast.ledger.writer import LedgerWriter
from proxycast.testing import FakeOpenAI, FakeToolCall
from proxycast.testing import Script as OpenAIScript
from tests.support import CLIENT_KEY, UPSTREAM_KEY, start_gateway

if TYPE_CHECKING:
    from pathlib import Path

ALICE_KEY = "alice-key-7f3a9c1e5b"
PRIVATE = "private-value-5c1d9e7a2b"
"""A credential the client put in a body field named like one (``api_key``)."""
SECRETS = (CLIENT_KEY, UPSTREAM_KEY, ALICE_KEY, PRIVATE)
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def capture_config(fake_url: str, ledger: Path, **capture: Any) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            ProviderConfig(
                name="local",
                type="openai",
                base_url=fake_url,
                api_keys=(UPSTREAM_KEY,),
                models=("gpt-4o-mini",),
            ),
        ),
        clients=(ClientConfig(name="alice", api_key=ALICE_KEY),),
        ledger=LedgerConfig(url=f"sqlite:///{ledger}"),
        capture=CaptureConfig(enabled=True, **capture),
    )


def stored(path: Path, table: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(f"SELECT * FROM {table}")]
    except sqlite3.OperationalError:  # not migrated yet
        return []
    finally:
        db.close()


async def written(path: Path, table: str, count: int) -> list[dict[str, Any]]:
    """The rows of ``table`` once there are ``count`` (the writer flushes every second)."""
    with trio.fail_after(15):
        while len(rows := stored(path, table)) < count:  # noqa: ASYNC110 - in a file
            await trio.sleep(0.1)
    return rows


@pytest.fixture(name="fake")
async def _fake(nursery: trio.Nursery) -> FakeOpenAI:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    return fake


async def test_a_streamed_tool_call_is_shown_whole_and_without_secrets(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    ledger = tmp_path / "usage.db"
    config = capture_config(fake.base_url, ledger)
    fake.script(
        OpenAIScript(
            text="",
            tool_calls=(FakeToolCall(name="get_weather", arguments='{"city": "Paris"}'),),
        )
    )
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[
                    {"role": "system", "content": f"keys: {UPSTREAM_KEY} {ALICE_KEY}"},
                    {"role": "user", "content": f"Weather in Paris? (mine: {CLIENT_KEY})"},
                ],
                tools=TOOLS,
                stream=True,
                extra_body={"metadata": {"api_key": PRIVATE}},
                extra_headers={"x-request-id": "capture-stream-1"},
            )
            arguments = ""
            async for chunk in stream:
                for call in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
                    arguments += (call.function.arguments or "") if call.function else ""
        assert json.loads(arguments) == {"city": "Paris"}
        await written(ledger, "captures", 1)
        nursery.cancel_scope.cancel()
    # the upstream got the secrets the client sent (they are the client's to send)...
    assert UPSTREAM_KEY in fake.requests[-1].body.decode()
    source = tmp_path / "proxycast.toml"
    source.write_text(
        f'[server]\napi_keys = ["{CLIENT_KEY}"]\n[ledger]\nurl = "sqlite:///{ledger}"\n'
        f'[[providers]]\nname = "local"\ntype = "openai"\nbase_url = "{fake.base_url}"\n'
        f'api_keys = ["{UPSTREAM_KEY}"]\nmodels = ["gpt-4o-mini"]\n'
    )
    done = await trio.run_process(
        [sys.executable, "-m", "proxycast", "requests", "show", "capture-stream-1", "--json"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr.decode()
    shown = json.loads(done.stdout)
    assert shown["request_id"] == "capture-stream-1"
    assert (shown["client"], shown["api"], shown["model"], shown["status"]) == (
        "-",
        "openai",
        "gpt-4o-mini",
        200,
    )
    assert shown["streamed"] is True
    # the whole tool call, assembled from the frames the client got
    assert shown["reply"]["tool_calls"] == [
        {
            "id": shown["reply"]["tool_calls"][0]["id"],
            "name": "get_weather",
            "arguments": {"city": "Paris"},
        }
    ]
    assert shown["reply"]["stop"] == "tool_use"
    assert "data: [DONE]" in shown["answer"]
    request = json.loads(shown["request"])
    assert request["tools"][0]["function"]["name"] == "get_weather"
    assert request["messages"][1]["content"] == "Weather in Paris? (mine: [redacted])"
    assert request["metadata"]["api_key"] == "[redacted]"
    [attempt] = shown["attempts"]
    assert attempt["key"] == "local#1"
    assert attempt["status"] == 200
    assert attempt["seconds"] >= 0
    assert attempt["path"] == "/chat/completions"
    assert json.loads(attempt["request"])["model"] == "gpt-4o-mini"
    # ...and neither the output nor the database holds any of them
    for secret in SECRETS:
        assert secret not in done.stdout.decode()
        assert secret[:16] not in ledger.read_bytes().decode("utf-8", "replace")
    listed = await trio.run_process(
        [sys.executable, "-m", "proxycast", "requests", "list", "--config", str(source)],
        capture_stdout=True,
    )
    text = listed.stdout.decode()
    assert "capture-stream-1" in text
    assert "gpt-4o-mini" in text


async def test_bodies_past_the_cap_are_cut_with_a_marker(tmp_path: Path, fake: FakeOpenAI) -> None:
    ledger = tmp_path / "usage.db"
    config = capture_config(fake.base_url, ledger, max_body_bytes=2048)
    fake.script(OpenAIScript(text="word " * 1000))
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as client:
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "x" * 50_000}],
                extra_headers={"x-request-id": "capture-big"},
            )
        [row] = await written(ledger, "captures", 1)
        nursery.cancel_scope.cancel()
    shown = details(row)
    assert shown["request_cut"]
    assert shown["answer_cut"]
    size = len(json.dumps({"model": "gpt-4o-mini", "messages": []}))
    for body in (shown["request"], shown["answer"], shown["attempts"][0]["request"]):
        kept, marker, _ = body.rpartition(cut_marker(0, 2048).split(" of ")[0])
        assert marker, body[-80:]
        assert len(kept.encode()) <= 2048
    assert shown["answer_bytes"] > 2048 + size
    assert shown["reply"] is None  # a cut answer is shown as it is


async def test_sample_zero_keeps_only_errors(tmp_path: Path, fake: FakeOpenAI) -> None:
    ledger = tmp_path / "usage.db"
    config = capture_config(fake.base_url, ledger, sample=0.0, errors=True)
    fake.script(OpenAIScript(), OpenAIScript(), OpenAIScript(status=400, error_message="bad"))
    messages: Any = [{"role": "user", "content": "hi"}]
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as client:
            for _ in range(2):
                await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=messages,
                    extra_headers={"x-request-id": "capture-failed"},
                )
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(
                    model="no-such-model",
                    messages=messages,
                    extra_headers={"x-request-id": "capture-unknown"},
                )
        await written(ledger, "requests", 4)
        await trio.sleep(1.5)  # a flush more: nothing else comes
        nursery.cancel_scope.cancel()
    captured = {row["request_id"]: details(row) for row in stored(ledger, "captures")}
    assert set(captured) == {"capture-failed", "capture-unknown"}
    failed = captured["capture-failed"]
    assert failed["status"] == 400
    assert failed["attempts"][0]["status"] == 400
    assert "bad" in failed["attempts"][0]["error"]
    assert captured["capture-unknown"]["attempts"] == []


async def test_sample_zero_without_errors_keeps_nothing(tmp_path: Path, fake: FakeOpenAI) -> None:
    ledger = tmp_path / "usage.db"
    config = capture_config(fake.base_url, ledger, sample=0.0, errors=False)
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as client:
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(
                    model="no-such-model", messages=[{"role": "user", "content": "hi"}]
                )
        await written(ledger, "requests", 1)
        await trio.sleep(1.5)
        nursery.cancel_scope.cancel()
    assert stored(ledger, "captures") == []


async def test_captures_past_their_retention_are_pruned(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    store = SQLiteStore(path)
    writer = LedgerWriter(store, retention_days=90)
    writer.capture_retention = 7 * 86400
    now = time.time()
    for request_id, age_days in (("old", 8), ("recent", 6), ("new", 0)):
        row = CaptureRow(
            time=now - age_days * 86400,
            request_id=request_id,
            client="-",
            api="openai",
            model="m",
            status=200,
            data="{}",
        )
        writer.record_capture(functools.partial(lambda row: row, row))
    await writer.flush()  # written, then pruned (the first flush prunes)
    assert [r["request_id"] for r in stored(path, "captures")] == ["recent", "new"]
    assert store.captured("old") is None
    assert store.captured("new") is not None
    await writer.aclose()


async def test_a_named_client_sees_only_its_own_captures(tmp_path: Path, fake: FakeOpenAI) -> None:
    ledger = tmp_path / "usage.db"
    config = capture_config(fake.base_url, ledger)
    messages: Any = [{"role": "user", "content": "hi"}]
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        for key, request_id in ((CLIENT_KEY, "admin-1"), (ALICE_KEY, "alice-1")):
            async with openai.AsyncOpenAI(
                base_url=gateway.v1, api_key=key, max_retries=0
            ) as client:
                await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=messages,
                    extra_headers={"x-request-id": request_id},
                )
        async with httpx.AsyncClient(base_url=gateway.url + "/ui/api") as http:
            admin = {"authorization": f"Bearer {CLIENT_KEY}"}
            alice = {"authorization": f"Bearer {ALICE_KEY}"}
            listed = (await http.get("/requests", headers=admin)).json()
            assert listed["capture"] is True
            assert {r["request_id"] for r in listed["requests"]} == {"admin-1", "alice-1"}
            own = (await http.get("/requests", headers=alice)).json()["requests"]
            assert [r["request_id"] for r in own] == ["alice-1"]
            assert (await http.get("/requests/alice-1", headers=alice)).status_code == 200
            hidden = await http.get("/requests/admin-1", headers=alice)
            assert hidden.status_code == 404
            shown = (await http.get("/requests/admin-1", headers=admin)).json()
            assert shown["reply"]["text"]
            assert shown["client"] == "-"
        nursery.cancel_scope.cancel()


def test_captures_in_postgres(postgres_url: str) -> None:
    from proxycast.ledger.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    try:
        now = time.time()
        rows = [
            CaptureRow(
                time=now - age * 86400,
                request_id=request_id,
                client=client,
                api="openai",
                model="m",
                status=200,
                data=json.dumps({"answer": "a\x00b", "streamed": False, "request": "{}"}),
            )
            for request_id, client, age in (("old", "alice", 8), ("a", "alice", 1), ("b", "bob", 0))
        ]
        store.insert_captures(rows)
        assert store.prune_captures(now - 7 * 86400) == 1
        listed = store.captures(now - 30 * 86400)
        assert [r["request_id"] for r in listed] == ["b", "a"]
        assert [r["request_id"] for r in store.captures(0, "alice")] == ["a"]
        assert store.captured("b", "alice") is None
        found = store.captured("b")
        assert found is not None
        # JSON escapes a NUL (which Postgres text refuses): it comes back as it was
        assert details(found)["answer"] == "a\x00b"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("[capture]\nsample = 1.5", "capture.sample: expected a share", id="sample"),
        pytest.param("[capture]\nmax_body_bytes = 0", "max_body_bytes: must be 1", id="cap"),
        pytest.param("[capture]\nretention_days = 0", "retention_days: must be", id="days"),
        pytest.param(
            '[capture]\nenabled = true\n[ledger]\nurl = "off"', "ledger's database", id="off"
        ),
        pytest.param("[capture]\nenable = true", "enable", id="typo"),
    ],
)
def test_capture_configuration_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "proxycast.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


def test_capture_is_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "proxycast.toml"
    path.write_text('[server]\napi_keys = ["k-123456789"]\n')
    capture = load_config(path).capture
    assert capture == CaptureConfig()
    assert not capture.enabled
    assert (capture.sample, capture.errors, capture.max_body_bytes, capture.retention_days) == (
        1.0,
        True,
        262144,
        7.0,
    )


async def test_captures_kept_are_pruned_once_capture_is_turned_off(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    """Capture turned off (here: a restart; a reload alike) leaves the bodies it took in the
    database: they still go at their retention, not never."""
    ledger = tmp_path / "usage.db"
    store = SQLiteStore(ledger)
    now = time.time()
    store.insert_captures(
        [
            CaptureRow(
                time=now - age * 86400,
                request_id=request_id,
                client="-",
                api="openai",
                model="m",
                status=200,
                data="{}",
            )
            for request_id, age in (("old", 8), ("recent", 1))
        ]
    )
    store.close()
    config = capture_config(fake.base_url, ledger)
    config = attrs.evolve(config, capture=attrs.evolve(config.capture, enabled=False))
    async with trio.open_nursery() as nursery:
        await start_gateway(nursery, config)
        with trio.fail_after(15):  # the writer's first flush prunes
            while len(stored(ledger, "captures")) > 1:  # noqa: ASYNC110 - in a file
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert [r["request_id"] for r in stored(ledger, "captures")] == ["recent"]


async def test_a_secret_split_across_a_streams_frames_is_not_kept(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    """A model that repeats a key (one the user pasted, say) streams it in pieces, none long enough
    to be told as the key; assembled when the capture is read, it was whole again in ``requests
    show``'s reply (which, unlike the dashboard, redacts nothing more)."""
    ledger = tmp_path / "usage.db"
    config = capture_config(fake.base_url, ledger)
    text = f"Your keys are {UPSTREAM_KEY} and {ALICE_KEY}, keep them safe."
    arguments = json.dumps({"token": ALICE_KEY})
    fake.script(
        OpenAIScript(
            text=text,
            chunks=len(text) // 3,
            tool_calls=(FakeToolCall(name="get_weather", arguments=arguments),),
        )
    )
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "my keys?"}],
                tools=TOOLS,
                stream=True,
                extra_headers={"x-request-id": "capture-split"},
            )
            async for _ in stream:
                pass
        [row] = await written(ledger, "captures", 1)
        nursery.cancel_scope.cancel()
    shown = details(row)
    assert shown["reply"]["text"] == "Your keys are [redacted] and [redacted], keep them safe."
    assert shown["reply"]["tool_calls"][0]["arguments"] == {"token": "[redacted]"}
    for secret in (UPSTREAM_KEY, ALICE_KEY):
        assert secret not in json.dumps(shown, ensure_ascii=False)
        assert secret not in "".join(json.loads(row["data"])["answer"].split("\n"))


async def test_a_runtime_client_key_is_not_kept(tmp_path: Path, fake: FakeOpenAI) -> None:
    """A key made by ``proxycast keys`` is a client key like the file's, but the gateway keeps only
    its digest, so no redactor knows it: an agent that sends it in a prompt (read from a .env file,
    say) or gets it back left it in the capture. Its shape (``pc-`` and 43 characters) gives it
    away."""
    ledger = tmp_path / "usage.db"
    config = capture_config(fake.base_url, ledger)
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with httpx.AsyncClient() as http:
            made = await http.post(
                gateway.url + "/admin/keys",
                json={"name": "ivy"},
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
            )
        key = made.json()["key"]
        fake.script(OpenAIScript(text=f"Set PROXYCAST_KEY={key} in your shell."))
        async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0) as client:
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"my .env says PROXYCAST_KEY={key}"}],
                extra_headers={"x-request-id": "capture-runtime-key"},
            )
        [row] = await written(ledger, "captures", 1)
        nursery.cancel_scope.cancel()
    shown = details(row)
    assert shown["client"] == "ivy"
    assert "PROXYCAST_KEY=[redacted]" in shown["request"]
    assert "PROXYCAST_KEY=[redacted] in" in shown["answer"]
    assert key[3:19] not in ledger.read_bytes().decode("utf-8", "replace")


@pytest.mark.parametrize("command", [["requests", "list"], ["requests", "show", "x"], ["usage"]])
async def test_a_ledger_that_is_no_database_is_a_clear_error(
    tmp_path: Path, command: list[str]
) -> None:
    """A ledger URL naming a file that is not one (a typo: the configuration itself) was a
    traceback of ``proxycast requests`` and ``usage``."""
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    source = tmp_path / "proxycast.toml"
    source.write_text(
        f'[server]\napi_keys = ["{CLIENT_KEY}"]\n'
        f'[ledger]\nurl = "sqlite:///{tmp_path / "notes.txt"}"\n'
    )
    done = await trio.run_process(
        [sys.executable, "-m", "proxycast", *command, "--config", str(source)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    error = done.stderr.decode()
    assert done.returncode == 1, error
    assert "cannot read the ledger" in error
    assert "notes.txt" in error
    assert "Traceback" not in error


async def test_a_request_id_with_a_slash_can_be_inspected(tmp_path: Path, fake: FakeOpenAI) -> None:
    """``x-request-id`` may be any visible ASCII (a base64 id has ``/`` and ``+``); the dashboard
    asks for ``requests/{encodeURIComponent(id)}``, and a ``%2F`` there was an unknown route."""
    ledger = tmp_path / "usage.db"
    config = capture_config(fake.base_url, ledger)
    request_id = "team/a+b=="
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as client:
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-request-id": request_id},
            )
        await written(ledger, "captures", 1)
        async with httpx.AsyncClient() as http:
            shown = await http.get(
                gateway.url + "/ui/api/requests/team%2Fa%2Bb%3D%3D",
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
            )
        nursery.cancel_scope.cancel()
    assert shown.status_code == 200, shown.text
    assert shown.json()["request_id"] == request_id


async def test_captures_waiting_for_the_store_hold_their_rows_not_their_bodies(
    tmp_path: Path,
) -> None:
    """While the ledger cannot be written captures wait (up to 1,000); each referred to its
    request's whole bodies (up to server.max_body_bytes, 32 MiB, each) until its row was made:
    gigabytes through an outage. A failed write makes their rows, capped, at once."""
    path = tmp_path / "usage.db"
    store = SQLiteStore(path)
    writer = LedgerWriter(store, retention_days=90)
    made: list[str] = []

    def make() -> CaptureRow:
        made.append("made")
        return CaptureRow(
            time=time.time(),
            request_id="r1",
            client="-",
            api="openai",
            model="m",
            status=200,
            data="{}",
        )

    store.close()
    path.unlink()
    path.mkdir()  # the store cannot be opened: an outage
    writer.record(
        Row(time=time.time(), request_id="r1", client="-", api="openai", model="m", status=200)
    )
    writer.record_capture(make)
    await writer.flush()
    assert made == ["made"]  # made while the store is down, the bodies let go
    path.rmdir()  # back
    await writer.flush()
    assert [r["request_id"] for r in stored(path, "captures")] == ["r1"]
    assert made == ["made"]
    await writer.aclose()


async def test_a_since_too_far_back_is_a_clear_error(tmp_path: Path, fake: FakeOpenAI) -> None:
    """``since`` of more digits than a float takes was a 500 on the dashboard (and a traceback of
    ``proxycast requests list``)."""
    config = capture_config(fake.base_url, tmp_path / "usage.db")
    far = "1" + "0" * 400 + "h"
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with httpx.AsyncClient() as http:
            answers = [
                await http.get(
                    f"{gateway.url}/ui/api/{what}?since={far}",
                    headers={"authorization": f"Bearer {CLIENT_KEY}"},
                )
                for what in ("requests", "usage")
            ]
        nursery.cancel_scope.cancel()
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert "further back" in answer.json()["error"]["message"]
    done = await trio.run_process(
        [sys.executable, "-m", "proxycast", "requests", "list", "--since", far],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "further back" in done.stderr.decode()


@pytest.mark.parametrize("limit", ["-5", "0", "many"])
async def test_a_limit_below_one_is_refused(tmp_path: Path, limit: str) -> None:
    """``requests list --limit -5`` listed every capture on SQLite (a negative LIMIT is none) and
    failed on Postgres."""
    done = await trio.run_process(
        [sys.executable, "-m", "proxycast", "requests", "list", "--limit", limit],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--limit: expected a whole number of 1 or more" in done.stderr.decode()
