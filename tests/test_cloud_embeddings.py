"""Embeddings through the clouds: OpenAI's ``/v1/embeddings`` (the openai SDK) and Gemini's
``:embedContent`` / ``:batchEmbedContents`` (google-genai) to Vertex AI's ``:predict`` (FakeVertex:
its tokens, its project's path, one instance for gemini-embedding-001) and to Bedrock's InvokeModel
(FakeBedrock: SigV4 checked over the exact bytes; Titan one input a call, Cohere Embed for batches);
the tokens the clouds count in the answer and the ledger, and their errors in each client's shape."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

import attrs
import openai
import pytest
import trio
from google.genai import errors as genai_errors
from google.genai import types
from hypothesis import given
from hypothesis import strategies as st

from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.errors import InvalidRequestError
from proxycast.formats.bedrock.embeddings import EMBEDDINGS as BEDROCK_EMBEDDINGS
from proxycast.formats.embeddings import EmbedRequest
from proxycast.formats.vertex.embeddings import EMBEDDINGS as VERTEX_EMBEDDINGS
from proxycast.ledger import LedgerConfig
from proxycast.testing import BedrockScript, FakeBedrock, FakeVertex
from proxycast.testing import bedrock as fake_bedrock
from proxycast.testing import vertex as fake_vertex
from proxycast.testing._server import fake_vector
from proxycast.testing.bedrock import fake_tokens
from tests.support import CLIENT_KEY, Gateway, start_gateway
from tests.test_bedrock import _aws_environment as _aws_environment  # the fake's AWS credentials
from tests.test_contract import _GenaiSDK

if TYPE_CHECKING:
    from pathlib import Path

PREDICT = "/v1/projects/fake-project/locations/us-east5/publishers/google/models/{}:predict"
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
COHERE_V4 = "cohere.embed-v4:0"


def invoke_path(model: str) -> str:
    return "/model/" + model.replace(":", "%3A") + "/invoke"


def providers(
    vertex: FakeVertex, bedrock: FakeBedrock, key_file: Path
) -> tuple[ProviderConfig, ...]:
    return (
        ProviderConfig(
            name="vertex",
            type="vertex",
            base_url=vertex.base_url,
            project=vertex.project,
            location=vertex.location,
            credentials_file=str(key_file),
            models=("text-embedding-*", "text-multilingual-*", "gemini-embedding-*"),
        ),
        ProviderConfig(
            name="bedrock",
            type="bedrock",
            base_url=bedrock.base_url,
            region="us-east-1",
            models=("amazon.*", "cohere.*"),
        ),
    )


@pytest.fixture(name="vertex")
async def _vertex(nursery: trio.Nursery) -> FakeVertex:
    fake = FakeVertex()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="bedrock")
async def _bedrock(nursery: trio.Nursery) -> FakeBedrock:
    fake = FakeBedrock()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture(name="gateway")
async def _gateway(
    nursery: trio.Nursery, vertex: FakeVertex, bedrock: FakeBedrock, tmp_path: Path
) -> Gateway:
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=providers(vertex, bedrock, vertex.service_account_file(tmp_path)),
    )
    return await start_gateway(nursery, config)


def sdk(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0)


def predictions(vertex: FakeVertex) -> list[Any]:
    return [r for r in vertex.requests if r.route != "/token"]


def vectors(result: openai.types.CreateEmbeddingResponse) -> list[list[float]]:
    return [d.embedding for d in result.data]


async def genai_embed(gateway: Gateway, model: str, contents: list[str], **config: Any) -> Any:
    """google-genai's ``embed_content`` through the gateway (its sync client, in a thread)."""
    client = _GenaiSDK(gateway)
    options = types.EmbedContentConfig(**config) if config else None
    try:
        return await trio.to_thread.run_sync(
            lambda: client.client.models.embed_content(
                model=model, contents=contents, config=options
            )
        )
    finally:
        await client.close()


# Vertex AI: :predict under the provider's project and location


