"""``POST /v1/embeddings`` through the OpenAI SDK: forwarded to OpenAI-compatible upstreams (model
renamed), converted to Gemini's embedContent / batchEmbedContents, a 400 naming the provider for
Anthropic."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
import trio

from proxycast.accounting.clients import ClientConfig
from proxycast.config import Config, ProviderConfig, RoutingConfig, ServerConfig
from proxycast.ledger import LedgerConfig
from proxycast.testing import FakeAnthropic, FakeGemini, FakeOpenAI, Script
from proxycast.testing._server import RecordedRequest, fake_vector
from tests.support import CLIENT_KEY, one_provider, start_gateway

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support import Gateway


def flat(result: openai.types.CreateEmbeddingResponse) -> list[float]:
    return [x for d in result.data for x in d.embedding]


def sdk(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


async def test_forwarded_to_openai_compatible(gateway: Gateway, fake: FakeOpenAI) -> None:
    async with sdk(gateway) as client:
        result = await client.embeddings.create(model="gpt-4o", input=["one", "two"])
    assert fake.requests[0].path == "/v1/embeddings"
    sent = fake.requests[0].json()
    assert sent["model"] == "llama3.2"  # the alias resolved
    assert sent["encoding_format"] == "base64"  # the SDK's own choice, passed as it is
    assert result.model == "gpt-4o"
    assert flat(result) == pytest.approx(fake_vector("one") + fake_vector("two"), abs=1e-6)
    assert result.usage.prompt_tokens == 2


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-4o"},
        {"model": "gpt-4o", "input": 5},
        {"model": "gpt-4o", "input": []},
        {"model": "gpt-4o", "input": ["one", 2]},
        {"model": "gpt-4o", "input": [[1, 2], [True]]},
        {"model": "gpt-4o", "input": {"text": "one"}},
    ],
)
async def test_an_input_no_upstream_accepts_is_refused_before_forwarding(
    gateway: Gateway, fake: FakeOpenAI, body: dict[str, object]
) -> None:
    """Found by bench/chaos.py: a mistyped ``input`` went to an OpenAI-compatible upstream as it
    was (and a lenient one answered 200)."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{gateway.v1}/embeddings",
            json=body,
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "input"
    assert not fake.requests


async def test_token_ids_are_forwarded(gateway: Gateway, fake: FakeOpenAI) -> None:
    async with sdk(gateway) as client:
        await client.embeddings.create(model="gpt-4o", input=[[1, 2, 3], [4]])
        await client.embeddings.create(model="gpt-4o", input=[1, 2, 3])
    assert [r.json()["input"] for r in fake.requests] == [[[1, 2, 3], [4]], [1, 2, 3]]


@pytest.mark.parametrize("inputs", [["one"], ["one", "two", "three"]])
async def test_converted_for_gemini(nursery: trio.Nursery, inputs: list[str]) -> None:
    fake = FakeGemini()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("gemini", fake.base_url, ("text-emb*",)))
    async with sdk(gateway) as client:
        result = await client.embeddings.create(
            model="text-embedding-004", input=inputs, dimensions=4
        )
        floats = await client.embeddings.create(
            model="text-embedding-004", input=inputs[0], encoding_format="float"
        )
    method = "embedContent" if len(inputs) == 1 else "batchEmbedContents"
    assert fake.requests[0].path == f"/v1beta/models/text-embedding-004:{method}"
    expected = [x for t in inputs for x in fake_vector(t, 4)]
    assert flat(result) == pytest.approx(expected, abs=1e-6)
    assert [d.index for d in result.data] == list(range(len(inputs)))
    assert result.model == "text-embedding-004"
    assert result.usage.prompt_tokens >= len(inputs)  # estimated: Gemini does not count
    assert floats.data[0].embedding == fake_vector(inputs[0])


async def test_anthropic_has_no_embeddings(nursery: trio.Nursery) -> None:
    fake = FakeAnthropic()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("anthropic", fake.base_url, ("claude-*",)))
    async with sdk(gateway) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.embeddings.create(model="claude-3-haiku", input="x")
    assert "provider 'anthropic'" in raised.value.message
    assert raised.value.body["param"] == "model"  # type: ignore[index]
    assert fake.requests == []


async def test_token_arrays_cannot_go_to_gemini(nursery: trio.Nursery) -> None:
    fake = FakeGemini()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, one_provider("gemini", fake.base_url, ("text-emb*",)))
    async with sdk(gateway) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.embeddings.create(model="text-embedding-004", input=[[1, 2, 3]])
    assert raised.value.body["param"] == "input[0]"  # type: ignore[index]
    assert fake.requests == []


