"""OpenAI Chat Completions clients: their requests in, replies, stream chunks and errors out.

The mapping choices are in ``docs/mappings.md`` ("OpenAI Chat Completions").
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import attrs
from cattrs.errors import BaseValidationError

from proxycast.errors import InvalidRequestError, ProxycastError
from proxycast.formats import internal
from proxycast.formats.contracts import (
    Headers,
    InboundRequest,
    InboundRoute,
    UpstreamRequest,
    bearer_or_api_key,
)
from proxycast.formats.converters import Problem, invalid_request, out_of_range, refuse, too_many
from proxycast.formats.json_spans import dumps_text, parse_object
from proxycast.formats.openai import wire
from proxycast.formats.openai.errors import error_body
from proxycast.formats.openai.outbound import usage_to_internal
from proxycast.formats.openai.passthrough import OpenAIPassthrough
from proxycast.formats.passthrough import read_forwarded
from proxycast.formats.required import envelope, structured

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from proxycast.config import ProviderConfig
    from proxycast.formats.contracts import StreamEncoder as StreamEncoderType

_FINISH: dict[internal.Stop, str] = {
    "end": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
}


def _data_url(url: str) -> tuple[str, str] | None:
    """``data:<type>;base64,<data>`` -> (type, data)."""
    if not url.startswith("data:"):
        return None
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64":
        return None
    return media_type, data


AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mp3"}
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
"""Every ``reasoning_effort`` the openai SDK accepts (3.57); each maps to something upstream."""


def _part(part: wire.Part, where: str) -> internal.Part | None:
    if isinstance(part, wire.TextPart):
        return internal.Text(part.text, part.cache_control) if part.text else None
    if isinstance(part, wire.ImagePart):
        inline = _data_url(part.image_url.url)
        detail, cache = part.image_url.detail, part.cache_control
        if inline is not None:
            return internal.Image(
                media_type=inline[0], data=inline[1], detail=detail, cache_control=cache
            )
        if part.image_url.url.startswith(("http://", "https://")):
            return internal.Image(url=part.image_url.url, detail=detail, cache_control=cache)
        raise InvalidRequestError(
            f"{where}.image_url.url must be an http(s) URL or a base64 data URL.",
            param=f"{where}.image_url.url",
        )
    if isinstance(part, wire.FilePart):
        inline = _data_url(part.file.file_data or "")
        if inline is not None:
            return internal.Document(
                media_type=inline[0],
                data=inline[1],
                filename=part.file.filename,
                cache_control=part.cache_control,
            )
        if part.file.file_data:
            return internal.Document(
                media_type="application/pdf",
                data=part.file.file_data,
                filename=part.file.filename,
                cache_control=part.cache_control,
            )
        raise InvalidRequestError(
            f"{where}.file needs file_data (file_id refers to OpenAI's own file store).",
            param=f"{where}.file",
        )
    if isinstance(part, wire.RefusalPart):
        return internal.Text(part.refusal) if part.refusal else None
    if isinstance(part, wire.AudioPart) and part.input_audio.format in AUDIO_FORMATS:
        media = AUDIO_FORMATS[part.input_audio.format]
        return internal.Audio(media_type=media, data=part.input_audio.data)
    kind = "input_audio" if isinstance(part, wire.AudioPart) else part.raw.get("type")
    raise InvalidRequestError(
        f"{where}: content parts of type {kind!r} cannot be sent to this model's provider.",
        param=where,
    )


def _parts(
    content: str | list[wire.Part] | None, where: str, cache: dict[str, Any] | None = None
) -> list[internal.Part]:
    """Content parts; a message-level ``cache_control`` marks the last of them (LiteLLM's rule)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [internal.Text(content, cache)] if content else []
    parts = [p for p in (_part(p, f"{where}[{i}]") for i, p in enumerate(content)) if p]
    last = parts[-1] if parts else None
    if cache is not None and isinstance(last, (internal.Text, internal.Image, internal.Document)):
        parts[-1] = attrs.evolve(last, cache_control=cache)
    return parts


def _web_search(options: dict[str, Any] | None) -> internal.WebSearch | None:
    """``web_search_options`` (its location is nested under ``approximate``)."""
    if options is None:
        return None
    size = options.get("search_context_size")
    where = options.get("user_location")
    return internal.WebSearch(
        context_size=size if isinstance(size, str) else None,
        location=internal.location(where.get("approximate") if isinstance(where, dict) else None),
    )


def _reasoning(message: wire.AssistantMessage) -> list[internal.Part]:
    """An assistant message's reasoning: LiteLLM's ``thinking_blocks`` (with signatures), else
    OpenRouter's ``reasoning_details``, else the bare ``reasoning_content`` text."""
    parts: list[internal.Part] = []
    if message.thinking_blocks:
        for block in message.thinking_blocks:
            if block.get("type") == "redacted_thinking":
                parts.append(internal.reasoning_from_client("", str(block.get("data", "")), True))
            elif block.get("type") == "thinking":
                signature = block.get("signature")
                parts.append(
                    internal.reasoning_from_client(
                        str(block.get("thinking", "")), signature or None
                    )
                )
        return parts
    if message.reasoning_details:
        for detail in message.reasoning_details:
            if detail.get("type") == "reasoning.encrypted":
                parts.append(internal.reasoning_from_client("", str(detail.get("data", "")), True))
            elif detail.get("type") == "reasoning.text":
                signature = detail.get("signature")
                parts.append(
                    internal.reasoning_from_client(str(detail.get("text", "")), signature or None)
                )
        return parts
    if message.reasoning_content:
        parts.append(internal.Reasoning(text=message.reasoning_content))
    return parts


def _arguments(text: str, where: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequestError(
            f"{where} must be a JSON object in a string; got {text[:80]!r}.", param=where
        )
    return value


def request_to_internal(request: wire.ChatCompletionRequest) -> internal.Conversation:
    """An OpenAI chat request as a conversation.

    System and developer messages, wherever they stand, become the system prompt; consecutive turns
    of one role are merged (tool messages are user turns of tool results); empty text is dropped.

    Raises:
        InvalidRequestError: a part no provider can take, or tool arguments that are not JSON.
    """
    system: list[internal.Part] = []
    turns: list[tuple[str, list[internal.Part]]] = []
    names: dict[str, str] = {}

    def add(role: str, parts: list[internal.Part]) -> None:
        if not parts:
            return  # an empty turn must not keep its neighbours apart
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(parts)
        else:
            turns.append((role, parts))

    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        if isinstance(message, (wire.SystemMessage, wire.DeveloperMessage)):
            system.extend(_parts(message.content, f"{where}.content", message.cache_control))
        elif isinstance(message, wire.UserMessage):
            add("user", _parts(message.content, f"{where}.content", message.cache_control))
        elif isinstance(message, wire.AssistantMessage):
            parts: list[internal.Part] = _reasoning(message)
            parts += _parts(message.content, f"{where}.content", message.cache_control)
            for j, call in enumerate(message.tool_calls or ()):
                call_id, signature = internal.split_id(call.id)
                names[call_id] = call.function.name
                arguments = _arguments(
                    call.function.arguments, f"{where}.tool_calls[{j}].function.arguments"
                )
                parts.append(
                    internal.ToolCall(
                        id=call_id,
                        name=call.function.name,
                        arguments=arguments,
                        signature=signature,
                    )
                )
            add("assistant", parts)
        elif isinstance(message, wire.ToolMessage):
            call_id = internal.split_id(message.tool_call_id)[0]
            result = internal.ToolResult(
                call_id=call_id,
                content=tuple(_parts(message.content, f"{where}.content", message.cache_control)),
                name=names.get(call_id),
            )
            add("user", [result])
        else:
            raise InvalidRequestError(
                f"{where}.role {message.raw.get('role')!r} is not one of system, developer, user, "
                "assistant, tool.",
                param=f"{where}.role",
            )
    tool_choice: internal.ToolChoice | None = None
    if isinstance(request.tool_choice, wire.NamedToolChoice):
        tool_choice = internal.NamedTool(request.tool_choice.function.name)
    else:
        tool_choice = request.tool_choice
    stop = request.stop
    params = internal.Params(
        max_tokens=request.max_completion_tokens or request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        n=request.n,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        reasoning_effort=request.reasoning_effort,
        response_format=wire.converter.unstructure(request.response_format)
        if request.response_format
        else None,
        user=request.user,
        logprobs=request.logprobs,
        logit_bias=request.logit_bias or None,
        top_logprobs=request.top_logprobs,
        service_tier=request.service_tier,
        web_search=_web_search(request.web_search_options),
    )
    return internal.Conversation(
        system=tuple(system),
        messages=tuple(internal.Message(role, tuple(parts)) for role, parts in turns),  # type: ignore[arg-type]
        tools=tuple(
            internal.Tool(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters or {"type": "object", "properties": {}},
                strict=t.function.strict,
                cache_control=t.cache_control or t.function.cache_control,
            )
            for t in request.tools or ()
        ),
        tool_choice=tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        params=params,
        stream=bool(request.stream),
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
    )


def usage_from_internal(usage: internal.Usage) -> dict[str, Any]:
    """OpenAI usage: cache reads and writes are prompt tokens; total = prompt + completion."""
    prompt = usage.input + usage.cache_read + usage.cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": {
            "cached_tokens": usage.cache_read,
            "cache_write_tokens": usage.cache_write,
            "cache_creation_tokens": usage.cache_write,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def finish_reason(stop: internal.Stop, sent_tool_calls: bool) -> str:
    """The finish reason, agreeing with the content: ``tool_calls`` iff tool calls were sent."""
    if sent_tool_calls:
        return "tool_calls"
    reason = _FINISH[stop]
    return "stop" if reason == "tool_calls" else reason


def thinking_block(
    text: str, signature: str | None, redacted: bool, source: str | None
) -> dict[str, Any]:
    """A LiteLLM ``thinking_blocks`` entry: what a client sends back to keep Claude's (or Gemini's)
    reasoning chain."""
    if redacted:
        return {"type": "redacted_thinking", "data": signature or ""}
    part = internal.Reasoning(text=text, signature=signature, source=source)
    return {"type": "thinking", "thinking": text, "signature": internal.carried_signature(part)}


def _annotations(parts: tuple[internal.Part, ...]) -> list[dict[str, Any]]:
    """``url_citation`` annotations for the citations of the text parts, their offsets moved into
    the joined ``content``."""
    out: list[dict[str, Any]] = []
    offset = 0
    for part in parts:
        if not isinstance(part, internal.Text):
            continue
        for c in part.citations:
            citation: dict[str, Any] = {"url": c.url, "title": c.title or c.url}
            citation.update(start_index=offset + c.start, end_index=offset + c.end)
            out.append({"type": "url_citation", "url_citation": citation})
        offset += len(part.text)
    return out


def _choice(index: int, reply: internal.Reply) -> dict[str, Any]:
    text = "".join(p.text for p in reply.parts if isinstance(p, internal.Text))
    reasoning = "".join(p.text for p in reply.parts if isinstance(p, internal.Reasoning))
    calls = [p for p in reply.parts if isinstance(p, internal.ToolCall)]
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    blocks = [
        thinking_block(p.text, p.signature, p.redacted, p.source)
        if isinstance(p, internal.Reasoning)
        else thinking_block("", p.signature, False, p.source)  # a text part's (Gemini 3's)
        for p in reply.parts
        if (isinstance(p, internal.Reasoning) and (p.signature or p.redacted))
        or (isinstance(p, internal.Text) and p.signature)
    ]
    if blocks:
        message["thinking_blocks"] = blocks
    annotations = _annotations(reply.parts)
    if annotations:
        message["annotations"] = annotations
    if calls:
        message["tool_calls"] = [
            {
                "id": internal.signed_id(call.id, call.signature),
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in calls
        ]
    return {
        "index": index,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(reply.stop, bool(calls)),
    }


def response_from_internal(
    reply: internal.Reply | Sequence[internal.Reply], model: str, created: int
) -> dict[str, Any]:
    """A ``chat.completion`` under the model name the client asked for; several replies (``n`` > 1)
    become several choices, sharing the first reply's id and usage."""
    replies = [reply] if isinstance(reply, internal.Reply) else list(reply)
    first = replies[0]
    return {
        "id": first.id if first.id.startswith("chatcmpl-") else f"chatcmpl-{first.id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [_choice(i, r) for i, r in enumerate(replies)],
        "usage": usage_from_internal(first.usage),
    }


class StreamEncoder:
    """Stream events -> OpenAI ``chat.completion.chunk`` SSE frames (docs/mappings.md, "Stream chunks out").

    The role chunk comes first; tool calls carry ``index``/``id``/``type``/``name`` once, then only
    argument fragments; the finish reason agrees with what was sent; the usage chunk (``choices: []``)
    comes only when the client asked for it (and then every other chunk has ``"usage": null``); ``[DONE]``
    ends a stream that finished, an error frame one that failed.
    """

    def __init__(self, model: str, created: int, include_usage: bool) -> None:
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._id = "chatcmpl-proxycast"
        self._sent_tool_calls = False
        self.finished = False
        self._head = ""
        """The text every chunk starts with (its id, created, model), built once an id is known."""
        self._tail = "}]" + (', "usage": null' if include_usage else "") + "}\n\n"

    def _chunk(self, delta: dict[str, Any] | str, finish: str | None = None) -> bytes:
        """A chunk with ``delta`` (an object, or its JSON text)."""
        # What json.dumps of the whole chunk writes, with only the delta and the finish reason
        # serialised per chunk (a converted stream's cost per chunk).
        if not self._head:
            fixed: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk"}
            fixed |= {"created": self._created, "model": self._model}
            fixed["model"] = self._model
            self._head = f'data: {dumps_text(fixed)[:-1]}, "choices": [{{"index": 0, "delta": '
        finished = "null" if finish is None else dumps_text(finish)
        if not isinstance(delta, str):
            delta = dumps_text(delta)
        text = f'{self._head}{delta}, "logprobs": null, "finish_reason": {finished}'
        return (text + self._tail).encode()

    def encode(self, event: internal.StreamEvent) -> bytes:
        if self.finished:
            return b""
        if isinstance(event, internal.Start):
            self._id = event.id if event.id.startswith("chatcmpl-") else f"chatcmpl-{event.id}"
            self._head = ""
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, internal.TextDelta) and event.signature:
            # a text part's signature (Gemini 3's) in a thinking block: a chat message keeps its
            # reasoning apart from its content, so the content is not moved
            block = thinking_block("", event.signature, False, event.source)
            signed: dict[str, Any] = {"thinking_blocks": [block]}
            if event.text:
                signed = {"content": event.text, **signed}
            return self._chunk(signed)
        if isinstance(event, internal.TextDelta):  # the commonest: its delta written directly
            return self._chunk(f'{{"content": {dumps_text(event.text)}}}')
        if isinstance(event, internal.ReasoningDelta):
            # LiteLLM's stream shape: thinking text fragments, then the signature in its own chunk
            if not (event.text or event.signature):
                return b""
            delta: dict[str, Any] = {"reasoning_content": event.text}
            if event.redacted or event.signature or event.text:
                block = thinking_block(event.text, event.signature, event.redacted, event.source)
                delta["thinking_blocks"] = [block]
            return self._chunk(delta)
        if isinstance(event, internal.ToolCallStart):
            self._sent_tool_calls = True
            call = {
                "index": event.index,
                "id": internal.signed_id(event.id, event.signature),
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, internal.ToolArgsDelta):
            call = {"index": event.index, "function": {"arguments": event.fragment}}
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, internal.Finish):
            self.finished = True
            out = self._chunk({}, finish_reason(event.stop, self._sent_tool_calls))
            if self._include_usage:
                chunk = {
                    "id": self._id,
                    "object": "chat.completion.chunk",
                    "created": self._created,
                    "model": self._model,
                    "choices": [],
                    "usage": usage_from_internal(event.usage),
                }
                out += b"data: " + json.dumps(chunk).encode() + b"\n\n"
            return out + b"data: [DONE]\n\n"
        if isinstance(event, (internal.Citation, internal.WebSearchCall)):
            # a chunk's delta has no annotations: a streamed answer's citations are left out
            return b""
        assert isinstance(event, internal.Failure)
        return self.fail(event.error)

    def fail(self, error: Exception) -> bytes:
        """An error frame; nothing follows it."""
        self.finished = True
        if not isinstance(error, ProxycastError):
            error = ProxycastError("Internal error in proxycast while converting the stream.")
        body = json.dumps(error_body(error))
        return b"data: " + body.encode() + b"\n\n"


ROLES = ("system", "developer", "user", "assistant", "tool", "function")
"""The message roles OpenAI's API defines (``function`` is deprecated, still accepted by OpenAI)."""
PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")


def _problems(request: wire.ChatCompletionRequest) -> list[Problem]:
    """Values the API documents as out of range, and roles and part types it does not define."""
    problems = [
        *out_of_range(request.temperature, 0, 2, ("temperature",)),
        *out_of_range(request.top_p, 0, 1, ("top_p",)),
        *out_of_range(request.presence_penalty, -2, 2, ("presence_penalty",)),
        *out_of_range(request.frequency_penalty, -2, 2, ("frequency_penalty",)),
        *out_of_range(request.max_tokens, 1, None, ("max_tokens",)),
        *out_of_range(request.max_completion_tokens, 1, None, ("max_completion_tokens",)),
        *out_of_range(request.n, 1, 128, ("n",)),
        *out_of_range(request.top_logprobs, 0, 20, ("top_logprobs",)),
        *too_many(request.tools, 128, ("tools",)),
        *(too_many(request.stop, 4, ("stop",)) if isinstance(request.stop, list) else []),
    ]
    if not request.messages:
        problems.append((("messages",), "must hold at least one message"))
    effort = request.reasoning_effort
    if effort is not None and effort not in REASONING_EFFORTS:
        problems.append((("reasoning_effort",), f"must be one of {', '.join(REASONING_EFFORTS)}"))
    for i, message in enumerate(request.messages):
        if isinstance(message, wire.UnknownMessage):
            if message.raw.get("role") not in ROLES:
                problems.append((("messages", i, "role"), f"must be one of {', '.join(ROLES)}"))
            continue
        content = message.content
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, wire.UnknownPart):
                problems.append(
                    (
                        ("messages", i, "content", j, "type"),
                        f"must be one of {', '.join(PART_TYPES)}",
                    )
                )
    return problems


