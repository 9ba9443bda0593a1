"""OpenTelemetry traces of model requests (``[telemetry]``, ``proxycast[otel]``).

Each model request is a span (kind server) that follows the GenAI semantic conventions
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.provider.name``, ``gen_ai.usage.*``) with proxycast's own attributes (``proxycast.client``,
``proxycast.api``, ``proxycast.route``...); each upstream attempt is a child span (kind client: the
provider, its key's label, what happened and whether the request went on). A client's W3C
``traceparent`` makes the request span its child; each upstream request carries its attempt span's
``traceparent``. Spans carry no body and no key, only names, labels, counts and statuses.

This module is imported only when ``telemetry.otlp_endpoint`` is set: with it empty, opentelemetry is
never imported and the request path's hooks are one ``None`` check each. The SDK's
``BatchSpanProcessor`` exports from a thread of its own in batches (OTLP/HTTP, protobuf), off the
request path: a request only appends its finished spans to the processor's queue. Each worker process
has its own (several workers export separately, as several instances would).

The spans are built as the request goes: the request span opens with the first upstream attempt
(its start time the request's arrival), so that the attempts are its children and their
``traceparent`` goes upstream; an attempt's outcome is the plan's (:mod:`proxycast.core.attempts`),
known when the attempts are over; the request span ends with the request's record, when its answer
(a stream included) is over, with the status, the model and the usage the record holds then.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

import httpx
import trio
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxycast.upstream.provider import TRACE_HEADERS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from hypercorn.typing import HTTPScope
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

    from proxycast.accounting.records import Record
    from proxycast.config import TelemetryConfig
    from proxycast.core.answer import Answer
    from proxycast.core.attempts import Attempt
    from proxycast.formats import internal

PROVIDER_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
}
"""Provider ``type`` -> ``gen_ai.provider.name`` (the semantic conventions' well-known values; an
OpenAI-compatible server is ``openai``, the API it speaks)."""

_PROPAGATOR = TraceContextTextMapPropagator()

CLOSE_SECONDS = 5.0
"""How long the server's stop waits for the last spans to be exported."""


def traces_url(endpoint: str) -> str:
    """The URL spans are posted to: ``endpoint``'s ``/v1/traces``, as ``OTEL_EXPORTER_OTLP_ENDPOINT``
    means it (an endpoint that names the path already is taken as it is)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class Tracing:
    """The tracer of one worker and its exporter.

    Args:
        config: ``[telemetry]`` (its ``otlp_endpoint`` set).
    """

    def __init__(self, config: TelemetryConfig) -> None:
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(config.sample)),
            # a worker's spans tell which process made them (several workers export separately)
            resource=Resource.create(
                {"service.name": config.service_name, "process.pid": os.getpid()}
            ),
            shutdown_on_exit=False,  # aclose() flushes it, at the end of the drain
        )
        # OTEL_EXPORTER_OTLP_HEADERS (a collector's token), _TIMEOUT, _COMPRESSION and
        # OTEL_BSP_* (batch size, delay) are read by the SDK from the environment
        exporter = OTLPSpanExporter(endpoint=traces_url(config.otlp_endpoint))
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("proxycast")

    def begin(self, scope: HTTPScope, at: float) -> RequestTrace:
        """The trace of a request that just arrived (``at``: Unix seconds): its parent is the
        client's ``traceparent``."""
        carrier = {}
        for name, value in scope["headers"]:
            if name in (b"traceparent", b"tracestate"):
                carrier[name.decode()] = value.decode("latin-1")
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        return RequestTrace(self.tracer, parent, int(at * 1e9))

    async def aclose(self) -> None:
        """Export what is left and stop the exporter's thread (the SDK's calls block: in a thread),
        for :data:`CLOSE_SECONDS` at most: a collector that is down must not hold the server's
        exit (the exporter retries until its own timeout)."""
        with trio.move_on_after(CLOSE_SECONDS):
            await trio.to_thread.run_sync(self.provider.shutdown, abandon_on_cancel=True)


