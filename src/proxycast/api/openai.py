"""The OpenAI-compatible API: ``/v1/chat/completions`` and ``/v1/models``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cattrs.errors import BaseValidationError
from quart import Blueprint, Response, request

from proxycast import routing
from proxycast._convert import describe_problems
from proxycast._json import NotAnObjectError, parse_object, replace_value
from proxycast.api._common import (
    json_object,
    json_response,
    parse_and_validate,
    read_all,
    stream_response,
)
from proxycast.app import gateway
from proxycast.codecs import anthropic as anthropic_codec
from proxycast.codecs import gemini as gemini_codec
from proxycast.codecs import openai as openai_codec
from proxycast.errors import InvalidRequestError
from proxycast.providers.anthropic import AnthropicUpstream
from proxycast.providers.gemini import GeminiUpstream
from proxycast.providers.openai import OpenAIUpstream
from proxycast.relay import Converting, OpenAIPassthrough
from proxycast.wire import openai as wire

if TYPE_CHECKING:
    from proxycast.config import ProviderConfig

blueprint = Blueprint("openai", __name__)

_STARTED = int(time.time())
_OWNERS = {"anthropic": "anthropic", "gemini": "google"}


def _owner(provider: ProviderConfig) -> str:
    if provider.type in _OWNERS:
        return _OWNERS[provider.type]
    if provider.url.startswith("https://api.openai.com"):
        return "openai"
    return provider.name


def _model_object(model_id: str, provider: ProviderConfig) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _STARTED, "owned_by": _owner(provider)}


@blueprint.get("/v1/models")
async def list_models() -> Response:
    config = gateway().config
    data = [_model_object(name, provider) for name, provider in routing.listed_models(config)]
    return json_response({"object": "list", "data": data})


@blueprint.get("/v1/models/<path:model_id>")
async def retrieve_model(model_id: str) -> Response:
    route = routing.resolve(model_id, gateway().config)
    return json_response(_model_object(model_id, route.provider))


def validate(body: dict[str, Any]) -> wire.ChatCompletionRequest:
    """The body as a Chat Completions request; 400 naming every field that is missing or mistyped."""
    try:
        return wire.converter.structure(body, wire.ChatCompletionRequest)
    except BaseValidationError as exc:
        message, param = describe_problems(exc)
    raise InvalidRequestError(message, param=param)


@blueprint.post("/v1/chat/completions")
async def chat_completions() -> Response:
    raw = await request.get_data(cache=False)
    assert isinstance(raw, bytes)
    text, spans, parsed = await parse_and_validate(raw, validate)
    state = gateway()
    route = routing.resolve(parsed.model, state.config)
    upstream = state.upstream(route.provider.name)
    if isinstance(upstream, OpenAIUpstream):
        if route.upstream_model != parsed.model:
            text = replace_value(text, spans["model"], route.upstream_model)
            raw = text.encode()
        return await _passthrough(upstream, raw, parsed)
    if isinstance(upstream, AnthropicUpstream):
        return await _via_anthropic(upstream, route.upstream_model, parsed)
    assert isinstance(upstream, GeminiUpstream)
    return await _via_gemini(upstream, route.upstream_model, parsed)


async def _passthrough(
    upstream: OpenAIUpstream, raw: bytes, parsed: wire.ChatCompletionRequest
) -> Response:
    """Same format both ends: the body as the client wrote it (model renamed), the answer likewise."""
    response = await upstream.chat(raw)
    if not parsed.stream:
        data = await read_all(upstream, response)
        return Response(
            rename_model(data, parsed.model),
            status=response.status_code,
            content_type="application/json",
        )
    return stream_response(
        upstream, response, OpenAIPassthrough(parsed.model, upstream.provider.name)
    )


async def _via_anthropic(
    upstream: AnthropicUpstream, model: str, parsed: wire.ChatCompletionRequest
) -> Response:
    """OpenAI in, Anthropic upstream: converted through the internal model both ways."""
    conversation = openai_codec.request_to_internal(parsed)
    response = await upstream.messages(anthropic_codec.request_from_internal(conversation, model))
    created = int(time.time())
    if not conversation.stream:
        message = json_object(upstream, await read_all(upstream, response))
        reply = anthropic_codec.response_to_internal(message)
        return json_response(openai_codec.response_from_internal(reply, parsed.model, created))
    encoder = openai_codec.StreamEncoder(parsed.model, created, conversation.include_usage)
    translator = Converting(anthropic_codec.StreamDecoder(), encoder, upstream.provider.name)
    return stream_response(upstream, response, translator)


async def _via_gemini(
    upstream: GeminiUpstream, model: str, parsed: wire.ChatCompletionRequest
) -> Response:
    """OpenAI in, Gemini upstream: converted through the internal model both ways."""
    conversation = openai_codec.request_to_internal(parsed)
    body = gemini_codec.request_from_internal(conversation, model)
    response = await upstream.generate(model, body, stream=conversation.stream)
    created = int(time.time())
    if not conversation.stream:
        replies = gemini_codec.response_to_internal(
            json_object(upstream, await read_all(upstream, response))
        )
        return json_response(openai_codec.response_from_internal(replies, parsed.model, created))
    encoder = openai_codec.StreamEncoder(parsed.model, created, conversation.include_usage)
    translator = Converting(gemini_codec.StreamDecoder(), encoder, upstream.provider.name)
    return stream_response(upstream, response, translator)


def rename_model(data: bytes, model: str) -> bytes:
    """The upstream's answer with ``model`` set to the name the client asked for."""
    try:
        text = data.decode("utf-8")
        answer, spans = parse_object(text)
    except (ValueError, NotAnObjectError):
        return data
    if "model" not in spans or answer["model"] == model:
        return data
    return replace_value(text, spans["model"], model).encode()
