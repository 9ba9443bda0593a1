"""Clients, usage and the ledger through the real server (in-process) with the official SDKs: model
allowlists, ``x-request-id``, ``/health`` and ``/metrics``, and ledger rows whose tokens are what the
fakes reported, for every upstream format, streamed or not, and for a client that left mid-stream."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import openai
import pytest
import trio

from proxycast.accounting.clients import ClientConfig
from proxycast.accounting.prices import Price
from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.ledger import LedgerConfig
from proxycast.testing import AnthropicScript, FakeAnthropic, FakeGemini, FakeOpenAI
from tests.support import CLIENT_KEY, UPSTREAM_KEY, start_gateway

if TYPE_CHECKING:
    from pathlib import Path

ALICE_KEY = "alice-key-7f3a9c1e5b"
BOB_KEY = "bob-key-2d8e4f6a0c"


def team_config(
    openai_url: str, anthropic_url: str, gemini_url: str, ledger: Path, **server: Any
) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,), **server),
        providers=(
            ProviderConfig(
                name="local",
                type="openai",
                base_url=openai_url,
                api_keys=(UPSTREAM_KEY,),
                models=("gpt-4o-mini", "llama3.2"),
            ),
            ProviderConfig(
                name="anthropic",
                type="anthropic",
                base_url=anthropic_url,
                api_keys=(UPSTREAM_KEY,),
                models=("claude-*",),
            ),
            ProviderConfig(
                name="gemini",
                type="gemini",
                base_url=gemini_url,
                api_keys=(UPSTREAM_KEY,),
                models=("gemini-*",),
            ),
        ),
        clients=(
            ClientConfig(name="alice", api_key=ALICE_KEY, models=("gpt-4o-mini", "claude-*")),
            ClientConfig(name="bob", api_key_sha256=hashlib.sha256(BOB_KEY.encode()).hexdigest()),
        ),
        prices={"claude-*": Price(input=3.0, output=15.0), "gpt-4o-mini": Price(input=1.0)},
        ledger=LedgerConfig(url=f"sqlite:///{ledger}"),
    )


@pytest.fixture(name="upstreams")
async def _upstreams(nursery: trio.Nursery) -> tuple[FakeOpenAI, FakeAnthropic, FakeGemini]:
    fakes = (FakeOpenAI(), FakeAnthropic(), FakeGemini())
    for fake in fakes:
        await nursery.start(fake.serve)
    return fakes


async def _closing(nursery: trio.Nursery, *clients: Any) -> None:
    """Close the SDK clients when ``nursery`` is cancelled (their pooled connections)."""

    async def close() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                for client in clients:
                    await client.close()

    nursery.start_soon(close)


def rows(path: Path) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return {r["request_id"]: dict(r) for r in db.execute("SELECT * FROM requests")}
    finally:
        db.close()


async def test_a_client_sees_only_its_models(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeAnthropic, FakeGemini]
) -> None:
    fo, fa, fg = upstreams
    config = team_config(fo.base_url, fa.base_url, fg.base_url, tmp_path / "usage.db")
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        alice = openai.AsyncOpenAI(base_url=gateway.v1, api_key=ALICE_KEY, max_retries=0)
        bob = openai.AsyncOpenAI(base_url=gateway.v1, api_key=BOB_KEY, max_retries=0)
        claude = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=ALICE_KEY, max_retries=0)
        await _closing(nursery, alice, bob, claude)
        messages = [{"role": "user", "content": "hi"}]
        reply = await alice.chat.completions.create(model="gpt-4o-mini", messages=messages)
        assert reply.choices[0].message.content
        with pytest.raises(openai.NotFoundError) as refused:
            await alice.chat.completions.create(model="llama3.2", messages=messages)
        with pytest.raises(openai.NotFoundError) as unknown:
            await alice.chat.completions.create(model="no-such-model", messages=messages)
        # it does not learn that the model exists: the same answer as for one that does not
        assert refused.value.code == unknown.value.code == "model_not_found"
        assert refused.value.message.replace("llama3.2", "X") == unknown.value.message.replace(
            "no-such-model", "X"
        )
        assert [m.id async for m in alice.models.list()] == ["gpt-4o-mini"]
        assert [m.id async for m in bob.models.list()] == ["gpt-4o-mini", "llama3.2"]
        with pytest.raises(openai.NotFoundError):
            await alice.models.retrieve("llama3.2")
        assert (await bob.chat.completions.create(model="llama3.2", messages=messages)).id
        message = await claude.messages.create(
            model="claude-3-5-haiku-latest", max_tokens=10, messages=messages
        )
        assert message.content
        with pytest.raises(anthropic.NotFoundError):
            await claude.messages.create(model="gemini-2.0-flash", max_tokens=10, messages=messages)
        with pytest.raises(anthropic.NotFoundError):
            await claude.messages.count_tokens(model="gemini-2.0-flash", messages=messages)
        nursery.cancel_scope.cancel()
    # (the model catalog also reads glob providers' models endpoints: GETs, not counted here)
    assert len([r for r in fo.requests if r.method == "POST"]) == 2
    assert len([r for r in fa.requests if r.method == "POST"]) == 1
    assert not [r for r in fg.requests if r.method == "POST"]


async def test_request_ids_health_and_metrics(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeAnthropic, FakeGemini]
) -> None:
    fo, fa, fg = upstreams
    config = team_config(fo.base_url, fa.base_url, fg.base_url, tmp_path / "usage.db")
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as h:
        gateway = await start_gateway(nursery, config)
        health = await h.get(gateway.url + "/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert len(health.headers["x-request-id"]) == 32
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        mine = {"authorization": f"Bearer {ALICE_KEY}", "x-request-id": "my-id-1"}
        answer = await h.post(gateway.v1 + "/chat/completions", json=body, headers=mine)
        assert answer.headers["x-request-id"] == "my-id-1"
        refused = await h.post(
            gateway.v1 + "/chat/completions", json=body, headers={"authorization": "Bearer no"}
        )
        assert refused.status_code == 401
        assert len(refused.headers["x-request-id"]) == 32
        assert (await h.get(gateway.url + "/metrics")).status_code == 401
        metrics = await h.get(gateway.url + "/metrics", headers=mine)
        assert metrics.status_code == 200
        text = metrics.text
        assert (
            'proxycast_requests_total{client="alice",model="gpt-4o-mini",provider="local",'
            'status="200"} 1.0' in text
        )
        assert 'proxycast_tokens_total{client="alice",model="gpt-4o-mini"' in text
        assert 'proxycast_key_available{key="local#1",provider="local"} 1.0' in text
        assert 'proxycast_upstream_attempts_total{key="local#1",outcome="200"' in text
        for name in (
            "proxycast_cost_usd_total",
            "proxycast_request_duration_seconds_bucket",
            "proxycast_time_to_first_token_seconds_bucket",
            "proxycast_in_flight_requests",
        ):
            assert name in text
        nursery.cancel_scope.cancel()


async def test_metrics_can_be_switched_off(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeAnthropic, FakeGemini]
) -> None:
    fo, fa, fg = upstreams
    config = team_config(
        fo.base_url, fa.base_url, fg.base_url, tmp_path / "usage.db", metrics=False
    )
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as h:
        gateway = await start_gateway(nursery, config)
        mine = {"authorization": f"Bearer {ALICE_KEY}"}
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        answer = await h.post(gateway.v1 + "/chat/completions", json=body, headers=mine)
        assert answer.status_code == 200
        metrics = await h.get(gateway.url + "/metrics", headers=mine)
        assert metrics.status_code == 404
        assert "[server] metrics = false" in metrics.json()["error"]["message"]
        assert metrics.json()["error"]["type"] == "invalid_request_error"  # OpenAI's 404 type
        nursery.cancel_scope.cancel()
    rows = sqlite3.connect(tmp_path / "usage.db").execute("SELECT client, status FROM requests")
    assert rows.fetchall() == [("alice", 200)]  # the ledger does not depend on the metrics


def _tokens(row: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens, output tokens) as OpenAI counts them."""
    prompt = row["input_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"]
    return prompt, row["output_tokens"]


