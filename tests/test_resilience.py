"""Resilience through the real server: key pools that skip and heal, retries before the first byte,
fallbacks across formats, everything cooling, hedging; the fakes count every request."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anthropic
import attrs
import httpx
import openai
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from proxycast.config import Config, ProviderConfig, RoutingConfig, ServerConfig
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
from tests.support import CLIENT_KEY, start_gateway

if TYPE_CHECKING:
    from proxycast.testing import FakeUpstream
    from tests.support import Gateway

KEYS = ("sk-key-one-aaaaaaaaaaaaaaaa", "sk-key-two-bbbbbbbbbbbbbbbb", "sk-key-three-cccccccccccccc")
HI = [{"role": "user", "content": "Hi"}]


@attrs.define
class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def provider(
    name: str, type_: str, fake: FakeUpstream[Any], models: tuple[str, ...], keys: int = 1
) -> ProviderConfig:
    return ProviderConfig(
        name=name, type=type_, base_url=fake.base_url, api_keys=KEYS[:keys], models=models
    )


def config(
    *providers: ProviderConfig, fallbacks: dict[str, tuple[str, ...]] | None = None, **routing: Any
) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=providers,
        routing=RoutingConfig(**routing),
        fallbacks=fallbacks or {},
    )


def key_of(request: Any) -> str:
    headers: dict[str, str] = request.headers
    value = headers.get("authorization", "").removeprefix("Bearer ") or headers.get("x-api-key", "")
    return value or headers.get("x-goog-api-key", "")


async def started(nursery: trio.Nursery, fake: FakeUpstream[Any]) -> FakeUpstream[Any]:
    await nursery.start(fake.serve)
    return fake


def openai_client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


async def test_a_rate_limited_key_sits_out_and_comes_back(nursery: trio.Nursery) -> None:
    fake = await started(nursery, FakeOpenAI())
    clock = FakeClock()
    gateway = await start_gateway(
        nursery, config(provider("local", "openai", fake, ("m",), keys=2)), clock
    )
    fake.script(Script(status=429, headers=(("retry-after", "20"),)), Script(text="from key two"))
    async with openai_client(gateway) as client:
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=HI)
        assert raw.parse().choices[0].message.content == "from key two"
        assert raw.headers["x-proxycast-provider"] == "local"
        assert [key_of(r) for r in fake.requests] == [KEYS[0], KEYS[1]]  # retried on the next key
        await client.chat.completions.create(model="m", messages=HI)
        assert key_of(fake.requests[-1]) == KEYS[1]  # key one still sits out: no request to it
        clock.advance(21)  # its Retry-After is over
        await client.chat.completions.create(model="m", messages=HI)
        await client.chat.completions.create(model="m", messages=HI)
    assert {key_of(r) for r in fake.requests[-2:]} == {KEYS[0], KEYS[1]}  # back in rotation
    assert len(fake.requests) == 5


async def test_a_later_failure_never_shortens_a_cooldown(nursery: trio.Nursery) -> None:
    fake = await started(nursery, FakeOpenAI())
    clock = FakeClock()
    gateway = await start_gateway(
        nursery, config(provider("local", "openai", fake, ("m",)), retries=0, cooldown=5), clock
    )
    fake.script(Script(status=429, headers=(("retry-after", "100"),)))
    async with openai_client(gateway) as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="m", messages=HI)
        clock.advance(50)
        with pytest.raises(openai.RateLimitError) as info:  # still cooling: no upstream call
            await client.chat.completions.create(model="m", messages=HI)
    assert len(fake.requests) == 1
    assert info.value.response.headers["retry-after"] == "50"


async def test_a_refused_key_is_benched_and_reported_by_label(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    fake = await started(nursery, FakeOpenAI())
    gateway = await start_gateway(
        nursery, config(provider("local", "openai", fake, ("m",), keys=2)), FakeClock()
    )
    fake.script(Script(status=401, error_message=f"bad key {KEYS[0]}"))
    with caplog.at_level(logging.WARNING, logger="proxycast"):
        async with openai_client(gateway) as client:
            answer = await client.chat.completions.create(model="m", messages=HI)
            await client.chat.completions.create(model="m", messages=HI)
    assert answer.choices[0].message.content
    assert [key_of(r) for r in fake.requests] == [KEYS[0], KEYS[1], KEYS[1]]
    assert "local#1" in caplog.text
    assert all(key not in caplog.text for key in KEYS)


async def test_retry_count_is_exact_and_the_attempts_are_listed(nursery: trio.Nursery) -> None:
    fake = await started(nursery, FakeOpenAI())
    gateway = await start_gateway(
        nursery, config(provider("local", "openai", fake, ("m",), keys=3), retries=2), FakeClock()
    )
    fake.script(*[Script(status=500, error_message="boom")] * 5)
    async with openai_client(gateway) as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="m", messages=HI)
    assert len(fake.requests) == 3
    assert "local#1: 500, local#2: 500, local#3: 500" in info.value.message


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_the_clients_own_errors_are_never_retried(nursery: trio.Nursery, status: int) -> None:
    fake = await started(nursery, FakeOpenAI())
    gateway = await start_gateway(
        nursery, config(provider("local", "openai", fake, ("m",), keys=2)), FakeClock()
    )
    fake.script(Script(status=status))
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.v1 + "/chat/completions",
            json={"model": "m", "messages": HI},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert response.status_code == status
    assert len(fake.requests) == 1


async def test_everything_cooling_after_429s_is_a_429_without_an_upstream_call(
    nursery: trio.Nursery,
) -> None:
    fake = await started(nursery, FakeOpenAI())
    clock = FakeClock()
    gateway = await start_gateway(
        nursery, config(provider("local", "openai", fake, ("m",)), cooldown=30), clock
    )
    fake.script(Script(status=429))  # the upstream's own rate limit rests the key
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0
    ) as client:
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model="m", max_tokens=10, messages=HI)
        clock.advance(10)
        with pytest.raises(anthropic.RateLimitError) as info:
            await client.messages.create(model="m", max_tokens=10, messages=HI)
    assert len(fake.requests) == 1
    assert info.value.response.headers["retry-after"] == "20"
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_everything_resting_after_server_errors_is_a_503(nursery: trio.Nursery) -> None:
    fake = await started(nursery, FakeOpenAI())
    clock = FakeClock()
    gateway = await start_gateway(
        nursery,
        config(provider("local", "openai", fake, ("m",)), cooldown=30, consecutive_fails=1),
        clock,
    )
    fake.script(Script(status=500))  # one server error rests the key (consecutive_fails = 1)
    async with openai_client(gateway) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
        clock.advance(10)
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
    assert len(fake.requests) == 1
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"] == "20"
    assert "local#1: upstream 500" in info.value.message


def closed_port() -> str:
    """A loopback URL nothing listens on (the port was just free)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_everything_resting_after_no_connection_is_a_503_in_every_dialect(
    nursery: trio.Nursery,
) -> None:
    # A wrong base_url: the first request learns it (502), the next ones are told the service is
    # unavailable and why, in their own dialect, without a connection attempt, never "rate limit".
    clock = FakeClock()
    unreachable = ProviderConfig(
        name="local", type="openai", base_url=closed_port(), api_keys=KEYS[:1], models=("m",)
    )
    gateway = await start_gateway(nursery, config(unreachable, cooldown=30), clock)
    bearer = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient() as client:
        first = await client.post(
            gateway.v1 + "/chat/completions", json={"model": "m", "messages": HI}, headers=bearer
        )
        assert first.status_code == 502
        clock.advance(5)
        chat = await client.post(
            gateway.v1 + "/chat/completions", json={"model": "m", "messages": HI}, headers=bearer
        )
        messages = await client.post(
            gateway.v1 + "/messages",
            json={"model": "m", "max_tokens": 5, "messages": HI},
            headers={"x-api-key": CLIENT_KEY},
        )
        responses = await client.post(
            gateway.v1 + "/responses", json={"model": "m", "input": "Hi"}, headers=bearer
        )
        gemini = await client.post(
            gateway.url + "/v1beta/models/m:generateContent",
            json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
            headers={"x-goog-api-key": CLIENT_KEY},
        )
    why = "local#*: unreachable (connection refused)"
    for answer in (chat, messages, responses, gemini):
        assert answer.headers["retry-after"] == "25"
        assert why in answer.text
        assert "rate" not in answer.text.lower()
    assert chat.status_code == responses.status_code == gemini.status_code == 503
    assert chat.json()["error"]["type"] == "server_error"
    assert responses.json()["error"]["type"] == "server_error"
    assert gemini.json()["error"]["status"] == "UNAVAILABLE"
    # Anthropic's dialect says 503 as Anthropic does: 529 overloaded_error, which its SDKs retry
    assert messages.status_code == 529
    assert messages.json()["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_client_claude_to_gemini_to_local(nursery: trio.Nursery, stream: bool) -> None:
    claude = await started(nursery, FakeAnthropic())
    gemini = await started(nursery, FakeGemini())
    local = await started(nursery, FakeOpenAI())
    gateway = await start_gateway(
        nursery,
        config(
            provider("anthropic", "anthropic", claude, ("claude-x",)),
            provider("gemini", "gemini", gemini, ("gemini-y",)),
            provider("local", "openai", local, ("llama",)),
            fallbacks={"claude-x": ("gemini-y", "local/llama")},
        ),
        FakeClock(),
    )
    claude.script(AnthropicScript(status=529, error_type="overloaded_error"))
    gemini.script(GeminiScript(status=503, error_status="UNAVAILABLE"))
    local.script(Script(text="local answers", chunks=3))
    async with openai_client(gateway) as client:
        if stream:
            text = ""
            async with await client.chat.completions.create(
                model="claude-x", messages=HI, stream=True
            ) as chunks:
                async for chunk in chunks:
                    assert chunk.model == "claude-x"
                    text += "".join(c.delta.content or "" for c in chunk.choices)
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model="claude-x", messages=HI
            )
            answer = raw.parse()
            assert answer.model == "claude-x"
            assert raw.headers["x-proxycast-provider"] == "local"
            text = answer.choices[0].message.content or ""
    assert text == "local answers"
    assert (len(claude.requests), len(gemini.requests), len(local.requests)) == (1, 1, 1)
    assert local.requests[0].json()["model"] == "llama"


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_client_local_to_claude(nursery: trio.Nursery, stream: bool) -> None:
    local = await started(nursery, FakeOpenAI())
    claude = await started(nursery, FakeAnthropic())
    gateway = await start_gateway(
        nursery,
        config(
            provider("local", "openai", local, ("llama",)),
            provider("anthropic", "anthropic", claude, ("claude-x",)),
            fallbacks={"*": ("claude-x",)},
        ),
        FakeClock(),
    )
    local.script(Script(status=502))
    claude.script(AnthropicScript(blocks=(fa.Text("Claude answers"),)))
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0
    ) as client:
        message: Any
        if stream:
            async with client.messages.stream(model="llama", max_tokens=10, messages=HI) as events:
                message = await events.get_final_message()
        else:
            message = await client.messages.create(model="llama", max_tokens=10, messages=HI)
    assert message.model == "llama"
    assert message.content[0].text == "Claude answers"  # type: ignore[union-attr]
    assert (len(local.requests), len(claude.requests)) == (1, 1)


