"""The Anthropic Messages API: ``/v1/messages`` and ``/v1/messages/count_tokens``, from every upstream kind.

An Anthropic upstream gets the client's body as it was written (model renamed, key replaced) and its
answer is relayed event by event; OpenAI-compatible and Gemini upstreams are reached through the
internal model (PROTOCOLS.md 3.2, 3.3 and 4).
"""

from __future__ import annotations

import json
import math
from functools import partial
from typing import Any

import attrs
from cattrs.errors import BaseValidationError
from quart import Blueprint, Response, request

from proxycast import models, routing
from proxycast._convert import describe_problems
from proxycast._json import replace_value
from proxycast.api._common import (
    json_object,
    json_response,
    parse_and_validate,
    read_all,
    stream_response,
)
from proxycast.api.openai import rename_model
from proxycast.app import gateway
from proxycast.codecs import anthropic as anthropic_codec
from proxycast.codecs import gemini as gemini_codec
from proxycast.codecs import openai as openai_codec
from proxycast.errors import InvalidRequestError
from proxycast.providers._http import Upstream
from proxycast.providers.anthropic import AnthropicUpstream
from proxycast.providers.gemini import GeminiUpstream
from proxycast.providers.openai import OpenAIUpstream
from proxycast.relay import AnthropicPassthrough, Converting
from proxycast.wire import anthropic as wire

blueprint = Blueprint("anthropic", __name__)

ESTIMATE_HEADER = "x-proxycast-token-count"
"""Set to ``estimate`` on count_tokens answers that proxycast estimated (OpenAI-compatible upstreams)."""


def _validate(body: dict[str, Any], cls: type[Any]) -> Any:
    try:
        return wire.converter.structure(body, cls)
    except BaseValidationError as exc:
        message, param = describe_problems(exc)
    raise InvalidRequestError(message, param=param)


def _client_headers() -> dict[str, str]:
    """The client's ``anthropic-version`` and ``anthropic-beta``, passed to an Anthropic upstream."""
    return {k: v for k in ("anthropic-version", "anthropic-beta") if (v := request.headers.get(k))}


def _renamed_names(tools: tuple[models.Tool, ...]) -> dict[str, str]:
    """OpenAI-side tool names (shortened to 64 characters) -> the names the client declared."""
    return {openai_codec.short_tool_name(t.name): t.name for t in tools}


@attrs.frozen
class _Incoming:
    """A request body read, validated and routed."""

    text: str
    spans: dict[str, tuple[int, int]]
    parsed: Any
    route: routing.Route
    upstream: Upstream

    @classmethod
    async def read(cls, request_type: type[Any]) -> _Incoming:
        raw = await request.get_data(cache=False)
        assert isinstance(raw, bytes)
        text, spans, parsed = await parse_and_validate(raw, partial(_validate, cls=request_type))
        state = gateway()
        route = routing.resolve(parsed.model, state.config)
        return cls(text, spans, parsed, route, state.upstream(route.provider.name))

    def forwarded(self) -> bytes:
        """The body for an upstream of the same format: as written, with the upstream's model name."""
        if self.route.upstream_model == self.parsed.model:
            return self.text.encode()
        return replace_value(self.text, self.spans["model"], self.route.upstream_model).encode()