async def test_the_ledger_holds_what_the_upstreams_reported(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeAnthropic, FakeGemini]
) -> None:
    fo, fa, fg = upstreams
    path = tmp_path / "usage.db"
    config = team_config(fo.base_url, fa.base_url, fg.base_url, path)
    seen: dict[str, tuple[int, int]] = {}
    messages = [{"role": "user", "content": "Say hello"}]
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        client = openai.AsyncOpenAI(base_url=gateway.v1, api_key=BOB_KEY, max_retries=0)
        claude = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=BOB_KEY, max_retries=0)
        await _closing(nursery, client, claude)
        for model in ("gpt-4o-mini", "claude-sonnet-4", "gemini-2.0-flash"):
            rid = {"x-request-id": f"openai-{model}"}
            reply = await client.chat.completions.create(
                model=model, messages=messages, extra_headers=rid
            )
            assert reply.usage is not None
            seen[f"openai-{model}"] = (reply.usage.prompt_tokens, reply.usage.completion_tokens)
            # streamed without asking for usage: the client gets no usage chunk, the ledger does
            stream = await client.chat.completions.create(
                model=model,
                messages=messages,
                stream=True,
                extra_headers={"x-request-id": f"openai-{model}-stream"},
            )
            chunks = [chunk async for chunk in stream]
            assert all(chunk.choices and chunk.usage is None for chunk in chunks)
            stream = await client.chat.completions.create(
                model=model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-request-id": f"openai-{model}-stream-usage"},
            )
            chunks = [chunk async for chunk in stream]
            assert chunks[-1].usage is not None
            assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == seen[
                f"openai-{model}"
            ]
        for model in ("claude-sonnet-4", "gpt-4o-mini", "gemini-2.0-flash"):
            answer = await claude.messages.create(
                model=model,
                max_tokens=50,
                messages=messages,
                extra_headers={"x-request-id": f"anthropic-{model}"},
            )
            seen[f"anthropic-{model}"] = (
                answer.usage.input_tokens
                + (answer.usage.cache_read_input_tokens or 0)
                + (answer.usage.cache_creation_input_tokens or 0),
                answer.usage.output_tokens,
            )
            async with claude.messages.stream(
                model=model,
                max_tokens=50,
                messages=messages,
                extra_headers={"x-request-id": f"anthropic-{model}-stream"},
            ) as events:
                final = await events.get_final_message()
            assert (final.usage.input_tokens, final.usage.output_tokens) == (
                answer.usage.input_tokens,
                answer.usage.output_tokens,
            )
        # a client that leaves mid-stream: what the upstream reported until then is kept
        fa.script(AnthropicScript(pieces=20, interval=0.2))
        async with (
            httpx.AsyncClient() as h,
            h.stream(
                "POST",
                gateway.url + "/v1/messages",
                json={
                    "model": "claude-sonnet-4",
                    "max_tokens": 50,
                    "messages": messages,
                    "stream": True,
                },
                headers={"x-api-key": BOB_KEY, "x-request-id": "left"},
            ) as response,
        ):
            async for line in response.aiter_lines():
                if "content_block_delta" in line:
                    break
        with trio.fail_after(10):
            await fa.requests[-1].ended.wait()
        assert fa.requests[-1].abandoned_at is not None
        nursery.cancel_scope.cancel()  # the drain writes the buffered rows
    ledger = rows(path)
    for request_id, tokens in seen.items():
        assert min(tokens) > 0, request_id
        assert _tokens(ledger[request_id]) == tokens, request_id
        stream_rid = request_id + "-stream"
        assert _tokens(ledger[stream_rid]) == tokens, stream_rid
        assert ledger[stream_rid]["streamed"] == 1
        assert ledger[request_id]["streamed"] == 0
        assert ledger[request_id]["client"] == "bob"
        assert ledger[request_id]["status"] == 200
        assert ledger[request_id]["disconnected"] == 0
    for model in ("gpt-4o-mini", "claude-sonnet-4", "gemini-2.0-flash"):
        assert _tokens(ledger[f"openai-{model}-stream-usage"]) == seen[f"openai-{model}"]
    left = ledger["left"]
    assert left["disconnected"] == 1
    assert left["streamed"] == 1
    assert (left["input_tokens"], left["output_tokens"]) == (12, 1)  # message_start's usage
    row = ledger["openai-claude-sonnet-4"]
    assert row["provider"] == "anthropic"
    assert row["key"] == "anthropic#1"
    assert row["api"] == "openai"
    assert row["upstream_model"] == "claude-sonnet-4"
    assert row["attempts"] == "anthropic#1:200"
    assert row["ttft"] is not None
    assert row["cost_usd"] == pytest.approx(
        (row["input_tokens"] * 3.0 + row["output_tokens"] * 15.0) / 1e6
    )

    # proxycast usage --json: the ledger's sums, grouped
    config_file = tmp_path / "proxycast.toml"
    config_file.write_text(f'[ledger]\nurl = "sqlite:///{path}"\n')
    for by in ("client", "day"):
        done = await trio.run_process(
            [
                sys.executable,
                "-m",
                "proxycast",
                "usage",
                "--config",
                str(config_file),
                "--json",
                "--by",
                by,
                "--since",
                "1d",
            ],
            capture_stdout=True,
        )
        report = json.loads(done.stdout)
        assert sum(r["requests"] for r in report) == len(ledger)
        assert sum(r["input_tokens"] for r in report) == sum(_tokens(r)[0] for r in ledger.values())
        assert sum(r["output_tokens"] for r in report) == sum(
            r["output_tokens"] for r in ledger.values()
        )
        assert sum(r["cost_usd"] for r in report) == pytest.approx(
            sum(r["cost_usd"] for r in ledger.values()), abs=1e-5
        )
        assert all(
            set(r)
            == {by, "requests", "errors", "input_tokens", "output_tokens", "cost_usd", "estimated"}
            for r in report
        )
    table = await trio.run_process(
        [
            sys.executable,
            "-m",
            "proxycast",
            "usage",
            "--config",
            str(config_file),
            "--by",
            "provider",
        ],
        capture_stdout=True,
    )
    lines = table.stdout.decode().splitlines()
    assert lines[0].split() == [
        "provider",
        "requests",
        "errors",
        "input",
        "output",
        "cost",
        "(USD)",
    ]
    assert lines[-1].split()[:2] == ["total", str(len(ledger))]


