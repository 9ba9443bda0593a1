"""Configured secrets never reach a client or a log: an upstream that echoes the request's headers in
its error page, a key inside a URL's userinfo."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxycast.cli import main
from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.core.redact import FRAGMENT, MASK, RedactingFilter, Redactor, without_userinfo
from proxycast.testing import AnthropicScript, FakeAnthropic, FakeOpenAI, Script
from tests.support import CLIENT_KEY, UPSTREAM_KEY, one_provider, start_gateway

if TYPE_CHECKING:
    from pathlib import Path

    import trio

LONG_KEY = "sk-proj-" + "Zq8w3RtY7uIoP1aSdF4gHjK9lMnB2vCx6"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}


def echo(key: str) -> str:
    """What a careless upstream's error page says: the request it got, headers included."""
    return f"Bad request. Request headers: authorization: Bearer {key}; x-api-key: {key}"


def test_whole_keys_and_long_fragments_are_hidden() -> None:
    redact = Redactor([LONG_KEY, "short"])
    assert redact(f"key={LONG_KEY}.") == f"key={MASK}."
    fragment = LONG_KEY[10:30]  # 20 characters of it, as a page that truncates would show
    assert redact(f"...{fragment}...") == f"...{MASK}..."
    assert redact("a short word stays") == "a short word stays"  # too short to be told apart
    assert redact("nothing secret here") == "nothing secret here"


def _window_scan(secrets: list[str], text: str) -> str:
    """The definition: every window of the text that is a piece of a secret is hidden."""
    hidden = [False] * len(text)
    for secret in secrets:
        size = min(len(secret), FRAGMENT)
        if size < 6:
            continue
        pieces = {secret[i : i + size] for i in range(len(secret) - size + 1)}
        for start in range(len(text) - size + 1):
            if text[start : start + size] in pieces:
                hidden[start : start + size] = [True] * size
    return "".join(
        MASK if hidden[i] and (i == 0 or not hidden[i - 1]) else "" if hidden[i] else c
        for i, c in enumerate(text)
    )


ALPHABET = st.sampled_from("ab-_.*+(?x")  # regex metacharacters too: the pieces are escaped


@given(
    st.lists(st.text(ALPHABET, min_size=1, max_size=24), max_size=4),
    st.lists(st.text(ALPHABET, max_size=8) | st.sampled_from(["SECRET"]), max_size=8),
)
def test_the_scan_hides_what_the_definition_hides(secrets: list[str], parts: list[str]) -> None:
    # texts built from pieces of the secrets, overlapping and adjacent ones included
    text = "".join(
        secrets[i % len(secrets)][i:] if p == "SECRET" and secrets else p
        for i, p in enumerate(parts)
    )
    assert Redactor(secrets)(text) == _window_scan(secrets, text)


def test_urls_lose_their_userinfo() -> None:
    assert without_userinfo("https://bob:pa55word@host:8443/v1") == "https://host:8443/v1"
    assert without_userinfo("http://host/v1") == "http://host/v1"


def test_log_records_are_redacted() -> None:
    record = logging.LogRecord(
        "proxycast", logging.ERROR, __file__, 1, "upstream said %s", (echo(LONG_KEY),), None
    )
    RedactingFilter(Redactor([LONG_KEY])).filter(record)
    assert LONG_KEY not in record.getMessage()
    assert MASK in record.getMessage()


async def test_an_echoed_key_in_an_upstream_error_is_hidden(nursery: trio.Nursery) -> None:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("openai", fake.base_url, ("gpt-4o",)))
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient() as client:
        for script in (
            Script(status=400, error_message=echo(UPSTREAM_KEY)),
            Script(status=500, error_body=echo(UPSTREAM_KEY).encode()),
        ):
            fake.script(script)
            response = await client.post(gateway.v1 + "/chat/completions", json=CHAT, headers=auth)
            assert response.status_code == script.status
            assert UPSTREAM_KEY not in response.text
            assert MASK in response.text
        fake.script(Script(chunks=4, error_after=2, error_message=echo(UPSTREAM_KEY)))
        response = await client.post(
            gateway.v1 + "/chat/completions", json={**CHAT, "stream": True}, headers=auth
        )
        assert '"error"' in response.text
        assert UPSTREAM_KEY not in response.text


@pytest.mark.parametrize("stream", [False, True])
async def test_an_echoed_key_reaching_an_anthropic_client_is_hidden(
    nursery: trio.Nursery, stream: bool
) -> None:
    fake = FakeAnthropic()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("anthropic", fake.base_url, ("claude-x",)))
    fake.script(AnthropicScript(status=400, error_message=echo(UPSTREAM_KEY)))
    body = {
        "model": "claude-x",
        "max_tokens": 10,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.url + "/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY}
        )
    assert response.status_code == 400
    assert UPSTREAM_KEY not in response.text
    assert MASK in json.loads(response.text)["error"]["message"]


async def test_userinfo_in_a_base_url_is_never_shown(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_url = "http://proxyuser:Pr0xyPassw0rdSecret@127.0.0.1:9/v1"  # port 9: nothing listens
    provider = ProviderConfig(name="p", type="openai", base_url=secret_url, models=("gpt-4o",))
    gateway = await start_gateway(
        nursery, Config(server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(provider,))
    )
    async with httpx.AsyncClient() as client:
        response = await client.post(
            gateway.v1 + "/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert response.status_code == 502
    assert "Pr0xyPassw0rdSecret" not in response.text
    assert "127.0.0.1:9" in response.text
    config = tmp_path / "proxycast.toml"
    config.write_text(
        f'[server]\napi_keys = ["{CLIENT_KEY}"]\n[[providers]]\nname = "p"\ntype = "openai"\n'
        f'base_url = "{secret_url}"\nmodels = ["gpt-4o"]\n'
    )
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "127.0.0.1:9/v1" in out
    assert "Pr0xyPassw0rdSecret" not in out


def test_every_password_in_a_configurations_urls_is_hidden_from_logs() -> None:
    from proxycast.config import TelemetryConfig
    from proxycast.core.redact import config_secrets
    from proxycast.ledger import LedgerConfig
    from proxycast.state import StateConfig

    config = Config(
        ledger=LedgerConfig(url="postgresql://pc:Ledger%2FPassw0rd@db/pc"),
        state=StateConfig(redis_url="redis://:RedisPassw0rd@cache:6379/0"),
        telemetry=TelemetryConfig(otlp_endpoint="https://otel:Collect0rPassw0rd@collector:4318"),
    )
    quoted = "export to https://otel:Collect0rPassw0rd@collector:4318/v1/traces failed; %s, %s"
    record = logging.LogRecord(
        "opentelemetry", logging.WARNING, __file__, 1, quoted,
        ("postgresql://pc:Ledger/Passw0rd@db/pc", "redis://:RedisPassw0rd@cache:6379/0"), None,
    )  # fmt: skip
    RedactingFilter(Redactor(config_secrets(config))).filter(record)
    for secret in ("Collect0rPassw0rd", "Ledger/Passw0rd", "Ledger%2FPassw0rd", "RedisPassw0rd"):
        assert secret not in record.getMessage()
    assert "collector:4318/v1/traces" in record.getMessage()