async def test_openai_clients_on_vertex(gateway: Gateway, vertex: FakeVertex) -> None:
    async with sdk(gateway) as client:
        single = await client.embeddings.with_raw_response.create(
            model="text-embedding-005", input="one small step", dimensions=4
        )
        batch = await client.embeddings.create(
            model="text-embedding-005", input=["one", "two words"], encoding_format="float"
        )
    one = single.parse()
    assert vectors(one) == [pytest.approx(fake_vector("one small step", 4), abs=1e-6)]
    assert one.model == "text-embedding-005"
    assert one.usage.prompt_tokens == 3  # the predictions' statistics.token_count
    assert "x-proxycast-token-count" not in single.headers  # counted, not estimated
    assert single.headers["x-proxycast-provider"] == "vertex"
    first, second = predictions(vertex)
    assert first.path == PREDICT.format("text-embedding-005")
    assert first.json() == {
        "instances": [{"content": "one small step"}],
        "parameters": {"outputDimensionality": 4},
    }
    assert first.headers["authorization"].startswith("Bearer ya29.fake-")  # its own token
    assert second.json() == {"instances": [{"content": "one"}, {"content": "two words"}]}
    assert vectors(batch) == [fake_vector("one", 768), fake_vector("two words", 768)]
    assert [d.index for d in batch.data] == [0, 1]
    assert batch.usage.prompt_tokens == 3


async def test_gemini_clients_on_vertex(gateway: Gateway, vertex: FakeVertex) -> None:
    single = await genai_embed(
        gateway, "text-embedding-005", ["alpha"], output_dimensionality=6, task_type="CLUSTERING"
    )
    batch = await genai_embed(gateway, "text-multilingual-embedding-002", ["beta", "gamma"])
    assert [e.values for e in single.embeddings] == [fake_vector("alpha", 6)]
    assert [e.values for e in batch.embeddings] == [
        fake_vector("beta", 768),
        fake_vector("gamma", 768),
    ]
    first, second = predictions(vertex)
    assert first.path == PREDICT.format("text-embedding-005")
    assert first.json() == {
        "instances": [{"content": "alpha", "task_type": "CLUSTERING"}],  # the client's taskType
        "parameters": {"outputDimensionality": 6},
    }
    assert second.path == PREDICT.format("text-multilingual-embedding-002")
    assert second.json()["instances"] == [{"content": "beta"}, {"content": "gamma"}]


async def test_gemini_embedding_001_takes_one_input_a_request(
    gateway: Gateway, vertex: FakeVertex
) -> None:
    async with sdk(gateway) as client:
        one = await client.embeddings.create(model="gemini-embedding-001", input="solo")
        with pytest.raises(openai.BadRequestError) as raised:
            await client.embeddings.create(model="gemini-embedding-001", input=["a", "b"])
    assert len(one.data[0].embedding) == 3072
    assert raised.value.body["param"] == "input"  # type: ignore[index]
    assert "one input per request" in raised.value.message
    assert "text-embedding-005" in raised.value.message  # the fix named
    assert len(predictions(vertex)) == 1  # the batch never left


async def test_vertex_errors_in_each_clients_shape(gateway: Gateway, vertex: FakeVertex) -> None:
    async with sdk(gateway) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.embeddings.create(model="text-embedding-005", input="x", dimensions=1000)
    assert "outputDimensionality is out of range" in raised.value.message
    with pytest.raises(genai_errors.ClientError) as refused:
        await genai_embed(gateway, "text-embedding-005", ["x"], output_dimensionality=1000)
    assert refused.value.code == 400
    assert "out of range" in str(refused.value.message)
    assert len(predictions(vertex)) == 2  # both reached Vertex, which refused them


# Bedrock: InvokeModel, Titan for one input, Cohere Embed for batches


async def test_openai_clients_on_bedrock_titan(gateway: Gateway, bedrock: FakeBedrock) -> None:
    async with sdk(gateway) as client:
        raw = await client.embeddings.with_raw_response.create(
            model=TITAN, input="hello bedrock world", dimensions=256
        )
        default = await client.embeddings.create(model=TITAN, input="x", encoding_format="float")
    result = raw.parse()
    assert vectors(result) == [pytest.approx(fake_vector("hello bedrock world", 256), abs=1e-6)]
    assert result.usage.prompt_tokens == fake_tokens("hello bedrock world") == 3
    assert "x-proxycast-token-count" not in raw.headers  # inputTextTokenCount
    sent = bedrock.requests[0]
    assert sent.path == invoke_path(TITAN)
    assert sent.json() == {"inputText": "hello bedrock world", "normalize": True, "dimensions": 256}
    assert bedrock.signed_by == ["sigv4:" + "AKIAFAKEBEDROCK00001"] * 2
    assert len(default.data[0].embedding) == 1024