async def test_embeddings_count_in_usage_and_follow_allowlists(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    openai_fake, gemini_fake = FakeOpenAI(), FakeGemini()
    await nursery.start(openai_fake.serve)
    await nursery.start(gemini_fake.serve)
    ledger = tmp_path / "usage.db"
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            ProviderConfig(
                name="local", type="openai", base_url=openai_fake.base_url, models=("embed-small",)
            ),
            ProviderConfig(
                name="gemini",
                type="gemini",
                base_url=gemini_fake.base_url,
                models=("gemini-embed",),
            ),
        ),
        clients=(
            ClientConfig(name="alice", api_key="alice-key-0123456789", models=("embed-small",)),
        ),
        ledger=LedgerConfig(url=f"sqlite:///{ledger}"),
    )
    async with trio.open_nursery() as inner:
        gateway = await start_gateway(inner, config)
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key="alice-key-0123456789", max_retries=0
        ) as alice:
            await alice.embeddings.create(model="embed-small", input=["one", "two"])
            with pytest.raises(
                openai.NotFoundError
            ):  # not among alice's models: as if it did not exist
                await alice.embeddings.create(model="gemini-embed", input="three")
        async with sdk(gateway) as team:
            await team.embeddings.create(model="gemini-embed", input=["four", "five"])
        inner.cancel_scope.cancel()
    db = sqlite3.connect(ledger)
    try:
        found = db.execute(
            "SELECT client, api, model, provider, status, input_tokens FROM requests ORDER BY time"
        ).fetchall()
    finally:
        db.close()
    assert found[0] == ("alice", "embeddings", "embed-small", "local", 200, 2)
    assert found[1][:5] == ("alice", "embeddings", "gemini-embed", "", 404)
    assert found[2][:5] == ("-", "embeddings", "gemini-embed", "gemini", 200)
    assert found[2][5] > 0


KEYS = ("sk-embed-key-one-aaaaaaaa", "sk-embed-key-two-bbbbbbbb")


def _key_of(request: RecordedRequest) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ")


async def test_embeddings_rotate_the_pool_and_retry_on_the_next_key(
    nursery: trio.Nursery,
) -> None:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            ProviderConfig(
                name="local",
                type="openai",
                base_url=fake.base_url,
                api_keys=KEYS,
                models=("embed-*",),
            ),
        ),
    )
    gateway = await start_gateway(nursery, config)
    async with sdk(gateway) as client:
        await client.embeddings.create(model="embed-small", input="one")
        await client.embeddings.create(model="embed-small", input="two")
        assert [_key_of(r) for r in fake.requests] == [KEYS[0], KEYS[1]]  # rotated, as chat
        fake.embedding_failures.append(Script(status=500))
        raw = await client.embeddings.with_raw_response.create(model="embed-small", input="x")
    assert raw.parse().data[0].embedding == pytest.approx(fake_vector("x"), abs=1e-6)
    assert raw.headers["x-proxycast-provider"] == "local"
    retried = fake.requests[2:]
    assert len(retried) == 2
    assert _key_of(retried[0]) != _key_of(retried[1])  # the 500 retried on the other key


async def test_embeddings_fall_back_across_formats(nursery: trio.Nursery) -> None:
    openai_fake, gemini_fake = FakeOpenAI(), FakeGemini()
    await nursery.start(openai_fake.serve)
    await nursery.start(gemini_fake.serve)
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            ProviderConfig(
                name="local", type="openai", base_url=openai_fake.base_url, models=("embed-small",)
            ),
            ProviderConfig(
                name="gemini", type="gemini", base_url=gemini_fake.base_url, models=("g-embed",)
            ),
        ),
        routing=RoutingConfig(retries=2),
        fallbacks={"embed-small": ("gemini/g-embed",)},
    )
    gateway = await start_gateway(nursery, config)
    openai_fake.embedding_failures.append(Script(status=503))
    async with sdk(gateway) as client:
        raw = await client.embeddings.with_raw_response.create(
            model="embed-small", input="hello", encoding_format="float"
        )
    result = raw.parse()
    assert raw.headers["x-proxycast-provider"] == "gemini"
    assert result.model == "embed-small"  # the name the client asked for
    assert result.data[0].embedding == pytest.approx(fake_vector("hello"), abs=1e-6)
    assert len(openai_fake.requests) == 1
    assert gemini_fake.requests[0].path == "/v1beta/models/g-embed:embedContent"


async def test_embeddings_count_against_a_token_limit(nursery: trio.Nursery) -> None:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            ProviderConfig(name="local", type="openai", base_url=fake.base_url, models=("e",)),
        ),
        clients=(ClientConfig(name="bob", api_key="bob-key-0123456789abc", tpm=70),),
    )
    gateway = await start_gateway(nursery, config)
    async with openai.AsyncOpenAI(
        base_url=gateway.v1, api_key="bob-key-0123456789abc", max_retries=0
    ) as bob:
        # admitted on its estimate (a quarter of the body's characters, about 55), then settled on
        # the 80 tokens the upstream counted: the next one is over the minute's 70
        await bob.embeddings.create(model="e", input=["w " * 20] * 4)
        with pytest.raises(openai.RateLimitError):
            await bob.embeddings.create(model="e", input=["w " * 20] * 4)
    assert len(fake.requests) == 1