async def test_an_overload_before_content_is_retried_and_one_after_is_not(
    nursery: trio.Nursery,
) -> None:
    claude = await started(nursery, FakeAnthropic())
    gemini = await started(nursery, FakeGemini())
    clock = FakeClock()
    gateway = await start_gateway(
        nursery,
        config(
            provider("anthropic", "anthropic", claude, ("claude-x",)),
            provider("gemini", "gemini", gemini, ("gemini-y",)),
            fallbacks={"claude-x": ("gemini-y",)},
        ),
        clock,
    )
    # early: `event: error` right after message_start, inside a 200 stream
    claude.script(AnthropicScript(error_after=1))
    gemini.script(GeminiScript(parts=(fg.Text("Gemini answers"),)))
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0
    ) as client:
        async with client.messages.stream(model="claude-x", max_tokens=10, messages=HI) as events:
            message = await events.get_final_message()
        assert message.content[0].text == "Gemini answers"  # type: ignore[union-attr]
        assert (len(claude.requests), len(gemini.requests)) == (1, 1)
        clock.advance(31)  # the overloaded key's cooldown is over
        # late: after the first text delta the client has content: an error event, no retry
        claude.script(
            AnthropicScript(blocks=(fa.Text("Hello there friend"),), pieces=3, error_after=4)
        )
        with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
            async with client.messages.stream(
                model="claude-x", max_tokens=10, messages=HI
            ) as events:
                await events.get_final_message()
    assert (len(claude.requests), len(gemini.requests)) == (2, 1)