async def test_a_batch_to_titan_is_refused_naming_cohere(
    gateway: Gateway, bedrock: FakeBedrock
) -> None:
    async with sdk(gateway) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.embeddings.create(model=TITAN, input=["one", "two"])
    assert raised.value.body["param"] == "input"  # type: ignore[index]
    assert COHERE in raised.value.message
    assert bedrock.requests == []


async def test_batches_on_bedrock_cohere(gateway: Gateway, bedrock: FakeBedrock) -> None:
    async with sdk(gateway) as client:
        raw = await client.embeddings.with_raw_response.create(
            model=COHERE, input=["first", "second", "third"], encoding_format="float"
        )
        v4 = await client.embeddings.create(model=COHERE_V4, input=["a", "b"], dimensions=256)
        with pytest.raises(openai.BadRequestError) as raised:
            await client.embeddings.create(model=COHERE, input=["a"], dimensions=256)
    result = raw.parse()
    assert vectors(result) == [fake_vector(t, 1024) for t in ("first", "second", "third")]
    assert raw.headers["x-proxycast-token-count"] == "estimate"  # Cohere's body counts none
    assert result.usage.prompt_tokens >= 3
    assert bedrock.requests[0].json() == {
        "texts": ["first", "second", "third"],
        "input_type": "search_document",
    }
    assert bedrock.requests[1].path == invoke_path(COHERE_V4)
    assert bedrock.requests[1].json()["output_dimension"] == 256
    assert vectors(v4) == [pytest.approx(fake_vector(t, 256), abs=1e-6) for t in ("a", "b")]
    assert raised.value.body["param"] == "dimensions"  # type: ignore[index]
    assert "cohere.embed-v4:0" in raised.value.message
    assert len(bedrock.requests) == 2


async def test_gemini_clients_on_bedrock(gateway: Gateway, bedrock: FakeBedrock) -> None:
    single = await genai_embed(gateway, TITAN, ["titan text"], output_dimensionality=512)
    batch = await genai_embed(gateway, COHERE, ["c1", "c2"], task_type="RETRIEVAL_QUERY")
    assert [e.values for e in single.embeddings] == [fake_vector("titan text", 512)]
    assert [e.values for e in batch.embeddings] == [
        fake_vector("c1", 1024),
        fake_vector("c2", 1024),
    ]
    assert [r.path for r in bedrock.requests] == [invoke_path(TITAN), invoke_path(COHERE)]
    assert bedrock.requests[1].json()["input_type"] == "search_query"  # RETRIEVAL_QUERY


async def test_bedrock_errors_in_each_clients_shape(gateway: Gateway, bedrock: FakeBedrock) -> None:
    async with sdk(gateway) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.embeddings.create(model=TITAN, input="x", dimensions=8)
        with pytest.raises(openai.BadRequestError) as unknown:
            await client.embeddings.create(model="amazon.nova-pro-v1:0", input="x")
    assert "dimensions: 8 is not a valid enum value" in raised.value.message
    assert raised.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert "amazon.titan-embed-text-v2:0" in unknown.value.message
    with pytest.raises(genai_errors.ClientError) as refused:
        await genai_embed(gateway, TITAN, ["x"], output_dimensionality=8)
    assert refused.value.code == 400
    assert "not a valid enum value" in str(refused.value.message)
    assert len(bedrock.requests) == 2  # the two with dimensions 8; nova never left


async def test_bedrock_throttling_is_retried_with_the_next_api_key(
    nursery: trio.Nursery, bedrock: FakeBedrock, vertex: FakeVertex, tmp_path: Path
) -> None:
    vertex_provider, bedrock_provider = providers(
        vertex, bedrock, vertex.service_account_file(tmp_path)
    )
    keyed = attrs.evolve(bedrock_provider, api_keys=("bedrock-key-a", "bedrock-key-b"))
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)), providers=(vertex_provider, keyed)
    )
    gateway = await start_gateway(nursery, config)
    bedrock.script(
        BedrockScript(status=429, error_type="ThrottlingException", error_message="Rate exceeded.")
    )
    async with sdk(gateway) as client:
        result = await client.embeddings.create(model=COHERE, input=["x", "y"])
    assert len(result.data) == 2
    keys = [r.headers["authorization"] for r in bedrock.requests]
    assert keys == ["Bearer bedrock-key-a", "Bearer bedrock-key-b"]