def structure(body: dict[str, Any]) -> wire.ChatCompletionRequest:
    """The body as a Chat Completions request; 400 naming the fields that are missing or mistyped."""
    try:
        return wire.converter.structure(body, wire.ChatCompletionRequest)
    except BaseValidationError as exc:
        raise invalid_request(exc) from None


def validate(body: dict[str, Any]) -> wire.ChatCompletionRequest:
    """The body as a Chat Completions request; 400 naming the fields that are missing, mistyped or
    out of the ranges OpenAI's API documents."""
    request = structure(body)
    refuse(_problems(request))
    return request


def without_signed_ids(text: str, model: str) -> str | None:
    """A forwarded body whose history carries proxycast's signed tool ids (a Gemini conversation
    moving to an OpenAI-compatible upstream), with each id back to its short self: the signature means
    nothing there and makes the id too long for OpenAI. None when there is none (the body is then
    forwarded byte for byte)."""
    if internal.SIGNED_ID_MARK not in text:
        return None
    body = json.loads(text)
    changed = False
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        holders = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
        for holder, key in [*((c, "id") for c in holders), (message, "tool_call_id")]:
            value = holder.get(key)
            if isinstance(value, str) and internal.split_id(value)[1] is not None:
                holder[key] = internal.split_id(value)[0]
                changed = True
    if not changed:
        return None
    body["model"] = model
    return dumps_text(body)


