"""The Responses API's WebSocket mode (``GET /v1/responses`` upgraded), through the official openai
SDK's ``responses.connect()`` on every upstream kind: each ``response.create`` answered with the
events a streamed POST gives; ``previous_response_id`` from the connection without the store; one
response at a time; errors as ``error`` events; the client leaving cancels the upstream; a ledger
row per response."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
import trio
import websockets

from proxycast.config import Config, ProviderConfig, ResponsesConfig, ServerConfig
from proxycast.ledger import LedgerConfig
from proxycast.testing import (
    AnthropicScript,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    GeminiScript,
    Script,
)
from proxycast.testing import anthropic as fa
from proxycast.testing import gemini as fg
from tests.support import CLIENT_KEY, UPSTREAM_KEY, start_gateway
from tests.test_disconnect import wait_until_abandoned

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from proxycast.testing import FakeUpstream
    from tests.support import Gateway

MODEL = "the-model"
KINDS: dict[str, tuple[str, bool, Callable[[], FakeUpstream[Any]], Callable[..., Any]]] = {
    # name: (provider type, responses = true, fake, script of a text answer)
    "openai-chat": ("openai", False, FakeOpenAI, lambda t, **kw: Script(text=t, **kw)),
    "openai-responses": ("openai", True, FakeOpenAI, lambda t, **kw: Script(text=t, **kw)),
    "anthropic": (
        "anthropic",
        False,
        FakeAnthropic,
        lambda t, **kw: AnthropicScript(blocks=(fa.Text(t),), **kw),
    ),
    "gemini": (
        "gemini",
        False,
        FakeGemini,
        lambda t, **kw: GeminiScript(parts=(fg.Text(t),), **kw),
    ),
}


async def _start(
    nursery: trio.Nursery, kind: str, tmp_path: Path | None = None
) -> tuple[Gateway, FakeUpstream[Any]]:
    type_, responses, make, _ = KINDS[kind]
    fake = make()
    await nursery.start(fake.serve)
    provider = ProviderConfig(
        name="up",
        type=type_,
        base_url=fake.base_url,
        api_keys=(UPSTREAM_KEY,),
        models=(MODEL,),
        responses=responses,
    )
    extra: dict[str, Any] = {}
    if tmp_path is not None:
        extra["ledger"] = LedgerConfig(url=f"sqlite:///{tmp_path / 'usage.db'}")
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(provider,),
        responses=ResponsesConfig(store=False),  # what follows comes from the connection
        **extra,
    )
    return await start_gateway(nursery, config), fake


def _sdk(gateway: Gateway, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)


def _until_done(connection: Any) -> tuple[list[str], Any]:
    """The event types up to the response's last event, and that event."""
    types = []
    for event in connection:
        types.append(event.type)
        if event.type in ("response.completed", "response.failed", "response.incomplete", "error"):
            return types, event
    raise AssertionError(f"the connection closed after {types}")


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_two_turns_on_one_connection(nursery: trio.Nursery, kind: str) -> None:
    gateway, fake = await _start(nursery, kind)
    script = KINDS[kind][3]
    fake.script(script("One."), script("Two."))

    def talk() -> tuple[list[str], str, str]:
        with _sdk(gateway).responses.connect() as connection:
            connection.response.create(model=MODEL, input="Hi")
            types, first = _until_done(connection)
            # the connection has the first response (forwarded or not, stored or not)
            follow: dict[str, Any] = {"input": "And then?"}
            follow["previous_response_id"] = first.response.id
            connection.response.create(model=MODEL, **follow)
            _, second = _until_done(connection)
            return types, first.response.output_text, second.response.output_text

    types, one, two = await trio.to_thread.run_sync(talk)
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    assert (one, two) == ("One.", "Two.")
    # the second request carried the first turn, from the connection
    assert "Hi" in fake.requests[-1].body.decode()
    assert "One." in fake.requests[-1].body.decode()


async def test_one_response_at_a_time_and_errors_as_events(nursery: trio.Nursery) -> None:
    gateway, fake = await _start(nursery, "anthropic")
    fake.script(AnthropicScript(blocks=(fa.Text("a b c d e f"),), pieces=6, interval=0.1))

    def talk() -> tuple[Any, Any, Any]:
        with _sdk(gateway).responses.connect() as connection:
            connection.response.create(model=MODEL, input="Hi")
            connection.response.create(model=MODEL, input="Again")  # while the first streams
            seen = []
            for event in connection:
                seen.append(event)
                if event.type == "response.completed":
                    break
            busy = next(e for e in seen if e.type == "error")
            connection.response.create(model=MODEL, input="x", previous_response_id="resp_nope")
            _, unknown = _until_done(connection)
            return busy.error.code, unknown.type, unknown.error.code

    busy, kind, code = await trio.to_thread.run_sync(talk)
    assert busy == "conversation_already_has_active_response"
    assert (kind, code) == ("error", "previous_response_not_found")
    assert len(fake.requests) == 1


