"""Agent routing through the real server: ``[[routes]]`` rules by what a request is, the selection
strategies among a model's providers and keys, and session affinity. The fakes record every request:
which model and which key each went to is what the tests read."""

from __future__ import annotations

import base64
import sqlite3
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import httpx
import openai
import pytest
import trio

from proxycast.config import (
    Config,
    ModelRouting,
    ProviderConfig,
    RouteMatch,
    RouteRule,
    RoutingConfig,
    ServerConfig,
)
from proxycast.core.rules import recorded_session
from proxycast.core.selection import Selector
from proxycast.errors import ConfigError
from proxycast.ledger import LedgerConfig
from proxycast.state import StateConfig
from proxycast.testing import AnthropicScript, FakeAnthropic, FakeOpenAI, Script
from proxycast.testing import anthropic as fa
from tests.support import CLIENT_KEY, npm_client, start_gateway
from tests.test_claude_code import CLIENT_DIR as CC_DIR
from tests.test_claude_code import claude_env

if TYPE_CHECKING:
    from pathlib import Path

    from tests.redis_server import RedisServer

KEYS = tuple(f"sk-key-{n}-{'x' * 20}" for n in range(4))
HI = [{"role": "user", "content": "Hi"}]
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d49484452")).decode()


def key_of(request: Any) -> str:
    return str(request.headers.get("authorization", "")).removeprefix("Bearer ")


def provider(name: str, fake: FakeOpenAI, models: tuple[str, ...], keys: int = 1) -> ProviderConfig:
    return ProviderConfig(
        name=name, type="openai", base_url=fake.base_url, api_keys=KEYS[:keys], models=models
    )


def configured(
    *providers: ProviderConfig,
    routes: tuple[RouteRule, ...] = (),
    ledger: Path | None = None,
    **routing: Any,
) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=providers,
        routes=routes,
        routing=RoutingConfig(**routing),
        ledger=LedgerConfig(url=f"sqlite:///{ledger}" if ledger else "off"),
    )


async def fake(nursery: trio.Nursery, default: Script | None = None) -> FakeOpenAI:
    upstream = FakeOpenAI(default)
    await nursery.start(upstream.serve)
    return upstream


RULES = (
    RouteRule(
        name="background",
        match=RouteMatch(inbound="anthropic", model="claude-*haiku*"),
        target="local/cheap",
    ),
    RouteRule(name="haiku", match=RouteMatch(model="claude-*haiku*"), target="local/small"),
    RouteRule(name="thinking", match=RouteMatch(thinking=True), target="local/strong"),
    RouteRule(name="long-context", match=RouteMatch(min_input_tokens=2000), target="local/long"),
    RouteRule(name="search", match=RouteMatch(tools=("web_search",)), target="local/searcher"),
    RouteRule(name="images", match=RouteMatch(images=True), target="local/vision"),
    RouteRule(name="red-team", match=RouteMatch(header={"X-Team": "red"}), target="local/red"),
    RouteRule(name="streams", match=RouteMatch(stream=True), target="local/streamer"),
)
"""One rule per trait; each case below matches exactly one of them (or none)."""

IMAGE_URL = f"data:image/png;base64,{PNG}"