class RequestTrace:
    """The spans of one request (:attr:`Record.trace <proxycast.accounting.records.Record.trace>`)."""

    __slots__ = ("_at", "_attempts", "_parent", "_span", "_tracer", "_types", "operation")

    def __init__(self, tracer: trace.Tracer, parent: Context | None, at: int) -> None:
        self._tracer = tracer
        self._parent = parent
        self._at = at
        self._span: Span | None = None
        self._attempts: dict[Attempt, _AttemptSpan] = {}
        self._types: dict[str, str] = {}
        """Provider name -> type, of the providers attempted."""
        self.operation = ""
        """``gen_ai.operation.name``, once the exchange has run an attempt."""

    def traced(
        self, attempt: Callable[[Attempt], Awaitable[Answer]], operation: str
    ) -> Callable[[Attempt], Awaitable[Answer]]:
        """``attempt`` inside a span of its own, its upstream request carrying the span's
        ``traceparent``. ``operation``: ``chat`` or ``embeddings``."""
        self.operation = operation

        async def run(chosen: Attempt) -> Answer:
            span = self._attempt_span(chosen)
            token = TRACE_HEADERS.set(_headers(span))
            try:
                return await attempt(chosen)
            except BaseException:
                self._attempts[chosen].ended = time.time_ns()
                raise
            finally:
                TRACE_HEADERS.reset(token)

        return run

    def _attempt_span(self, chosen: Attempt) -> Span:
        if self._span is None:
            self._span = self._tracer.start_span(
                self.operation, context=self._parent, kind=SpanKind.SERVER, start_time=self._at
            )
        model = chosen.route.upstream_model
        provider = chosen.provider
        span = self._tracer.start_span(
            f"{self.operation} {model}",
            context=trace.set_span_in_context(self._span),
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": self.operation,
                "gen_ai.request.model": model,
                "gen_ai.provider.name": PROVIDER_NAMES.get(provider.config.type, "openai"),
                "proxycast.provider": provider.name,
                "proxycast.key": chosen.label,
                "proxycast.attempt": len(self._attempts) + 1,
                **_server(provider.url),
            },
        )
        self._attempts[chosen] = _AttemptSpan(span)
        self._types[provider.name] = provider.config.type
        return span

    def settled(self, outcomes: Sequence[tuple[Attempt, str]]) -> None:
        """The attempts are over (one answered, or none will): each span gets its outcome, and the
        failed ones end when they failed (the one that answered ends with the request)."""
        for index, (chosen, outcome) in enumerate(outcomes):
            made = self._attempts.get(chosen)
            if made is None:
                continue
            span = made.span
            span.set_attribute("proxycast.attempt.outcome", outcome)
            if outcome.isdigit():
                span.set_attribute("http.response.status_code", int(outcome))
            if made.ended is None and outcome.isdigit() and int(outcome) < 400:
                continue  # the answer: its span lasts as long as its upstream response is read
            span.set_attribute("proxycast.attempt.retried", index + 1 < len(outcomes))
            span.set_attribute("error.type", "cancelled" if outcome == "pending" else outcome)
            span.set_status(Status(StatusCode.ERROR))
            span.end(made.ended)
            del self._attempts[chosen]

    def finish(self, record: Record, status: int, usage: internal.Usage) -> None:
        """The request is over: its span gets what the record knows and ends (as does the span of
        the attempt that answered). A model request that never reached an upstream (refused by a
        limit, a model it may not use) gets a span of its own, without attempts."""
        for made in self._attempts.values():  # the answer's: its response is over too
            made.span.end()
        self._attempts.clear()
        span = self._span
        if span is None:
            if not record.api or status < 400:  # not a model call (a token count, say)
                return
            self.operation = "embeddings" if record.api == "embeddings" else "chat"
            span = self._tracer.start_span(
                self.operation,
                context=self._parent,
                kind=SpanKind.SERVER,
                start_time=self._at,
            )
        span.update_name(f"{self.operation} {record.model}")
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.request.model": record.model,
            "gen_ai.request.stream": record.streamed,
            "http.request.method": record.method,
            "url.path": record.path,
            "http.response.status_code": status,
            "proxycast.request_id": record.request_id,
            "proxycast.client": record.client.name,
            "proxycast.api": record.api,
            "proxycast.attempts": len(record.attempts),
        }
        if record.route:
            attributes["proxycast.route"] = record.route
        if record.provider:
            provider_type = self._types.get(record.provider, "")
            attributes |= {
                "gen_ai.response.model": record.upstream_model,
                "gen_ai.provider.name": PROVIDER_NAMES.get(provider_type, "openai"),
                "proxycast.provider": record.provider,
                "proxycast.key": record.key,
                # input_tokens counts every input token, those read from or written to a cache too
                "gen_ai.usage.input_tokens": usage.input + usage.cache_read + usage.cache_write,
                "gen_ai.usage.output_tokens": usage.output,
            }
            if usage.cache_read:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read
            if usage.cache_write:
                attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write
            if usage.reasoning:
                attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning
            if usage.estimated:
                attributes["proxycast.usage.estimated"] = True
        if record.ttft is not None:
            attributes["proxycast.ttft"] = record.ttft
        if status >= 400:
            attributes["error.type"] = record.error_type or str(status)
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(attributes)
        span.end()


class _AttemptSpan:
    __slots__ = ("ended", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.ended: int | None = None
        """When it failed (Unix nanoseconds); None while it runs, or once it answered."""


def _headers(span: Span) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) naming ``span``, for its upstream request."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def _server(url: str) -> dict[str, str | int]:
    """``server.address`` and ``server.port`` of a provider's URL (without its user info)."""
    with contextlib.suppress(httpx.InvalidURL):
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return {"server.address": parsed.host, "server.port": port}
    return {}
