"""Upstream quotas: the rate-limit headers providers send (OpenAI's ``x-ratelimit-*``, Anthropic's
``anthropic-ratelimit-*``) read into each key's health, a key with nothing left sitting out until its
reset without collecting a 429 first, and the values in ``/metrics`` and the dashboard's providers."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import openai
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from proxycast.formats.quota import (
    Allowance,
    Quota,
    anthropic_quota,
    openai_quota,
    parse_duration,
    parse_rfc3339,
)
from proxycast.testing import AnthropicScript, FakeAnthropic, FakeOpenAI, Script
from proxycast.testing import anthropic as fa
from proxycast.testing import openai as fo
from proxycast.upstream.keys import KeyPool
from tests.support import CLIENT_KEY, start_gateway
from tests.test_cli import serve
from tests.test_resilience import HI, KEYS, FakeClock, config, key_of, provider, started

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support import Gateway

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


# The two dialects, read.


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("1.54s", 1.54),
        ("0s", 0.0),
        ("500us", 0.0005),
        ("7", 7.0),  # Azure: a bare number of seconds
        ("2d", 172800.0),
    ],
)
def test_go_durations_are_read(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "soon", "6m0", "1x", "-1s", "-1", "inf", "nan", "1 s"])
def test_a_duration_that_is_not_one_is_none(text: str) -> None:
    assert parse_duration(text) is None


@given(
    st.integers(0, 48),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
    st.sampled_from(["h", "m", "s", "ms"]),
)
def test_durations_written_as_go_writes_them_are_read_back(
    hours: int, minutes: int, seconds: int, millis: int, first: str
) -> None:
    """Go's ``Duration.String()`` shapes (``1h2m3.5s``, ``6m0s``, ``20ms``) give the seconds they say."""
    total = hours * 3600 + minutes * 60 + seconds + millis / 1000
    if total < 1:
        text = f"{millis}ms"
    else:
        fraction = f".{millis:03d}".rstrip("0").rstrip(".")
        text = f"{hours}h{minutes}m" if hours else f"{minutes}m" if minutes else ""
        text += f"{seconds}{fraction}s"
    assert parse_duration(text) == pytest.approx(total)


@given(st.text(max_size=30))
def test_any_text_as_a_duration_is_a_number_or_none(text: str) -> None:
    value = parse_duration(text)
    assert value is None or (math.isfinite(value) and value >= 0)


@given(st.text(max_size=40))
def test_any_text_as_a_time_is_a_number_or_none(text: str) -> None:
    value = parse_rfc3339(text)
    assert value is None or math.isfinite(value)


def test_rfc3339_times_are_read() -> None:
    noon = datetime(2025, 8, 21, 12, 0, tzinfo=timezone.utc).timestamp()
    assert parse_rfc3339("2025-08-21T12:00:00Z") == noon
    assert parse_rfc3339("2025-08-21t12:00:00z") == noon
    assert parse_rfc3339("2025-08-21T14:00:00+02:00") == noon
    assert parse_rfc3339("2025-08-21T11:00:00.250-01:00") == pytest.approx(noon + 0.25)
    assert parse_rfc3339("2025-08-21T12:00:00.123456789Z") == pytest.approx(noon + 0.123456789)
    for wrong in ("2025-08-21T12:00:00", "2025-02-31T12:00:00Z", "tomorrow", "", "1755777600"):
        assert parse_rfc3339(wrong) is None


def test_openai_headers_are_read() -> None:
    headers = dict(fo.ratelimit_headers(4, 900, reset_requests="6m0s", reset_tokens="20ms"))
    assert openai_quota(headers) == Quota(Allowance(4, 500, 360.0), Allowance(900, 30000, 0.02))
    assert openai_quota({}) is None


def test_anthropic_headers_are_read_tightest_tokens_first() -> None:
    now = datetime(2025, 8, 21, 12, 0, tzinfo=timezone.utc).timestamp()
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:00:12Z",
        "anthropic-ratelimit-tokens-remaining": "8000",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:00:30Z",
    }
    assert anthropic_quota(headers, now) == Quota(
        Allowance(49, 50, 12.0), Allowance(0, 30000, 30.0)
    )
    assert anthropic_quota({}, now) is None


def test_an_answers_headers_are_read_as_a_mapping_of_them_is() -> None:
    """An answer's ``httpx.Headers`` (the names scanned as bytes) read as a plain mapping does,
    whatever the names' case and wherever the rate-limit ones are."""
    now = datetime(2025, 8, 21, 12, 0, tzinfo=timezone.utc).timestamp()
    openai_headers = [("Content-Type", "application/json"), *fo.ratelimit_headers(4, 900)]
    anthropic_headers = [
        ("Anthropic-RateLimit-Requests-Remaining", "49"),
        ("anthropic-ratelimit-requests-limit", "50"),
        ("request-id", "req_1"),
    ]
    for pairs in (openai_headers, openai_headers[::-1], [("X-RateLimit-Remaining-Tokens", "3")]):
        lowered = {k.lower(): v for k, v in pairs}
        assert openai_quota(httpx.Headers(pairs)) == openai_quota(lowered) is not None
    assert (
        anthropic_quota(httpx.Headers(anthropic_headers), now)
        == anthropic_quota({k.lower(): v for k, v in anthropic_headers}, now)
        is not None
    )
    near_misses = [("x-request-id", "1"), ("my-x-ratelimit-remaining-tokens", "3")]
    assert openai_quota(httpx.Headers(near_misses)) is None
    assert (
        anthropic_quota(httpx.Headers([("x-anthropic-ratelimit-requests-remaining", "1")])) is None
    )