class OpenAIDialect:
    """``/v1/chat/completions``, as OpenAI's SDKs speak it."""

    name = "openai"
    native_type = "openai"
    forwards_bytes = True
    """:meth:`forward` takes a request holding its body as bytes (``http.body.held_once``)."""
    routes = (
        InboundRoute(path="/v1/chat/completions", operation="generate"),
        InboundRoute(path="/v1/embeddings", operation="embed"),
        InboundRoute(path="/v1/models", operation="list_models", method="GET"),
        InboundRoute(path="/v1/models/{model:path}", operation="get_model", method="GET"),
    )

    def owns(self, path: str) -> bool:
        return True  # the default dialect: every route no other dialect claims

    def credential(self, headers: Headers, query: Mapping[str, str]) -> str | None:
        return bearer_or_api_key(headers)

    def read(
        self,
        text: str,
        body: dict[str, Any],
        spans: Mapping[str, tuple[int, int]],
        headers: Headers,
        route: InboundRoute,
        params: Mapping[str, str],
        query: Mapping[str, str],
    ) -> InboundRequest:
        operation = route.asks
        model, stream = envelope(body)
        parsed, problem = structured(wire.converter, body, wire.ChatCompletionRequest)
        if parsed is not None:
            # OpenAI's documented ranges, roles and part types hold on every path: a forwarded
            # request out of them is refused here too, naming the field, as OpenAI itself would.
            refuse(_problems(parsed))
        return InboundRequest(
            client_model=model,
            stream=stream,
            operation=operation,
            parsed=parsed,
            problem=problem,
            text=text,
            spans=spans,
        )

    def request_to_internal(self, request: InboundRequest) -> internal.Conversation:
        if request.problem is not None:
            raise request.problem
        parsed: wire.ChatCompletionRequest = request.parsed
        return request_to_internal(parsed)

    def forward(self, request: InboundRequest, upstream_model: str) -> UpstreamRequest:
        if not request.text and request.raw:  # a large body, held once as its bytes
            if internal.SIGNED_ID_MARK.encode() not in request.raw:
                return self._forward_bytes(request, upstream_model)
            request = attrs.evolve(request, text=request.raw.decode(), raw=b"")
            request = attrs.evolve(request, spans=parse_object(request.text)[1])
        text = without_signed_ids(request.text, upstream_model)  # model renamed in it, if any
        spans = request.spans
        edits: list[tuple[tuple[int, int], str]] = []  # (span, JSON), applied from the end
        if text is None:
            text = request.text
            if upstream_model != request.client_model:
                edits.append((spans["model"], dumps_text(upstream_model)))
        else:
            _, spans = parse_object(text)  # the body was written anew: its own spans
        if request.stream and request.parsed is not None and not _usage_asked(request.parsed):
            # the accounting needs the stream's usage: asked for here, hidden from the client again
            # by the passthrough (forwarded_stream)
            edits.append(_ask_usage(text, spans))
        for (start, end), value in sorted(edits, reverse=True):
            text = text[:start] + value + text[end:]
        return UpstreamRequest(path="/chat/completions", raw=text.encode(), stream=request.stream)

    def _forward_bytes(self, request: InboundRequest, upstream_model: str) -> UpstreamRequest:
        """:meth:`forward` of a body held as bytes: sent as slices of them around the edits, never
        copied whole."""
        raw, spans = request.raw, request.spans
        edits: list[tuple[tuple[int, int], bytes]] = []
        if upstream_model != request.client_model:
            edits.append((spans["model"], dumps_text(upstream_model).encode()))
        if request.stream and _hides_usage(request):
            span, options = _ask_usage("", spans, raw)
            edits.append((span, options.encode()))
        if not edits:
            return UpstreamRequest(path="/chat/completions", raw=raw, stream=request.stream)
        view = memoryview(raw)
        pieces: list[bytes | memoryview] = []
        at = 0
        for (start, end), value in sorted(edits):
            pieces += [view[at:start], value]
            at = end
        pieces.append(view[at:])
        return UpstreamRequest(path="/chat/completions", raw=tuple(pieces), stream=request.stream)

    def forwarded_reply(
        self, data: bytes, client_model: str, provider: str
    ) -> tuple[bytes, internal.Usage]:
        data, answer = read_forwarded(data, client_model, provider)
        return data, usage_to_internal(answer.get("usage"))

    def forwarded_stream(
        self, request: InboundRequest, provider: str, redact: Callable[[str], str]
    ) -> OpenAIPassthrough:
        hide = _hides_usage(request)
        return OpenAIPassthrough(request.client_model, provider, redact, hide_usage=hide)

    def forwards_to(self, provider: ProviderConfig, request: InboundRequest) -> bool:
        return provider.speaks == self.native_type

    def reply_from_internal(
        self,
        replies: list[internal.Reply],
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> dict[str, Any]:
        return response_from_internal(replies, client_model, int(time.time()))

    def stream_encoder(
        self,
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> StreamEncoderType:
        return StreamEncoder(client_model, int(time.time()), conversation.include_usage)

    def dropped_tools(
        self, request: InboundRequest, searches: Callable[[], bool]
    ) -> tuple[str, ...]:
        return ()  # its tools are functions: nothing is left out

    def tokens_counted(self, count: int) -> dict[str, Any]:
        return {"object": "response.input_tokens", "input_tokens": count}

    def render_error(self, error: ProxycastError) -> tuple[int, bytes]:
        return error.status, json.dumps(error_body(error)).encode()


def _usage_asked(parsed: wire.ChatCompletionRequest) -> bool:
    return bool(parsed.stream_options and parsed.stream_options.include_usage)


def _hides_usage(request: InboundRequest) -> bool:
    """Whether a forwarded stream's usage is asked for upstream (the accounting needs it) and
    hidden from a client that did not ask for it; never for a request that failed validation
    (forwarded as it is)."""
    if request.parsed_kept:
        return request.parsed is not None and not _usage_asked(request.parsed)
    # a large body held once: its stream_options read from its bytes, the body left unparsed
    span = request.spans.get("stream_options")
    if span is None:
        return True
    options = json.loads(request.raw[span[0] : span[1]])
    return not (isinstance(options, dict) and options.get("include_usage"))


def _ask_usage(
    text: str, spans: Mapping[str, tuple[int, int]], raw: bytes = b""
) -> tuple[tuple[int, int], str]:
    """The edit of a forwarded body (its ``text``, or its ``raw`` bytes, which ``spans`` then
    index) that sets ``stream_options.include_usage``."""
    body: str | bytes = raw or text
    if "stream_options" in spans:
        start, end = spans["stream_options"]
        options = json.loads(body[start:end])
        options = {**options, "include_usage": True} if isinstance(options, dict) else {}
        return (start, end), dumps_text(options or {"include_usage": True})
    # the body is a JSON object: its last brace closes it
    close = raw.rindex(b"}") if raw else text.rindex("}")
    return (close, close), ', "stream_options": {"include_usage": true}'


DIALECT = OpenAIDialect()