# The ledger: the clouds' token counts are the usage


async def test_the_ledger_counts_the_clouds_tokens(
    vertex: FakeVertex, bedrock: FakeBedrock, tmp_path: Path
) -> None:
    ledger = tmp_path / "usage.db"
    config = Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=providers(vertex, bedrock, vertex.service_account_file(tmp_path)),
        ledger=LedgerConfig(url=f"sqlite:///{ledger}"),
    )
    async with trio.open_nursery() as inner:
        gateway = await start_gateway(inner, config)
        async with sdk(gateway) as client:
            await client.embeddings.create(model="text-embedding-005", input=["a b", "c d e"])
            await client.embeddings.create(model=TITAN, input="four words of text")
        inner.cancel_scope.cancel()
    db = sqlite3.connect(ledger)
    try:
        found = db.execute(
            "SELECT api, model, provider, status, input_tokens FROM requests ORDER BY time"
        ).fetchall()
    finally:
        db.close()
    assert found == [
        ("embeddings", "text-embedding-005", "vertex", 200, 5),
        ("embeddings", TITAN, "bedrock", 200, 4),
    ]
    assert json.loads(predictions(vertex)[0].body)["instances"][1] == {"content": "c d e"}


# The converters, property-tested against the fakes' own rules and answers

TEXTS = st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=12)
DIMENSIONS = st.one_of(st.none(), st.integers(min_value=1, max_value=768))


@given(texts=TEXTS, dimensions=DIMENSIONS, task=st.sampled_from([None, *fake_vertex.TASK_TYPES]))
def test_vertex_requests_are_valid_and_answers_read_in_order(
    texts: list[str], dimensions: int | None, task: str | None
) -> None:
    request = EmbedRequest(inputs=tuple(texts), dimensions=dimensions, task_type=task)
    sent = VERTEX_EMBEDDINGS.request_from_internal(request, "text-embedding-005")
    body = dict(sent.body)
    assert fake_vertex.predict_problem("text-embedding-005", body) is None
    assert sent.path == "/publishers/google/models/text-embedding-005:predict"
    size = dimensions or 768
    answer = {
        "predictions": [
            {"embeddings": {"values": fake_vector(t, size), "statistics": {"token_count": 2}}}
            for t in texts
        ]
    }
    read = VERTEX_EMBEDDINGS.reply_to_internal(answer, request)
    assert [list(v) for v in read.vectors] == [fake_vector(t, size) for t in texts]
    assert read.input_tokens == 2 * len(texts)


@given(
    texts=TEXTS,
    dimensions=st.sampled_from([None, 256, 512, 1024]),
    task=st.sampled_from([None, *fake_vertex.TASK_TYPES, "SOMETHING_NEW"]),
)
def test_bedrock_requests_are_valid_for_each_family(
    texts: list[str], dimensions: int | None, task: str | None
) -> None:
    request = EmbedRequest(inputs=tuple(texts), dimensions=dimensions, task_type=task)
    for model in (TITAN, COHERE_V4, COHERE):
        if (len(texts) > 1 and model == TITAN) or (dimensions and model == COHERE):
            with pytest.raises(InvalidRequestError):  # what Titan and Cohere v3 cannot take
                BEDROCK_EMBEDDINGS.request_from_internal(request, model)
            continue
        sent = BEDROCK_EMBEDDINGS.request_from_internal(request, model)
        assert fake_bedrock.embed_problem(dict(sent.body), model) is None
        assert sent.path == invoke_path(model)
    single = EmbedRequest(inputs=(texts[0],))
    read = BEDROCK_EMBEDDINGS.reply_to_internal(
        {"embedding": [0.5, 0.25], "inputTextTokenCount": 7}, single
    )
    assert (read.vectors, read.input_tokens) == (((0.5, 0.25),), 7)
    by_type = {"embeddings": {"float": [[float(i)] for i in range(len(texts))]}}
    read = BEDROCK_EMBEDDINGS.reply_to_internal(by_type, request)
    assert read.vectors == tuple((float(i),) for i in range(len(texts)))
    assert read.input_tokens is None  # estimated by the dialect