def test_malformed_headers_are_left_out() -> None:
    """A count or a reset that cannot be read is left out (Azure's -1: a limit it does not apply)."""
    assert openai_quota({"x-ratelimit-remaining-requests": "lots"}) is None
    assert (
        openai_quota({"x-ratelimit-remaining-tokens": "-1", "x-ratelimit-reset-tokens": "0"})
        is None
    )
    odd = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "soon"}
    assert openai_quota(odd) == Quota(Allowance(3, None, None), None)
    late = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "next Tuesday",
    }
    assert anthropic_quota(late) == Quota(Allowance(0, None, None), None)


def test_a_key_with_nothing_left_but_no_reset_is_not_rested() -> None:
    """Without a reset there is no telling when it comes back: the key stays in (a 429 will say)."""
    pool = KeyPool("p", 2, FakeClock())
    pool.observe(0, Quota(Allowance(0, 10, None), None))
    pool.observe(1, Quota(None, Allowance(0, 10, 0.0)))
    assert pool.available(0)
    assert pool.available(1)


def test_a_reload_keeps_what_is_left_and_the_rest() -> None:
    """A reload's new pool finds each key again by its fingerprint, with what is left of it."""
    clock = FakeClock()
    old = KeyPool("p", 2, clock, fingerprints=("aaa", "bbb"))
    old.observe(1, Quota(Allowance(0, 50, 30.0), Allowance(900, 1000, 1.0)))
    new = KeyPool("p", 2, clock, fingerprints=("bbb", "ccc"))
    assert new.carry(old, same_upstream=True) == {1: 0}
    label, requests, tokens = new.quotas()[0]
    assert (label, requests, tokens) == ("p#1", old.quotas()[1][1], old.quotas()[1][2])
    assert not new.available(0)
    assert new.left(0) == (30.0, "quota exhausted (no requests left, resets in 30 s)")
    clock.advance(31)
    assert new.available(0)
    assert requests is not None
    assert requests.at(clock.now) == 50


# Through the gateway.


async def _scrape(gateway: Gateway) -> str:
    async with httpx.AsyncClient() as http:
        answer = await http.get(gateway.url + "/metrics", headers=AUTH)
    assert answer.status_code == 200
    return answer.text


async def _providers(gateway: Gateway) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(gateway.url + "/ui/api/providers", headers=AUTH)
    assert answer.status_code == 200
    found: dict[str, Any] = {k["key"]: k for p in answer.json()["providers"] for k in p["keys"]}
    return found


def _metric(text: str, key: str, kind: str) -> float | None:
    prefix = f'proxycast_key_remaining{{key="{key}",kind="{kind}",provider="local"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return None


async def test_a_key_with_no_requests_left_sits_out_until_its_reset(nursery: trio.Nursery) -> None:
    """OpenAI's headers say key one has no request left for 12 s: the next requests go to key two
    (rotation alone would send one to key one), no 429 ever seen; the reset brings it back."""
    fake = await started(nursery, FakeOpenAI())
    clock = FakeClock()
    gateway = await start_gateway(
        nursery, config(provider("local", "openai", fake, ("m",), keys=2)), clock
    )
    fake.script(
        Script(text="last one", headers=fo.ratelimit_headers(0, 29000, reset_requests="12s")),
        Script(headers=fo.ratelimit_headers(420, 28000, reset_requests="6m0s")),
        Script(headers=fo.ratelimit_headers(419, 27000, reset_requests="6m0s")),
    )
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as c:
        for _ in range(3):
            await c.chat.completions.create(model="m", messages=HI)
        assert [key_of(r) for r in fake.requests] == [KEYS[0], KEYS[1], KEYS[1]]
        keys = await _providers(gateway)
        assert keys["local#1"]["state"] == "cooling"
        assert keys["local#1"]["reason"] == "quota exhausted (no requests left, resets in 12 s)"
        assert keys["local#1"]["remaining"]["requests"]["remaining"] == 0
        assert keys["local#1"]["remaining"]["requests"]["limit"] == 500
        assert keys["local#1"]["remaining"]["requests"]["reset_at"] is not None
        assert keys["local#1"]["remaining"]["tokens"]["remaining"] == 29000
        assert keys["local#2"]["state"] == "healthy"
        assert keys["local#2"]["remaining"]["requests"]["remaining"] == 419
        text = await _scrape(gateway)
        assert _metric(text, "local#1", "requests") == 0
        assert _metric(text, "local#1", "tokens") == 29000
        assert _metric(text, "local#2", "requests") == 419
        assert _metric(text, "local#2", "tokens") == 27000
        assert 'proxycast_key_available{key="local#1",provider="local"} 0.0' in text

        clock.advance(13)  # key one's window is full again
        keys = await _providers(gateway)
        assert keys["local#1"]["state"] == "healthy"
        assert keys["local#1"]["remaining"]["requests"] == {
            "remaining": 500,  # its limit, once reset
            "limit": 500,
            "reset_at": None,
        }
        fake.script(*[Script(headers=fo.ratelimit_headers(499, 26000))] * 2)
        await c.chat.completions.create(model="m", messages=HI)
        await c.chat.completions.create(model="m", messages=HI)
    assert {key_of(r) for r in fake.requests[-2:]} == {KEYS[0], KEYS[1]}
    text = await _scrape(gateway)
    assert _metric(text, "local#1", "requests") == 499  # what the last answer said