async def test_an_unreachable_provider_is_benched_and_its_fallback_serves(
    nursery: trio.Nursery,
) -> None:
    with trio.socket.socket() as s:  # a port nobody listens on
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    local = await started(nursery, FakeOpenAI())
    dead = ProviderConfig(
        name="dead", type="openai", base_url=f"http://127.0.0.1:{port}/v1", models=("m",)
    )
    gateway = await start_gateway(
        nursery,
        config(
            dead, provider("local", "openai", local, ("llama",)), fallbacks={"m": ("local/llama",)}
        ),
        FakeClock(),
    )
    async with openai_client(gateway) as client:
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(model="m", messages=HI)
            assert raw.headers["x-proxycast-provider"] == "local"
    assert len(local.requests) == 3


async def test_a_model_listed_by_several_providers_rotates_over_them(nursery: trio.Nursery) -> None:
    one, two = await started(nursery, FakeOpenAI()), await started(nursery, FakeOpenAI())
    gateway = await start_gateway(
        nursery,
        config(provider("one", "openai", one, ("m",)), provider("two", "openai", two, ("m",))),
        FakeClock(),
    )
    async with openai_client(gateway) as client:
        served = [
            (
                await client.chat.completions.with_raw_response.create(model="m", messages=HI)
            ).headers["x-proxycast-provider"]
            for _ in range(4)
        ]
    assert served == ["one", "two", "one", "two"]


