"""OpenTelemetry traces (``[telemetry]``): the SDK's OTLP/HTTP exporter posts to a receiver here, which
decodes the protobuf and checks the spans of a retried streamed request: the request span (GenAI
semantic conventions and proxycast's own attributes) under the client's ``traceparent``, its two
attempt spans, the ``traceparent`` each upstream request carried; no body and no key anywhere. Off (the
default), opentelemetry is never imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import openai
import pytest
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from proxycast.accounting.records import Accounting
from proxycast.config import (
    Config,
    ProviderConfig,
    RoutingConfig,
    ServerConfig,
    TelemetryConfig,
    load_config,
)
from proxycast.core.redact import Redactor
from proxycast.errors import ConfigError
from proxycast.testing import FakeOpenAI, Script
from proxycast.testing._server import HTTPServer
from tests.support import CLIENT_KEY, start_gateway

if TYPE_CHECKING:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from proxycast.testing._server import RecordedRequest, Responder

KEYS = ("sk-key-one-aaaaaaaaaaaaaaaa", "sk-key-two-bbbbbbbbbbbbbbbb")
PROMPT = "the-secret-prompt-words"
ANSWER = "the answer from key two"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


class Receiver:
    """An OTLP/HTTP collector: ``POST /v1/traces`` with an ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self.server = HTTPServer(self._handle)
        self.spans: list[Span] = []
        self.resources: list[dict[str, Any]] = []
        self.arrived = trio.Event()

    async def _handle(self, request: RecordedRequest, respond: Responder) -> None:
        assert (request.method, request.route) == ("POST", "/v1/traces")
        assert request.headers["content-type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest()
        export.ParseFromString(request.body)
        for resource_spans in export.resource_spans:
            self.resources.append(_attributes(resource_spans.resource.attributes))
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        await respond.start(
            200, [("content-type", "application/x-protobuf"), ("content-length", "0")]
        )
        await respond.end()
        self.arrived.set()
        self.arrived = trio.Event()

    async def wait_for_spans(self, count: int) -> list[Span]:
        with trio.fail_after(20):
            while len(self.spans) < count:
                await self.arrived.wait()
        return self.spans


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@pytest.fixture(name="fast_export")
def _fast_export(monkeypatch: pytest.MonkeyPatch) -> None:
    # the batch processor's delay (5 s by default) and the exporter's timeout: a test's own pace
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "3")


def telemetry_config(fake_url: str, endpoint: str) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,)),
        providers=(
            ProviderConfig(
                name="local", type="openai", base_url=fake_url, api_keys=KEYS, models=("m",)
            ),
        ),
        routing=RoutingConfig(),
        telemetry=TelemetryConfig(otlp_endpoint=endpoint, service_name="gateway-under-test"),
    )


async def test_a_retried_stream_is_a_request_span_with_an_attempt_span_each(
    nursery: trio.Nursery, fast_export: None
) -> None:
    receiver = Receiver()
    endpoint = await nursery.start(receiver.server.serve)
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, telemetry_config(fake.base_url, endpoint))
    fake.script(Script(status=429, headers=(("retry-after", "20"),)), Script(text=ANSWER))
    parent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": parent, "tracestate": "vendor=kept"},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == ANSWER

    spans = await receiver.wait_for_spans(3)
    assert len(spans) == 3
    assert receiver.resources[0]["service.name"] == "gateway-under-test"
    assert receiver.resources[0]["process.pid"] == os.getpid()  # the worker's (here: this process)
    (request,) = [s for s in spans if s.kind == s.SPAN_KIND_SERVER]
    attempts = sorted(
        (s for s in spans if s.kind == s.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano
    )
    assert len(attempts) == 2

    # the request span: the client's trace, a child of the client's span
    assert request.trace_id.hex() == CLIENT_TRACE
    assert request.parent_span_id.hex() == CLIENT_SPAN
    assert request.name == "chat m"
    attributes = _attributes(request.attributes)
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "gen_ai.request.stream": True,
        "gen_ai.response.model": "m",
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 11,  # the fake's usage
        "gen_ai.usage.output_tokens": attributes["gen_ai.usage.output_tokens"],
        "http.request.method": "POST",
        "url.path": "/v1/chat/completions",
        "http.response.status_code": 200,
        "proxycast.request_id": attributes["proxycast.request_id"],
        "proxycast.client": "-",  # a [server].api_keys key: unnamed
        "proxycast.api": "openai",
        "proxycast.attempts": 2,
        "proxycast.provider": "local",
        "proxycast.key": "local#2",
        "proxycast.ttft": attributes["proxycast.ttft"],
    }
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert request.status.code != request.status.STATUS_CODE_ERROR

    # the attempts: children of the request span, the first rate limited and retried
    first, second = (_attributes(a.attributes) for a in attempts)
    for attempt in attempts:
        assert attempt.trace_id == request.trace_id
        assert attempt.parent_span_id == request.span_id
        assert attempt.name == "chat m"
        assert request.start_time_unix_nano <= attempt.start_time_unix_nano
        assert attempt.end_time_unix_nano <= request.end_time_unix_nano
    assert first["proxycast.key"] == "local#1"
    assert first["proxycast.attempt.outcome"] == "429"
    assert first["http.response.status_code"] == 429
    assert first["error.type"] == "429"
    assert first["proxycast.attempt.retried"] is True
    assert attempts[0].status.code == attempts[0].status.STATUS_CODE_ERROR
    assert attempts[0].end_time_unix_nano <= attempts[1].start_time_unix_nano
    assert second["proxycast.key"] == "local#2"
    assert second["proxycast.attempt.outcome"] == "200"
    assert "error.type" not in second
    for each in (first, second):
        assert each["gen_ai.operation.name"] == "chat"
        assert each["gen_ai.provider.name"] == "openai"
        assert each["gen_ai.request.model"] == "m"
        assert each["server.address"] == "127.0.0.1"

    # each upstream request carried its attempt's span as its parent, and the client's tracestate
    assert len(fake.requests) == 2
    for sent, attempt in zip(fake.requests, attempts, strict=True):
        version, trace_id, span_id, flags = sent.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
        assert span_id == attempt.span_id.hex()
        assert sent.headers["tracestate"] == "vendor=kept"

    # names, labels, counts: never a body, never a key
    for span in spans:
        for value in _attributes(span.attributes).values():
            for secret in (*KEYS, CLIENT_KEY, PROMPT, ANSWER):
                assert secret not in str(value)