@blueprint.post("/v1/messages")
async def messages() -> Response:
    incoming = await _Incoming.read(wire.MessagesRequest)
    parsed: wire.MessagesRequest = incoming.parsed
    route, upstream = incoming.route, incoming.upstream
    stream = bool(parsed.stream)
    if isinstance(upstream, AnthropicUpstream):
        response = await upstream.messages(incoming.forwarded(), _client_headers())
        if not stream:
            data = await read_all(upstream, response)
            return Response(rename_model(data, parsed.model), content_type="application/json")
        return stream_response(
            upstream, response, AnthropicPassthrough(parsed.model, upstream.provider.name)
        )
    conversation = anthropic_codec.request_to_internal(parsed)
    encoder = anthropic_codec.StreamEncoder(parsed.model)
    if isinstance(upstream, OpenAIUpstream):
        names = _renamed_names(conversation.tools)
        response = await upstream.chat(
            openai_codec.request_from_internal(conversation, route.upstream_model)
        )
        if not stream:
            reply = openai_codec.response_to_internal(
                json_object(upstream, await read_all(upstream, response))
            )
            return json_response(
                anthropic_codec.response_from_internal(_named(reply, names), parsed.model)
            )
        translator = Converting(
            _NameRestoring(openai_codec.StreamDecoder(), names), encoder, upstream.provider.name
        )
        return stream_response(upstream, response, translator)
    assert isinstance(upstream, GeminiUpstream)
    gemini_body = gemini_codec.request_from_internal(conversation, route.upstream_model)
    response = await upstream.generate(route.upstream_model, gemini_body, stream=stream)
    if not stream:
        replies = gemini_codec.response_to_internal(
            json_object(upstream, await read_all(upstream, response))
        )
        return json_response(anthropic_codec.response_from_internal(replies[0], parsed.model))
    return stream_response(
        upstream,
        response,
        Converting(gemini_codec.StreamDecoder(), encoder, upstream.provider.name),
    )


def _named(reply: models.Reply, names: dict[str, str]) -> models.Reply:
    parts = tuple(
        attrs.evolve(p, name=names.get(p.name, p.name)) if isinstance(p, models.ToolCall) else p
        for p in reply.parts
    )
    return attrs.evolve(reply, parts=parts)


class _NameRestoring:
    """A stream decoder whose tool calls carry the names the client declared (not the shortened ones)."""

    def __init__(self, decoder: openai_codec.StreamDecoder, names: dict[str, str]) -> None:
        self._decoder = decoder
        self._names = names

    def _restore(self, events: list[models.StreamEvent]) -> list[models.StreamEvent]:
        return [
            attrs.evolve(e, name=self._names.get(e.name, e.name))
            if isinstance(e, models.ToolCallStart)
            else e
            for e in events
        ]

    def feed(self, event: Any) -> list[models.StreamEvent]:
        return self._restore(self._decoder.feed(event))

    def end(self) -> list[models.StreamEvent]:
        return self._restore(self._decoder.end())


@blueprint.post("/v1/messages/count_tokens")
async def count_tokens() -> Response:
    incoming = await _Incoming.read(wire.CountTokensRequest)
    parsed: wire.CountTokensRequest = incoming.parsed
    route, upstream = incoming.route, incoming.upstream
    if isinstance(upstream, AnthropicUpstream):
        response = await upstream.count_tokens(incoming.forwarded(), _client_headers())
        return Response(await read_all(upstream, response), content_type="application/json")
    conversation = anthropic_codec.request_to_internal(parsed)
    if isinstance(upstream, GeminiUpstream):
        gemini_body = gemini_codec.request_from_internal(conversation, route.upstream_model)
        gemini_body.pop("generationConfig", None)
        response = await upstream.count_tokens(route.upstream_model, gemini_body)
        counted = json_object(upstream, await read_all(upstream, response))
        return json_response({"input_tokens": int(counted.get("totalTokens") or 0)})
    # OpenAI-compatible servers have no count endpoint: estimate from the text the model would read.
    return json_response(
        {
            "input_tokens": estimate_tokens(
                openai_codec.request_from_internal(conversation, route.upstream_model)
            )
        },
        headers={ESTIMATE_HEADER: "estimate"},
    )


def estimate_tokens(body: dict[str, Any]) -> int:
    """About four characters a token (OpenAI's rule of thumb for English), over the messages and tools,
    plus a few tokens of framing per message. An estimate, and said to be one."""
    text = json.dumps(body.get("messages", []), ensure_ascii=False) + json.dumps(
        body.get("tools", [])
    )
    return math.ceil(len(text) / 4) + 3 * len(body.get("messages", []))