# per client: how a request with one trait looks (the others left out)
TRAITS: dict[str, dict[str | None, dict[str, Any]]] = {
    "openai": {
        "haiku": {"model": "claude-haiku-4-5"},
        "thinking": {"reasoning_effort": "high"},
        "long-context": {"messages": [{"role": "user", "content": "word " * 3000}]},
        "search": {"web_search_options": {}},
        "images": {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": IMAGE_URL}}],
                }
            ]
        },
        "red-team": {},
        "streams": {"stream": True},
        None: {},
    },
    "anthropic": {
        "background": {"model": "claude-haiku-4-5"},
        "thinking": {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 4096},
        "long-context": {"messages": [{"role": "user", "content": "word " * 3000}]},
        "search": {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "images": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        }
                    ],
                }
            ]
        },
        "red-team": {},
        "streams": {"stream": True},
        None: {},
    },
    "responses": {
        "haiku": {"model": "claude-haiku-4-5"},
        "thinking": {"reasoning": {"effort": "high"}},
        "long-context": {"input": "word " * 3000},
        "search": {"tools": [{"type": "web_search"}]},
        "images": {
            "input": [
                {"role": "user", "content": [{"type": "input_image", "image_url": IMAGE_URL}]}
            ]
        },
        "red-team": {},
        "streams": {"stream": True},
        None: {},
    },
}
PATHS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "responses": "/v1/responses",
}
BASE: dict[str, dict[str, Any]] = {
    "openai": {"model": "gpt-4o", "messages": HI},
    "anthropic": {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": HI},
    "responses": {"model": "gpt-4o", "input": "hi"},
}


@pytest.mark.parametrize("api", ["openai", "anthropic", "responses"])
async def test_each_trait_routes_as_configured(nursery: trio.Nursery, api: str) -> None:
    upstream = await fake(nursery)
    gateway = await start_gateway(
        nursery, configured(provider("local", upstream, ("*",)), routes=RULES)
    )
    targets = {rule.name: rule.target.removeprefix("local/") for rule in RULES}
    async with httpx.AsyncClient(timeout=30) as client:
        for rule, extra in TRAITS[api].items():
            headers = {"authorization": f"Bearer {CLIENT_KEY}", "anthropic-version": "2023-06-01"}
            if rule == "red-team":
                headers["x-team"] = "red"
            body = {**BASE[api], **extra}
            answer = await client.post(gateway.url + PATHS[api], json=body, headers=headers)
            assert answer.status_code == 200, (rule, answer.text)
            asked = upstream.requests[-1].json()["model"]
            assert answer.headers.get("x-proxycast-route") == rule, (api, rule)
            assert asked == (body["model"] if rule is None else targets[rule]), (api, rule)


async def test_a_rule_is_in_the_ledger_and_on_errors(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream = await fake(nursery)
    ledger = tmp_path / "usage.db"
    config = configured(
        provider("local", upstream, ("*",)),
        routes=(RouteRule(name="to-cheap", match=RouteMatch(model="big"), target="local/cheap"),),
        ledger=ledger,
        retries=0,
    )
    upstream.script(Script(), Script(status=400, error_message="no"))
    async with trio.open_nursery() as inner:
        gateway = await start_gateway(inner, config)
        async with httpx.AsyncClient() as client:
            headers = {
                "authorization": f"Bearer {CLIENT_KEY}",
                "x-claude-code-session-id": "session-one",
            }
            body = {"model": "big", "messages": HI}
            ok = await client.post(gateway.v1 + "/chat/completions", json=body, headers=headers)
            bad = await client.post(gateway.v1 + "/chat/completions", json=body, headers=headers)
            mail = {"model": "small", "messages": HI, "user": "ann@example.com"}
            await client.post(
                gateway.v1 + "/chat/completions",
                json=mail,
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
            )
        inner.cancel_scope.cancel()
    assert ok.headers["x-proxycast-route"] == "to-cheap"
    assert bad.status_code == 400
    assert bad.headers["x-proxycast-route"] == "to-cheap"  # the error says which rule too
    db = sqlite3.connect(ledger)
    stored = db.execute(
        "SELECT model, upstream_model, route, session, status FROM requests"
    ).fetchall()
    assert sorted(stored) == sorted(
        [
            ("big", "cheap", "to-cheap", "session-one", 200),
            ("big", "cheap", "to-cheap", "session-one", 400),
            ("small", "small", "", recorded_session("ann@example.com"), 200),
        ]
    )
    assert "ann" not in recorded_session("ann@example.com")


def test_rules_and_weights_are_checked() -> None:
    from proxycast.config import check_config

    local = ProviderConfig(
        name="local", type="openai", base_url="http://127.0.0.1:1/v1", models=("m",)
    )
    with pytest.raises(ConfigError, match=r"routes\[0\].target: 'nowhere' routes nowhere"):
        check_config(Config(providers=(local,), routes=(RouteRule(name="r", target="nowhere"),)))
    with pytest.raises(ConfigError, match=r"routes\[0\].match.inbound"):
        check_config(
            Config(
                providers=(local,),
                routes=(RouteRule(name="r", match=RouteMatch(inbound="soap"), target="m"),),
            )
        )
    with pytest.raises(ConfigError, match=r"routing.weights.other: no provider is named 'other'"):
        check_config(Config(providers=(local,), routing=RoutingConfig(weights={"other": 2})))


async def test_weighted_follows_the_weights(nursery: trio.Nursery) -> None:
    heavy, light = await fake(nursery), await fake(nursery)
    config = configured(
        provider("heavy", heavy, ("m",)),
        provider("light", light, ("m",), keys=2),
        strategy="weighted",
        weights={"heavy": 3, "light#2": 0},  # light's second key gets nothing
    )
    gateway = await start_gateway(nursery, config)
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as client:
        for _ in range(300):
            await client.chat.completions.create(model="m", messages=HI)
    assert len(heavy.requests) == pytest.approx(225, rel=0.1)
    assert len(light.requests) == pytest.approx(75, rel=0.1)
    assert {key_of(r) for r in light.requests} == {KEYS[0]}


async def test_least_busy_avoids_a_slow_upstream(nursery: trio.Nursery) -> None:
    slow = await fake(nursery, Script(headers_delay=0.5))
    quick = await fake(nursery)
    gateway = await start_gateway(
        nursery,
        configured(
            provider("slow", slow, ("m",)), provider("quick", quick, ("m",)), strategy="least-busy"
        ),
    )
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as client:

        async def one() -> None:
            for _ in range(5):
                await client.chat.completions.create(model="m", messages=HI)

        async with trio.open_nursery() as clients:
            for _ in range(4):
                clients.start_soon(one)
    # the slow one holds its requests in flight: the quick one takes the most of the 20
    assert len(slow.requests) + len(quick.requests) == 20
    assert len(quick.requests) > 2 * len(slow.requests)


async def test_latency_avoids_a_slow_upstream_and_explores(nursery: trio.Nursery) -> None:
    slow = await fake(nursery, Script(headers_delay=0.2))
    quick = await fake(nursery)
    settings = {"m": ModelRouting(strategy="latency")}  # the per-model setting
    gateway = await start_gateway(
        nursery,
        configured(
            provider("slow", slow, ("m",)), provider("quick", quick, ("m",)), models=settings
        ),
    )
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as client:
        for _ in range(40):
            await client.chat.completions.create(model="m", messages=HI)
    # each measured once, then the quick one; one request in 20 measures the slow one again
    assert 2 <= len(slow.requests) <= 4
    assert len(quick.requests) >= 36


async def test_a_session_keeps_to_its_key_and_moves_when_it_cools(nursery: trio.Nursery) -> None:
    upstream = await fake(nursery)
    gateway = await start_gateway(
        nursery, configured(provider("local", upstream, ("m",), keys=4), affinity="session")
    )
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as client:

        async def turns(session: str, count: int) -> list[str]:
            keys = []
            for _ in range(count):
                await client.chat.completions.create(
                    model="m", messages=HI, extra_headers={"x-claude-code-session-id": session}
                )
                keys.append(key_of(upstream.requests[-1]))
            return keys

        first = await turns("alpha", 20)
        assert len(set(first)) == 1  # 20 turns, one key
        spread = []
        for _ in range(8):  # no session: round robin over the four keys
            await client.chat.completions.create(model="m", messages=HI)
            spread.append(key_of(upstream.requests[-1]))
        assert len(set(spread)) == 4
        upstream.script(Script(status=429, headers=(("retry-after", "60"),)))
        moved = await turns("alpha", 5)  # its key answers 429 and cools: the session moves
        assert key_of(upstream.requests[-6]) == first[0]  # the 429
        assert len(set(moved)) == 1
        assert moved[0] != first[0]


async def test_without_affinity_a_session_spreads(nursery: trio.Nursery) -> None:
    upstream = await fake(nursery)
    gateway = await start_gateway(nursery, configured(provider("local", upstream, ("m",), keys=4)))
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as client:
        for _ in range(8):
            await client.chat.completions.create(
                model="m", messages=HI, extra_headers={"x-claude-code-session-id": "alpha"}
            )
    assert len(Counter(key_of(r) for r in upstream.requests)) == 4


async def test_a_session_keeps_to_its_key_across_instances_with_redis(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    upstream = await fake(nursery)
    config = attrs.evolve(
        configured(provider("local", upstream, ("m",), keys=4), affinity="session"),
        state=StateConfig(redis_url=redis_server.url),
    )
    one, two = await start_gateway(nursery, config), await start_gateway(nursery, config)
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "x-claude-code-session-id": "beta"}
    body = {"model": "m", "messages": HI}
    async with httpx.AsyncClient() as client:
        for gateway in (two, two):  # the second instance's rotation is past the first key
            await client.post(gateway.v1 + "/chat/completions", json={**body, "user": "x"})
        first = await client.post(one.v1 + "/chat/completions", json=body, headers=headers)
        assert first.status_code == 200
        stuck = key_of(upstream.requests[-1])
        with trio.fail_after(10):  # written with the first instance's next batch
            while not redis_server.client().keys("*:s}:*"):  # noqa: ASYNC110 - in Redis
                await trio.sleep(0.05)
        for gateway in (two, one) * 5:
            answer = await client.post(gateway.v1 + "/chat/completions", json=body, headers=headers)
            assert answer.status_code == 200
            assert key_of(upstream.requests[-1]) == stuck


async def test_claude_code_haiku_requests_go_where_the_rule_sends_them(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The real Claude Code CLI: its small/fast model (the one it uses for background work) is
    routed by a rule to a second provider, its main model stays on the first."""
    claude = npm_client(CC_DIR, "claude", "Claude Code")
    main = FakeAnthropic(AnthropicScript(blocks=(fa.Text("from the main provider"),)))
    cheap = await fake(nursery, Script(text="from the cheap provider"))
    await nursery.start(main.serve)
    config = configured(
        ProviderConfig(
            name="anthropic",
            type="anthropic",
            base_url=main.base_url,
            api_keys=(KEYS[0],),
            models=("claude-*",),
        ),
        provider("local", cheap, ("qwen*",)),
        routes=(
            RouteRule(
                name="background",
                match=RouteMatch(inbound="anthropic", model="claude-*haiku*"),
                target="local/qwen3-coder",
            ),
        ),
    )
    gateway = await start_gateway(nursery, config)
    home = tmp_path / "home"
    home.mkdir()
    outputs = []
    for model in ("claude-haiku-4-5", None):
        with trio.fail_after(90):
            result = await trio.run_process(
                [str(claude), "-p", "Say hi", *(("--model", model) if model else ())],
                cwd=tmp_path,
                env=claude_env(gateway.url, CLIENT_KEY, home),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert result.returncode == 0, result.stderr.decode()
        outputs.append(result.stdout.decode())
    assert "from the cheap provider" in outputs[0]
    assert "from the main provider" in outputs[1]
    assert [r.json()["model"] for r in cheap.requests] == ["qwen3-coder"]
    assert all("haiku" not in r.json()["model"] for r in main.requests if r.method == "POST")


async def test_a_rules_model_is_listed_for_claude_codes_model_picker(nursery: trio.Nursery) -> None:
    upstream = await fake(nursery)
    config = attrs.evolve(
        configured(
            provider("local", upstream, ("qwen3-coder", "claude-*")),
            routes=(
                RouteRule(name="fast", match=RouteMatch(model="claude-fast"), target="qwen3-coder"),
                RouteRule(
                    name="any-haiku", match=RouteMatch(model="claude-*haiku*"), target="qwen3-coder"
                ),
            ),
        ),
        aliases={"claude-local": "local/qwen3-coder"},
    )
    gateway = await start_gateway(nursery, config)
    # Claude Code with CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY=1 reads this (Anthropic's shape)
    async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY) as client:
        listed = [model.id async for model in client.models.list()]
    assert {"qwen3-coder", "claude-local", "claude-fast"} <= set(listed)
    assert not any("*" in name for name in listed)  # a glob is no model's name


def test_a_reload_keeps_the_sessions_keys() -> None:
    selector = Selector(RoutingConfig(affinity="session"), time.monotonic)
    selector.remember("m", "s1", ("local", 2))
    reloaded = selector.reconfigured(RoutingConfig(affinity="session", strategy="least-busy"))
    assert reloaded.rank("m", [("local", 0), ("local", 2)], "s1")[0] == ("local", 2)
    assert reloaded.settings("m").strategy == "least-busy"