async def test_a_request_without_a_traceparent_starts_a_trace(
    nursery: trio.Nursery, fast_export: None
) -> None:
    receiver = Receiver()
    endpoint = await nursery.start(receiver.server.serve)
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    gateway = await start_gateway(nursery, telemetry_config(fake.base_url, endpoint))
    async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0) as client:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}]
        )
        with pytest.raises(openai.NotFoundError):  # a model route, refused before any upstream
            await client.chat.completions.create(
                model="nowhere", messages=[{"role": "user", "content": "Hi"}]
            )
        await client.embeddings.create(model="m", input=PROMPT)
    spans = await receiver.wait_for_spans(5)
    request, attempt, refused, embedding, embedding_attempt = sorted(
        spans, key=lambda s: (s.start_time_unix_nano, s.kind != s.SPAN_KIND_SERVER)
    )
    assert request.parent_span_id == b""  # a root
    assert attempt.parent_span_id == request.span_id
    assert fake.requests[0].headers["traceparent"].split("-")[2] == attempt.span_id.hex()
    assert "tracestate" not in fake.requests[0].headers
    assert refused.parent_span_id == b""
    assert refused.trace_id != request.trace_id
    refused_attributes = _attributes(refused.attributes)
    assert refused_attributes["http.response.status_code"] == 404
    assert refused_attributes["error.type"] == "not_found"
    assert refused_attributes["proxycast.attempts"] == 0
    assert "gen_ai.provider.name" not in refused_attributes
    assert refused.status.code == refused.status.STATUS_CODE_ERROR
    assert embedding.name == "embeddings m"
    assert embedding_attempt.parent_span_id == embedding.span_id
    assert _attributes(embedding.attributes)["gen_ai.operation.name"] == "embeddings"
    assert _attributes(embedding.attributes)["gen_ai.usage.input_tokens"] > 0
    assert _attributes(embedding_attempt.attributes)["proxycast.attempt.outcome"] == "200"
    assert fake.requests[1].headers["traceparent"].split("-")[2] == embedding_attempt.span_id.hex()


async def test_a_reload_keeps_the_tracer() -> None:
    config = telemetry_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    accounting = Accounting(config, Redactor([]))
    assert accounting.tracing is not None
    changed = attrs.evolve(config, telemetry=TelemetryConfig())  # a restart would turn it off
    assert accounting.reconfigured(changed, Redactor([])).tracing is accounting.tracing
    await accounting.aclose()


OFF = textwrap.dedent(
    """
    import sys
    from functools import partial

    import httpx
    import trio

    import proxycast
    from proxycast.config import Config, ProviderConfig, ServerConfig
    from proxycast.testing import FakeOpenAI


    async def main():
        async with trio.open_nursery() as nursery:
            fake = FakeOpenAI()
            await nursery.start(fake.serve)
            config = Config(
                server=ServerConfig(port=0, api_keys=("k",)),
                providers=(ProviderConfig(name="local", type="openai", base_url=fake.base_url,
                                          api_keys=("sk-x",), models=("m",)),),
            )
            binds = await nursery.start(partial(proxycast.serve, config))
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    binds[0] + "/v1/chat/completions",
                    headers={"authorization": "Bearer k", "traceparent":
                             "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                    json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
                )
            assert answer.status_code == 200, answer.text
            assert "traceparent" not in fake.requests[0].headers
            nursery.cancel_scope.cancel()
        imported = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert imported == [], imported
        print("no opentelemetry")


    trio.run(main)
    """
)


def test_off_imports_no_opentelemetry_and_sends_no_traceparent(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", OFF],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**_env(), "PROXYCAST_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no opentelemetry"


def _env() -> dict[str, str]:
    root = Path(__file__).parent.parent
    return {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        pytest.param('otlp_endpoint = "127.0.0.1:4317"', "telemetry.otlp_endpoint", id="scheme"),
        pytest.param("sample = 1.5", "telemetry.sample", id="sample"),
        pytest.param('service_name = " "', "telemetry.service_name", id="service-name"),
        pytest.param('otlp_endpont = "http://x"', "otlp_endpont", id="typo"),
    ],
)
def test_a_bad_telemetry_table_is_refused(tmp_path: Path, table: str, problem: str) -> None:
    path = tmp_path / "proxycast.toml"
    path.write_text(f'[server]\napi_keys = ["k"]\n\n[telemetry]\n{table}\n')
    with pytest.raises(ConfigError, match=problem):
        load_config(path, env={})


def test_the_telemetry_table_reads(tmp_path: Path) -> None:
    path = tmp_path / "proxycast.toml"
    path.write_text(
        '[server]\napi_keys = ["k"]\n\n[telemetry]\notlp_endpoint = "http://127.0.0.1:4318"\n'
        "sample = 0.25\n"
    )
    telemetry = load_config(path, env={}).telemetry
    assert telemetry == TelemetryConfig(otlp_endpoint="http://127.0.0.1:4318", sample=0.25)
