"""The azure format without a server: where each request goes (deployments API, Responses API, v1
API), Azure's answers and streams read as the non-streamed answer says, its errors, its settings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxycast.config import ProviderConfig
from proxycast.formats import internal
from proxycast.formats.azure.upstream import UPSTREAM
from proxycast.formats.contracts import UpstreamRequest
from proxycast.testing import FakeToolCall, Script
from proxycast.testing import azure as fz
from proxycast.testing.openai import completion, stream_chunks


def provider(**settings: Any) -> ProviderConfig:
    options: dict[str, Any] = {
        "base_url": "https://res.openai.azure.com",
        "api_keys": ("k",),
        "api_version": "2024-10-21",
        "deployments": {"gpt-4o": "prod 4o"},
        **settings,
    }
    return ProviderConfig(name="az", type="azure", **options)


@pytest.mark.parametrize(
    ("version", "path", "expected"),
    [
        pytest.param(
            "2024-10-21",
            "/chat/completions",
            "/openai/deployments/prod%204o/chat/completions?api-version=2024-10-21",
            id="chat",
        ),
        pytest.param(
            "2024-10-21",
            "/embeddings",
            "/openai/deployments/prod%204o/embeddings?api-version=2024-10-21",
            id="embeddings",
        ),
        pytest.param(
            "2025-04-01-preview",
            "/responses",
            "/openai/responses?api-version=2025-04-01-preview",
            id="responses",
        ),
        pytest.param("v1", "/chat/completions", "/openai/v1/chat/completions", id="v1-chat"),
        pytest.param("v1", "/responses", "/openai/v1/responses", id="v1-responses"),
    ],
)
def test_placed_at_the_deployment(version: str, path: str, expected: str) -> None:
    bound = UPSTREAM.bind(provider(api_version=version))
    converted = bound.placed(UpstreamRequest(path=path, body={"model": "gpt-4o", "n": 1}))
    assert converted.path == expected
    assert converted.body == {"model": "prod 4o", "n": 1}
    raw = b'{"model" : "gpt-4o", "input": {"model": "inner"}}'
    forwarded = bound.placed(UpstreamRequest(path=path, raw=raw, stream=True))
    assert forwarded.path == expected
    assert forwarded.stream
    assert json.loads(forwarded.raw or b"") == {"model": "prod 4o", "input": {"model": "inner"}}
    once = bound.placed(UpstreamRequest(path=path, raw=b'{"n": 1, "model":"gpt\\u002d4o"}'))
    assert once.raw == b'{"n": 1, "model":"prod 4o"}'


def test_a_model_without_a_deployment_keeps_its_name_and_bytes() -> None:
    bound = UPSTREAM.bind(provider())
    raw = b'{"model":"gpt-4.1","messages":[]}'
    placed = bound.placed(UpstreamRequest(path="/chat/completions", raw=raw))
    assert placed.raw is raw
    assert placed.path == "/openai/deployments/gpt-4.1/chat/completions?api-version=2024-10-21"


def test_unbound_and_other_formats_place_nothing() -> None:
    request = UpstreamRequest(path="/chat/completions", body={"model": "m"})
    assert UPSTREAM.placed(request) is request


@pytest.mark.parametrize(
    "base_url",
    [
        "https://res.openai.azure.com",
        "https://res.openai.azure.com/",
        "https://res.openai.azure.com/openai",
        "https://res.openai.azure.com/openai/v1/",
    ],
)
def test_the_endpoint_as_copied_from_the_portal(base_url: str) -> None:
    assert provider(base_url=base_url).url == "https://res.openai.azure.com"


def test_models_url_and_page() -> None:
    assert UPSTREAM.models_url(provider()) == (
        "https://res.openai.azure.com/openai/deployments?api-version=2023-03-15-preview"
    )
    body = {"data": [{"id": "prod 4o", "model": "gpt-4o"}, {"id": "gpt-4.1"}], "object": "list"}
    page = UPSTREAM.bind(provider()).models_page(body)
    assert page is not None
    assert page.ids == ("gpt-4o", "gpt-4.1")  # the client-facing name of a mapped deployment
    assert UPSTREAM.models_url(provider(api_version="v1")) == (
        "https://res.openai.azure.com/openai/v1/models"
    )


def test_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    assert UPSTREAM.problems(provider()) == []
    found = UPSTREAM.problems(provider(base_url="", api_version="", deployments={"a": " "}))
    assert [p.split(":")[0] for p in found] == [
        "base_url is required",
        "api_version is required",
        "deployments.a",
    ]
    assert "AZURE_OPENAI_ENDPOINT" in found[0]
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    assert UPSTREAM.problems(provider(api_version="")) == []


def test_credentials() -> None:
    (auth,) = UPSTREAM.credentials(provider())
    assert repr(auth) == "<HeaderAuth api-key>"
    (entra,) = UPSTREAM.credentials(provider(api_keys=()))
    assert repr(entra) == "<EntraAuth>"


def test_error_info() -> None:
    info = UPSTREAM.error_info(400, {}, json.loads(fz.content_filter_error()))
    assert info is not None
    assert info.code == "content_filter"
    assert info.param == "prompt"
    assert info.message.endswith("(filtered: violence (high))")
    plain = UPSTREAM.error_info(404, {}, fz.azure_error("DeploymentNotFound", "gone"))
    assert plain is not None
    assert (plain.message, plain.code) == ("gone", "DeploymentNotFound")
    assert UPSTREAM.error_info(500, {}, "oops") is None


SCRIPTS = st.builds(
    Script,
    text=st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    chunks=st.integers(0, 4),
    tool_calls=st.lists(
        st.builds(
            FakeToolCall,
            name=st.sampled_from(["get_weather", "search"]),
            arguments=st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=2).map(
                json.dumps
            ),
        ),
        max_size=2,
    ).map(tuple),
    finish_reason=st.sampled_from([None, "stop", "length", "content_filter"]),
    prompt_tokens=st.integers(0, 100),
)


@given(SCRIPTS, st.booleans(), st.data())
@settings(max_examples=200)
def test_streamed_equals_non_streamed(script: Script, offsets: bool, data: st.DataObject) -> None:
    """Azure's stream (its opening chunk, filter results on every choice, an asynchronous filter's
    closing chunk with offsets and no delta) reads as its non-streamed answer does."""
    chunks = [fz.OPENING_CHUNK]
    chunks += [
        fz.filtered_chunk(c) for c in stream_chunks(script, "gpt-4o-2024-08-06", "id1", True)
    ]
    if offsets:  # the asynchronous filter's last word on the choice, after its finish
        chunks.insert(
            -1,
            {
                "id": "id1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o-2024-08-06",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": None,
                        "content_filter_offsets": {"check_offset": 0, "start_offset": 0},
                        "content_filter_results": fz.SAFE,
                    }
                ],
                "usage": None,
            },
        )
    raw = (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    request = UpstreamRequest(path="/chat/completions", body={"model": "gpt-4o"}, stream=True)
    decoder = UPSTREAM.stream_decoder(request)
    events: list[internal.StreamEvent] = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        events += decoder.feed(raw[start:end])
    events += decoder.end()
    assert isinstance(events[0], internal.Start)
    assert events[0].id == "id1"  # the answer's, not the opening chunk's empty one
    body = fz.filtered_completion(completion(script, "gpt-4o-2024-08-06", "id1"))
    (reply,) = UPSTREAM.reply_to_internal(body, request)
    assert internal.accumulate(events) == reply
    if script.finish_reason == "content_filter" and not script.tool_calls:
        assert reply.stop == "content_filter"


def test_without_the_azure_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """No keys and no azure-identity: ``check`` names the extra, and so would the first request."""
    import sys

    import trio

    from proxycast.errors import UpstreamCredentialsError
    from proxycast.formats.azure import entra, upstream

    monkeypatch.setattr(upstream, "_installed", lambda module: False)
    (problem,) = UPSTREAM.problems(provider(api_keys=()))
    assert "pip install 'proxycast[azure]'" in problem
    assert UPSTREAM.problems(provider()) == []  # keys need no extra
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # its import fails
    with pytest.raises(UpstreamCredentialsError, match=r"proxycast\[azure\]"):
        trio.run(entra.EntraAuth().token)


def test_stream_options_only_where_the_version_has_them() -> None:
    streamed = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}}
    raw = json.dumps(streamed).encode()
    for version, kept in (("2024-06-01", False), ("2024-10-21", True), ("v1", True)):
        bound = UPSTREAM.bind(provider(api_version=version))
        body = bound.placed(UpstreamRequest(path="/chat/completions", body=streamed, stream=True))
        forwarded = bound.placed(UpstreamRequest(path="/chat/completions", raw=raw, stream=True))
        assert ("stream_options" in body.body) is kept
        assert ("stream_options" in json.loads(forwarded.raw or b"")) is kept
        assert json.loads(forwarded.raw or b"")["model"] == "prod 4o"