async def test_every_request_to_a_model_route_is_a_ledger_row(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeAnthropic, FakeGemini]
) -> None:
    """Bad input, a model no provider serves, a client gone before its body arrived: each is a row
    with the status it was answered (499: none), so that `proxycast usage` counts a client's errors;
    a request without an accepted key is none (found by bench/chaos.py: only requests read whole
    and routed had rows)."""
    fo, fa, fg = upstreams
    path = tmp_path / "usage.db"
    config = team_config(fo.base_url, fa.base_url, fg.base_url, path)
    chat = "/v1/chat/completions"
    hi = [{"role": "user", "content": "Hi"}]
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        bob = {"authorization": f"Bearer {BOB_KEY}"}
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            sent = {
                "cut-json": await client.post(chat, content=b'{"model": "gpt', headers=bob),
                "mistyped": await client.post(
                    chat, json={"model": "gpt-4o-mini", "messages": "hello"}, headers=bob
                ),
                "no-model": await client.post(
                    chat, json={"model": "no-such-model", "messages": hi}, headers=bob
                ),
                "gemini-no-model": await client.post(
                    "/v1beta/models/no-such-model:streamGenerateContent",
                    json={"contents": "x"},
                    headers={"x-goog-api-key": BOB_KEY},
                ),
                "embed-cut": await client.post(
                    "/v1/embeddings", content=b'{"model": "gpt-4o-mini", "in', headers=bob
                ),
                "wrong-key": await client.post(
                    chat,
                    json={"model": "gpt-4o-mini", "messages": hi},
                    headers={"authorization": "Bearer nope"},
                ),
                "models-list": await client.get("/v1/models", headers=bob),
            }
            for name, answer in sent.items():
                assert answer.headers["x-request-id"], name
        # a client that sends its headers and leaves before its body
        stream = await trio.open_tcp_stream("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]))
        head = (
            f"POST {chat} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {BOB_KEY}\r\n"
            "x-request-id: left-early\r\ncontent-type: application/json\r\n"
            "content-length: 100\r\n\r\n{"
        )
        await stream.send_all(head.encode())
        await trio.sleep(0.3)
        await stream.aclose()
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()  # the drain writes the buffered rows
    db = sqlite3.connect(path)
    try:
        rows = {
            rid: rest
            for rid, *rest in db.execute(
                "SELECT request_id, client, api, model, status, error_type, streamed FROM requests"
            )
        }
    finally:
        db.close()
    ids = {name: answer.headers["x-request-id"] for name, answer in sent.items()}
    assert rows.pop(ids["cut-json"]) == ["bob", "openai", "", 400, "invalid_request", 0]
    assert rows.pop(ids["mistyped"])[2:5] == ["", 400, "invalid_request"]  # refused unread
    assert rows.pop(ids["no-model"])[2:5] == ["no-such-model", 404, "not_found"]
    assert rows.pop(ids["gemini-no-model"]) == [
        "bob", "gemini", "no-such-model", 400, "invalid_request", 1
    ]  # fmt: skip
    assert rows.pop(ids["embed-cut"])[:2] + rows.pop("left-early")[:1] == [
        "bob", "embeddings", "bob"
    ]  # fmt: skip
    assert rows == {}  # neither the wrong key nor the models list