async def test_a_client_that_leaves_cancels_the_upstream(nursery: trio.Nursery) -> None:
    gateway, fake = await _start(nursery, "openai-chat")
    fake.script(Script(text=" ".join(["word"] * 50), interval=0.1))

    def leave() -> None:
        with _sdk(gateway).responses.connect() as connection:
            connection.response.create(model=MODEL, input="Hi")
            for event in connection:
                if event.type == "response.output_text.delta":
                    return  # closes the connection mid-stream

    await trio.to_thread.run_sync(leave)
    assert await wait_until_abandoned(fake.requests[-1]) > 0


async def test_each_response_is_a_ledger_row(nursery: trio.Nursery, tmp_path: Path) -> None:
    async with trio.open_nursery() as inner:
        gateway, fake = await _start(inner, "gemini", tmp_path)
        fake.script(GeminiScript(parts=(fg.Text("One."),)), GeminiScript(parts=(fg.Text("Two."),)))

        def talk() -> None:
            with _sdk(gateway).responses.connect() as connection:
                for text in ("Hi", "Again"):
                    connection.response.create(model=MODEL, input=text)
                    _until_done(connection)

        await trio.to_thread.run_sync(talk)
        inner.cancel_scope.cancel()
    db = sqlite3.connect(tmp_path / "usage.db")
    try:
        rows = db.execute("SELECT api, model, provider, status, streamed FROM requests").fetchall()
    finally:
        db.close()
    assert rows == [("responses", MODEL, "up", 200, 1)] * 2


class _LingeringEnd:
    """A fake's responder whose answer's end (the chunked body's last bytes) comes a second after
    its last event, as a slow upstream's may."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def end(self) -> None:
        await trio.sleep(1)
        await self._inner.end()


class _Lingering(FakeOpenAI):
    async def _handle(self, request: Any, respond: Any) -> None:
        await super()._handle(request, _LingeringEnd(respond))  # type: ignore[arg-type]


@pytest.mark.parametrize("responses", [True, False], ids=["forwarded", "converted"])
async def test_a_client_leaving_after_the_last_event_got_it_all(
    tmp_path: Path, responses: bool
) -> None:
    """The response is over at its last event, for the ledger too: a client that closes the
    connection at response.completed, while the gateway still reads the upstream's end, is not
    recorded as disconnected (found by bench/chaos.py)."""
    ledger = tmp_path / "usage.db"
    async with trio.open_nursery() as inner:
        fake = _Lingering()
        await inner.start(fake.serve)
        provider = ProviderConfig(
            name="up", type="openai", base_url=fake.base_url, api_keys=(UPSTREAM_KEY,),
            models=(MODEL,), responses=responses,
        )  # fmt: skip
        config = Config(
            server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
            providers=(provider,),
            responses=ResponsesConfig(store=False),
            ledger=LedgerConfig(url=f"sqlite:///{ledger}"),
        )
        gateway = await start_gateway(inner, config)

        def talk() -> str:
            with _sdk(gateway).responses.connect() as connection:
                connection.response.create(model=MODEL, input="Hi")
                return str(_until_done(connection)[1].type)  # and closes at once

        assert await trio.to_thread.run_sync(talk) == "response.completed"
        with trio.fail_after(10):
            await fake.requests[-1].ended.wait()
        inner.cancel_scope.cancel()
    db = sqlite3.connect(ledger)
    try:
        rows = db.execute("SELECT status, disconnected FROM requests").fetchall()
    finally:
        db.close()
    assert rows == [(200, 0)]


async def test_the_handshake_needs_a_key(nursery: trio.Nursery) -> None:
    gateway, _ = await _start(nursery, "openai-chat")

    def connect() -> int:
        try:
            with _sdk(gateway, key="not-a-key").responses.connect() as connection:
                connection.response.create(model=MODEL, input="Hi")
                _until_done(connection)
        except websockets.exceptions.InvalidStatus as refused:
            return refused.response.status_code
        return 0

    assert await trio.to_thread.run_sync(connect) == 401


async def test_a_key_revoked_while_its_connection_is_open_is_refused(
    nursery: trio.Nursery,
) -> None:
    """Each response is its own request: a key revoked (or expired) since the handshake gets an
    ``error`` event, and the upstream is not called. It was served as the gateway's own unnamed
    client instead: no model allowlist, no limits, its usage under ``-``."""
    gateway, fake = await _start(nursery, "openai-chat")
    fake.script(Script(text="One."), Script(text="Two."))
    admin = {"authorization": f"Bearer {CLIENT_KEY}"}

    def talk() -> tuple[str, Any]:
        with httpx.Client(base_url=gateway.url + "/admin", headers=admin) as http:
            key = http.post("/keys", json={"name": "kim", "models": [MODEL]}).json()["key"]
            with _sdk(gateway, key).responses.connect() as connection:
                connection.response.create(model=MODEL, input="Hi")
                _, first = _until_done(connection)
                assert http.delete("/keys/kim").status_code == 200
                connection.response.create(model=MODEL, input="Again")
                _, second = _until_done(connection)
        return first.type, second

    first, second = await trio.to_thread.run_sync(talk)
    assert first == "response.completed"
    assert second.type == "error"
    assert second.error.code == "invalid_api_key"
    assert len(fake.requests) == 1
