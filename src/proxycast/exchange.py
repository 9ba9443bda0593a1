"""The exchange: the one place where a client's request meets an upstream.

A validated inbound request is routed by its model to a provider; then either the client's own bytes are
forwarded (the provider speaks the client's format) or the request goes through the internal model
(inbound dialect -> hub -> upstream format); the upstream's answer comes back the same way, streamed
or not. The exchange knows the two contracts of ``proxycast.formats.contracts`` and no format by name.

An upstream response opened here is owned by the request: the streamed body closes it when it ends or
its client goes away, and the request's resource stack (:func:`request_resources`) closes it in every
other case, so that an upstream connection never outlives its client.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import Response

from proxycast import formats, routing
from proxycast.config import Config
from proxycast.formats.contracts import Estimate
from proxycast.redact import Redactor, config_secrets
from proxycast.relay import Converting, Relay
from proxycast.upstreams import Provider, aclose_shielded

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from proxycast.formats.contracts import InboundDialect, InboundRequest, Translator

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_CLOSE_SECONDS = 10.0

_request_resources: contextvars.ContextVar[contextlib.AsyncExitStack] = contextvars.ContextVar(
    "proxycast_request_resources"
)


def request_resources() -> contextlib.AsyncExitStack:
    """The current request's resource stack: what is pushed here is closed when the request ends,
    however it ends (answered, failed, or its client gone)."""
    return _request_resources.get()


@contextlib.asynccontextmanager
async def request_scope() -> AsyncIterator[None]:
    """The extent of one HTTP request: its resource stack, closed (shielded) when it ends."""
    stack = contextlib.AsyncExitStack()
    token = _request_resources.set(stack)
    try:
        yield
    finally:
        _request_resources.reset(token)
        with trio.move_on_after(_CLOSE_SECONDS, shield=True):
            await stack.aclose()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers
    )


@attrs.define(eq=False)
class Exchange:
    """What the requests of one worker share: the configuration and the providers (with the pooled
    upstream client inside them)."""

    config: Config
    providers: dict[str, Provider] = attrs.field(factory=dict)
    redact: Redactor = attrs.field(
        default=attrs.Factory(lambda self: Redactor(config_secrets(self.config)), takes_self=True)
    )
    """Hides the configured secrets in what goes to clients and logs."""
    inflight_body_bytes: int = 0
    """Request body bytes the requests in progress may hold (``server.max_inflight_body_bytes``)."""

    def connect(self, client: httpx.AsyncClient) -> None:
        """Use ``client`` (the worker's pooled client) for every provider."""
        self.providers = {
            p.name: Provider(p, formats.UPSTREAMS[p.type], self.config.server, client)
            for p in self.config.providers
        }

    def _route(self, model: str) -> tuple[routing.Route, Provider]:
        route = routing.resolve(model, self.config)
        return route, self.providers[route.provider.name]

    async def generate(self, dialect: InboundDialect, request: InboundRequest) -> Response:
        """A model's answer to ``request``, in the client's dialect, streamed or not."""
        route, provider = self._route(request.client_model)
        model = request.client_model
        if dialect.forwards_to(provider.config, request):
            response = await provider.open(dialect.forward(request, route.upstream_model))
            if not request.stream:
                data = await provider.read_all(response)
                return Response(
                    dialect.forwarded_reply(data, model, provider.name),
                    status=response.status_code,
                    content_type="application/json",
                )
            translator = dialect.forwarded_stream(model, provider.name, self.redact)
            return _stream(provider, response, translator)
        conversation = dialect.request_to_internal(request)
        upstream_request = provider.format.request_from_internal(conversation, route.upstream_model)
        response = await provider.open(upstream_request)
        if not request.stream:
            body = await provider.read_object(response)
            replies = provider.format.reply_to_internal(body, upstream_request)
            return json_response(dialect.reply_from_internal(replies, model, conversation))
        translator = Converting(
            provider.format.stream_decoder(upstream_request),
            dialect.stream_encoder(model, conversation),
            provider.name,
            self.redact,
        )
        return _stream(provider, response, translator)

    async def count_tokens(self, dialect: InboundDialect, request: InboundRequest) -> Response:
        """The number of input tokens ``request`` would take: counted by the upstream where it can,
        else estimated (and the answer says so: ``x-proxycast-token-count: estimate``)."""
        route, provider = self._route(request.client_model)
        model = request.client_model
        if dialect.forwards_to(provider.config, request):
            response = await provider.open(dialect.forward(request, route.upstream_model))
            data = await provider.read_all(response)
            data = dialect.forwarded_reply(data, model, provider.name)
            return Response(data, content_type="application/json")
        conversation = dialect.request_to_internal(request)
        count = provider.format.count_tokens(conversation, route.upstream_model)
        if isinstance(count, Estimate):
            return json_response(
                dialect.tokens_counted(count.input_tokens), headers={ESTIMATE_HEADER: "estimate"}
            )
        response = await provider.open(count.request)
        counted = count.read(await provider.read_object(response))
        return json_response(dialect.tokens_counted(counted))


ESTIMATE_HEADER = "x-proxycast-token-count"
"""Set to ``estimate`` on token counts that proxycast estimated (the upstream cannot count)."""


def _stream(provider: Provider, response: httpx.Response, translator: Translator) -> Response:
    """The streamed answer: upstream pieces relayed through ``translator`` as they arrive."""
    chunks = provider.body(response)

    async def close() -> None:
        await chunks.aclose()
        await aclose_shielded(response)

    # quart closes the body once it sends it; the request's stack closes it if that never happens
    request_resources().push_async_callback(close)
    relay = Relay(chunks, translator, close)
    result = Response(relay, status=200, content_type="text/event-stream", headers=SSE_HEADERS)
    result.timeout = None
    return result
