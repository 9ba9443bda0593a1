"""``POST /v1/embeddings`` (OpenAI's shape): forwarded to OpenAI-compatible providers (the model
renamed, like chat), converted for the formats of ``formats.EMBEDDINGS`` (Gemini), and a 400 naming
the provider for the others (Anthropic has no embeddings API)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from proxycast import formats
from proxycast.accounting.records import current_record
from proxycast.api.inbound import current_exchange
from proxycast.core import routing
from proxycast.core.exchange import ESTIMATE_HEADER, json_response
from proxycast.core.relay import read_forwarded
from proxycast.errors import InvalidRequestError
from proxycast.formats import internal
from proxycast.formats.contracts import InboundRequest, UpstreamRequest
from proxycast.formats.json_spans import replace_value
from proxycast.formats.openai import embeddings as openai_embeddings
from proxycast.formats.required import envelope
from proxycast.http.body import parse_and_validate

blueprint = Blueprint("embeddings", __name__)

PATH = "/v1/embeddings"


@blueprint.post(PATH)
async def embeddings() -> Response:
    raw = await request.get_data(cache=False, as_text=False)
    assert isinstance(raw, bytes)  # as_text=False
    text, body, spans = await parse_and_validate(raw, lambda t, b, s: (t, b, s))
    model, _ = envelope(body)
    exchange = current_exchange()
    accounting, record = exchange.accounting, current_record()
    inbound = InboundRequest(
        client_model=model, stream=False, operation="generate", parsed=None, text=text, spans=spans
    )
    if accounting is not None:  # the client's allowlist, then its limits: as for chat
        accounting.enter(inbound, "embeddings")
    route = routing.resolve(model, exchange.config)
    provider = exchange.providers[route.provider.name]
    if accounting is not None:
        await accounting.admit(inbound, route.upstream_model)
    if record is not None:
        record.provider, record.key = provider.name, provider.pool.label(0)
    if provider.config.type == formats.dialect_for(PATH).native_type:
        if route.upstream_model != model:
            text = replace_value(text, spans["model"], route.upstream_model)
        response = await provider.open(
            UpstreamRequest(path="/embeddings", raw=text.encode(), stream=False)
        )
        data, reply = read_forwarded(await provider.read_all(response), model, provider.name)
        usage = reply.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        await _settle(internal.Usage(input=tokens if isinstance(tokens, int) else 0))
        return Response(data, status=response.status_code, content_type="application/json")
    converter = formats.EMBEDDINGS.get(provider.config.type)
    if converter is None:
        raise InvalidRequestError(
            f"Model {model!r} is served by provider {provider.name!r} ({provider.config.type}), "
            "which has no embeddings API: route embedding models to an OpenAI-compatible or "
            "Gemini provider.",
            param="model",
        )
    wanted = openai_embeddings.read(body, provider.name)
    upstream_request = converter.request_from_internal(wanted, route.upstream_model)
    response = await provider.open(upstream_request)
    answer = converter.reply_to_internal(await provider.read_object(response), wanted)
    encoding = body.get("encoding_format") or "float"
    out = openai_embeddings.reply_from_internal(answer, wanted, model, encoding)
    headers = {ESTIMATE_HEADER: "estimate"} if answer.input_tokens is None else None
    await _settle(internal.Usage(input=out["usage"]["prompt_tokens"]))
    return json_response(out, headers=headers)


async def _settle(usage: internal.Usage) -> None:
    """Embeddings count in usage like chat: their input tokens, in the ledger and the limits."""
    record, accounting = current_record(), current_exchange().accounting
    if record is not None:
        record.usage = usage
        if accounting is not None:
            await accounting.settle(record)