async def test_every_key_out_of_quota_is_a_rate_limit(nursery: trio.Nursery) -> None:
    """Anthropic's headers say its one key has no token left (a streamed answer's headers count
    too): the next request is a 429 ``rate_limit_error`` from the gateway, not sent upstream."""
    fake = await started(nursery, FakeAnthropic())
    clock = FakeClock()
    gateway = await start_gateway(
        nursery, config(provider("local", "anthropic", fake, ("claude",))), clock
    )
    fake.script(AnthropicScript(headers=fa.ratelimit_headers(40, 0, reset_in=30)))
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0
    ) as client:
        async with client.messages.stream(model="claude", max_tokens=50, messages=HI) as stream:
            await stream.get_final_message()
        with pytest.raises(anthropic.RateLimitError) as info:
            await client.messages.create(model="claude", max_tokens=50, messages=HI)
        assert len(fake.requests) == 1
        assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert "quota exhausted (no tokens left" in info.value.message
        assert 25 <= int(info.value.response.headers["retry-after"]) <= 30
        text = await _scrape(gateway)
        assert _metric(text, "local#1", "tokens") == 0
        assert _metric(text, "local#1", "requests") == 40
        clock.advance(31)
        await client.messages.create(model="claude", max_tokens=50, messages=HI)
    assert len(fake.requests) == 2


async def test_a_malformed_header_is_ignored(nursery: trio.Nursery) -> None:
    fake = await started(nursery, FakeOpenAI())
    clock = FakeClock()
    gateway = await start_gateway(nursery, config(provider("local", "openai", fake, ("m",))), clock)
    odd = (
        ("x-ratelimit-remaining-requests", "none at all"),
        ("x-ratelimit-reset-requests", "whenever"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "in a bit"),
    )
    fake.script(Script(headers=odd), Script())
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as c:
        await c.chat.completions.create(model="m", messages=HI)
        await c.chat.completions.create(model="m", messages=HI)  # no reset said: not rested
    assert len(fake.requests) == 2
    text = await _scrape(gateway)
    assert _metric(text, "local#1", "requests") is None
    assert _metric(text, "local#1", "tokens") == 0


async def test_two_workers_skip_a_key_out_of_quota_and_report_it(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    """``--workers 2``: the rest a quota asked for is shared (each worker's view says it, whichever
    saw the answer), no worker sends the key a request, and every scrape shows what is left."""
    config = tmp_path / "proxycast.toml"
    config.write_text(
        f"""
[server]
port = 0
workers = 2
api_keys = ["{CLIENT_KEY}"]

[[providers]]
name = "local"
type = "openai"
base_url = "{fake.base_url}"
api_keys = {list(KEYS[:2])!r}
models = ["m"]
"""
    )
    fake.script(Script(headers=fo.ratelimit_headers(0, 9000, reset_requests="10m0s")))
    body = {"model": "m", "messages": HI}
    async with serve(["--config", str(config)], env={"PROXYCAST_HOME": str(tmp_path)}) as served:
        async with httpx.AsyncClient() as http:
            first = await http.post(served.url + "/v1/chat/completions", json=body, headers=AUTH)
        assert first.status_code == 200
        assert key_of(fake.requests[0]) == KEYS[0]
        cooling: set[int] = set()
        with trio.fail_after(10):
            while len(cooling) < 2:  # each worker (a new connection lands on either)
                async with httpx.AsyncClient() as http:
                    answer = await http.get(served.url + "/ui/api/providers", headers=AUTH)
                keys = {k["key"]: k for p in answer.json()["providers"] for k in p["keys"]}
                if keys["local#1"]["reason"].startswith("quota exhausted (no requests left"):
                    cooling.add(answer.json()["worker"])
                await trio.sleep(0.05)
        for _ in range(6):
            async with httpx.AsyncClient() as http:
                sent = await http.post(served.url + "/v1/chat/completions", json=body, headers=AUTH)
                assert sent.status_code == 200
                text = (await http.get(served.url + "/metrics", headers=AUTH)).text
            assert _metric(text, "local#1", "requests") == 0
            assert _metric(text, "local#1", "tokens") == 9000
        assert [key_of(r) for r in fake.requests[1:]] == [KEYS[1]] * 6