@pytest.mark.parametrize("stream", [False, True])
async def test_hedging_starts_a_second_attempt_and_cancels_the_loser(
    nursery: trio.Nursery, stream: bool
) -> None:
    slow, fast = await started(nursery, FakeOpenAI()), await started(nursery, FakeOpenAI())
    gateway = await start_gateway(
        nursery,
        config(
            provider("slow", "openai", slow, ("m",)),
            provider("fast", "openai", fast, ("fast-m",)),
            fallbacks={"m": ("fast-m",)},
            hedge_after=0.2,
        ),
        FakeClock(),
    )
    slow.script(Script(headers_delay=30))
    fast.script(Script(text="fast answers", chunks=2))
    async with openai_client(gateway) as client:
        with trio.fail_after(10):
            if stream:
                async with await client.chat.completions.create(
                    model="m", messages=HI, stream=True
                ) as chunks:
                    text = "".join(
                        [c.choices[0].delta.content or "" async for c in chunks if c.choices]
                    )
            else:
                answer = await client.chat.completions.create(model="m", messages=HI)
                text = answer.choices[0].message.content or ""
            answered_at = trio.current_time()
            (loser,) = slow.requests
            await loser.ended.wait()
    assert text == "fast answers"
    assert loser.abandoned_at is not None
    print(f"hedge loser closed {(loser.abandoned_at - answered_at) * 1000:.2f} ms after the answer")
    assert loser.abandoned_at - answered_at < 1.0  # generous here; bench/ measures it


async def test_a_client_that_leaves_cancels_every_hedged_attempt(nursery: trio.Nursery) -> None:
    one, two = await started(nursery, FakeOpenAI()), await started(nursery, FakeOpenAI())
    gateway = await start_gateway(
        nursery,
        config(
            provider("one", "openai", one, ("m",)),
            provider("two", "openai", two, ("n",)),
            fallbacks={"m": ("n",)},
            hedge_after=0.1,
        ),
        FakeClock(),
    )
    one.script(Script(headers_delay=30))
    two.script(Script(headers_delay=30))
    async with httpx.AsyncClient() as client, trio.open_nursery() as inner:

        async def ask() -> None:
            await client.post(
                gateway.v1 + "/chat/completions",
                json={"model": "m", "messages": HI},
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
            )

        inner.start_soon(ask)
        await one.wait_for_requests(1)
        await two.wait_for_requests(1)
        inner.cancel_scope.cancel()
    with trio.fail_after(5):
        await one.requests[0].ended.wait()
        await two.requests[0].ended.wait()
    assert one.requests[0].abandoned_at is not None
    assert two.requests[0].abandoned_at is not None


OUTCOMES = st.sampled_from(["ok", "429", "500", "503", "400", "early-error", "late-error"])


def script_for(outcome: str) -> Script:
    if outcome == "ok":
        return Script(text="fine", chunks=2)
    if outcome == "early-error":
        return Script(text="fine", chunks=2, error_after=0)
    if outcome == "late-error":
        return Script(text="fine", chunks=3, error_after=2)
    return Script(status=int(outcome), error_message=f"failed {outcome}")


@settings(max_examples=25)
@given(
    outcomes=st.lists(OUTCOMES, min_size=1, max_size=5),
    retries=st.integers(0, 3),
    stream=st.booleans(),
)
async def test_any_sequence_of_outcomes_gives_one_answer_or_one_error(
    outcomes: list[str], retries: int, stream: bool
) -> None:
    async with trio.open_nursery() as servers:  # a fresh gateway and fakes per example
        fakes = [FakeOpenAI() for _ in range(2)]
        for fake in fakes:
            await servers.start(fake.serve)
            fake.script(*[script_for(o) for o in outcomes])
        gateway = await start_gateway(
            servers,
            config(
                provider("a", "openai", fakes[0], ("m",), keys=2),
                provider("b", "openai", fakes[1], ("n",), keys=1),
                fallbacks={"m": ("n",)},
                retries=retries,
            ),
            FakeClock(),
        )
        async with httpx.AsyncClient() as client:
            response = await client.post(
                gateway.v1 + "/chat/completions",
                json={"model": "m", "messages": HI, "stream": stream},
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
            )
        servers.cancel_scope.cancel()
    made = sum(len(f.requests) for f in fakes)
    assert 1 <= made <= 1 + retries
    if response.status_code != 200:
        assert "error" in response.json()  # one error, in OpenAI's shape, nothing else
        return
    if not stream:
        assert response.json()["choices"][0]["message"]["content"]  # a complete answer
        return
    frames = [line for line in response.text.split("\n\n") if line]
    errors = [f for f in frames if '"error"' in f]
    if errors:  # a failure after content: an error frame ends the stream, nothing after it
        assert frames[-1] == errors[0]
        assert "[DONE]" not in response.text
    else:
        assert frames[-1] == "data: [DONE]"
