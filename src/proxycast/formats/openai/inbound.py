"""OpenAI Chat Completions clients: their requests in, replies, stream chunks and errors out.

The mapping choices are in ``docs/mappings.md`` ("OpenAI Chat Completions").
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from cattrs.errors import BaseValidationError

from proxycast import hub
from proxycast.errors import InvalidRequestError, ProxycastError
from proxycast.formats.contracts import (
    Headers,
    InboundRequest,
    InboundRoute,
    Operation,
    UpstreamRequest,
)
from proxycast.formats.openai import wire
from proxycast.formats.openai.errors import error_body
from proxycast.formats.openai.outbound import usage_to_internal
from proxycast.formats.openai.passthrough import OpenAIPassthrough
from proxycast.relay import read_forwarded
from proxycast.structuring import Problem, invalid_request, out_of_range, refuse, too_many

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from proxycast.formats.contracts import StreamEncoder as StreamEncoderType

_FINISH: dict[hub.Stop, str] = {
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


def _part(part: wire.Part, where: str) -> hub.Part | None:
    if isinstance(part, wire.TextPart):
        return hub.Text(part.text, part.cache_control) if part.text else None
    if isinstance(part, wire.ImagePart):
        inline = _data_url(part.image_url.url)
        if inline is not None:
            return hub.Image(media_type=inline[0], data=inline[1])
        if part.image_url.url.startswith(("http://", "https://")):
            return hub.Image(url=part.image_url.url)
        raise InvalidRequestError(
            f"{where}.image_url.url must be an http(s) URL or a base64 data URL.",
            param=f"{where}.image_url.url",
        )
    if isinstance(part, wire.FilePart):
        inline = _data_url(part.file.file_data or "")
        if inline is not None:
            return hub.Document(media_type=inline[0], data=inline[1], filename=part.file.filename)
        if part.file.file_data:
            return hub.Document(
                media_type="application/pdf", data=part.file.file_data, filename=part.file.filename
            )
        raise InvalidRequestError(
            f"{where}.file needs file_data (file_id refers to OpenAI's own file store).",
            param=f"{where}.file",
        )
    if isinstance(part, wire.RefusalPart):
        return hub.Text(part.refusal) if part.refusal else None
    kind = "input_audio" if isinstance(part, wire.AudioPart) else part.raw.get("type")
    raise InvalidRequestError(
        f"{where}: content parts of type {kind!r} cannot be sent to this model's provider.",
        param=where,
    )


def _parts(content: str | list[wire.Part] | None, where: str) -> list[hub.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [hub.Text(content)] if content else []
    parts = (_part(p, f"{where}[{i}]") for i, p in enumerate(content))
    return [p for p in parts if p is not None]


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


def request_to_internal(request: wire.ChatCompletionRequest) -> hub.Conversation:
    """An OpenAI chat request as a conversation.

    System and developer messages, wherever they stand, become the system prompt; consecutive turns
    of one role are merged (tool messages are user turns of tool results); empty text is dropped.

    Raises:
        InvalidRequestError: a part no provider can take, or tool arguments that are not JSON.
    """
    system: list[hub.Part] = []
    turns: list[tuple[str, list[hub.Part]]] = []
    names: dict[str, str] = {}

    def add(role: str, parts: list[hub.Part]) -> None:
        if not parts:
            return  # an empty turn must not keep its neighbours apart
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(parts)
        else:
            turns.append((role, parts))

    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        if isinstance(message, (wire.SystemMessage, wire.DeveloperMessage)):
            system.extend(_parts(message.content, f"{where}.content"))
        elif isinstance(message, wire.UserMessage):
            add("user", _parts(message.content, f"{where}.content"))
        elif isinstance(message, wire.AssistantMessage):
            parts: list[hub.Part] = []
            if message.reasoning_content:
                parts.append(hub.Reasoning(text=message.reasoning_content))
            parts += _parts(message.content, f"{where}.content")
            for j, call in enumerate(message.tool_calls or ()):
                names[call.id] = call.function.name
                arguments = _arguments(
                    call.function.arguments, f"{where}.tool_calls[{j}].function.arguments"
                )
                parts.append(hub.ToolCall(id=call.id, name=call.function.name, arguments=arguments))
            add("assistant", parts)
        elif isinstance(message, wire.ToolMessage):
            result = hub.ToolResult(
                call_id=message.tool_call_id,
                content=tuple(_parts(message.content, f"{where}.content")),
                name=names.get(message.tool_call_id),
            )
            add("user", [result])
        else:
            raise InvalidRequestError(
                f"{where}.role {message.raw.get('role')!r} is not one of system, developer, user, "
                "assistant, tool.",
                param=f"{where}.role",
            )
    tool_choice: hub.ToolChoice | None = None
    if isinstance(request.tool_choice, wire.NamedToolChoice):
        tool_choice = hub.NamedTool(request.tool_choice.function.name)
    else:
        tool_choice = request.tool_choice
    stop = request.stop
    params = hub.Params(
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
    )
    return hub.Conversation(
        system=tuple(system),
        messages=tuple(hub.Message(role, tuple(parts)) for role, parts in turns),  # type: ignore[arg-type]
        tools=tuple(
            hub.Tool(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters or {"type": "object", "properties": {}},
            )
            for t in request.tools or ()
        ),
        tool_choice=tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        params=params,
        stream=bool(request.stream),
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
    )


def usage_from_internal(usage: hub.Usage) -> dict[str, Any]:
    """OpenAI usage: cache reads and writes are prompt tokens; total = prompt + completion."""
    prompt = usage.input + usage.cache_read + usage.cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def finish_reason(stop: hub.Stop, sent_tool_calls: bool) -> str:
    """The finish reason, agreeing with the content: ``tool_calls`` iff tool calls were sent."""
    if sent_tool_calls:
        return "tool_calls"
    reason = _FINISH[stop]
    return "stop" if reason == "tool_calls" else reason


def _choice(index: int, reply: hub.Reply) -> dict[str, Any]:
    text = "".join(p.text for p in reply.parts if isinstance(p, hub.Text))
    reasoning = "".join(p.text for p in reply.parts if isinstance(p, hub.Reasoning))
    calls = [p for p in reply.parts if isinstance(p, hub.ToolCall)]
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {
                "id": call.id,
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
    reply: hub.Reply | Sequence[hub.Reply], model: str, created: int
) -> dict[str, Any]:
    """A ``chat.completion`` under the model name the client asked for; several replies (``n`` > 1)
    become several choices, sharing the first reply's id and usage."""
    replies = [reply] if isinstance(reply, hub.Reply) else list(reply)
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

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    def encode(self, event: hub.StreamEvent) -> bytes:
        if self.finished:
            return b""
        if isinstance(event, hub.Start):
            self._id = event.id if event.id.startswith("chatcmpl-") else f"chatcmpl-{event.id}"
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, hub.TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, hub.ReasoningDelta):
            return self._chunk({"reasoning_content": event.text}) if event.text else b""
        if isinstance(event, hub.ToolCallStart):
            self._sent_tool_calls = True
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, hub.ToolArgsDelta):
            call = {"index": event.index, "function": {"arguments": event.fragment}}
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, hub.Finish):
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
        assert isinstance(event, hub.Failure)
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


def validate(body: dict[str, Any]) -> wire.ChatCompletionRequest:
    """The body as a Chat Completions request; 400 naming the fields that are missing, mistyped or
    out of the ranges OpenAI's API documents."""
    try:
        request = wire.converter.structure(body, wire.ChatCompletionRequest)
    except BaseValidationError as exc:
        raise invalid_request(exc) from None
    refuse(_problems(request))
    return request


class OpenAIDialect:
    """``/v1/chat/completions``, as OpenAI's SDKs speak it."""

    name = "openai"
    native_type = "openai"
    routes = (InboundRoute(path="/v1/chat/completions", operation="generate"),)

    def owns(self, path: str) -> bool:
        return True  # the default dialect: every route no other dialect claims

    def read(
        self,
        text: str,
        body: dict[str, Any],
        spans: Mapping[str, tuple[int, int]],
        headers: Headers,
        operation: Operation,
    ) -> InboundRequest:
        parsed = validate(body)
        return InboundRequest(
            client_model=parsed.model,
            stream=bool(parsed.stream),
            operation=operation,
            parsed=parsed,
            text=text,
            spans=spans,
        )

    def request_to_internal(self, request: InboundRequest) -> hub.Conversation:
        parsed: wire.ChatCompletionRequest = request.parsed
        return request_to_internal(parsed)

    def forward(self, request: InboundRequest, upstream_model: str) -> UpstreamRequest:
        text = request.text
        edits: list[tuple[tuple[int, int], str]] = []  # (span, JSON), applied from the end
        if upstream_model != request.client_model:
            edits.append((request.spans["model"], json.dumps(upstream_model, ensure_ascii=False)))
        if request.stream and not _usage_asked(request.parsed):
            # the accounting needs the stream's usage: asked for here, hidden from the client again
            # by the passthrough (forwarded_stream)
            edits.append(_ask_usage(text, request.spans))
        for (start, end), value in sorted(edits, reverse=True):
            text = text[:start] + value + text[end:]
        return UpstreamRequest(path="/chat/completions", raw=text.encode(), stream=request.stream)

    def forwarded_reply(
        self, data: bytes, client_model: str, provider: str
    ) -> tuple[bytes, hub.Usage]:
        data, answer = read_forwarded(data, client_model, provider)
        return data, usage_to_internal(answer.get("usage"))

    def forwarded_stream(
        self, request: InboundRequest, provider: str, redact: Callable[[str], str]
    ) -> OpenAIPassthrough:
        hide = not _usage_asked(request.parsed)
        return OpenAIPassthrough(request.client_model, provider, redact, hide_usage=hide)

    def reply_from_internal(self, replies: list[hub.Reply], client_model: str) -> dict[str, Any]:
        return response_from_internal(replies, client_model, int(time.time()))

    def stream_encoder(
        self, client_model: str, conversation: hub.Conversation
    ) -> StreamEncoderType:
        return StreamEncoder(client_model, int(time.time()), conversation.include_usage)

    def tokens_counted(self, count: int) -> dict[str, Any]:
        return {"object": "response.input_tokens", "input_tokens": count}

    def render_error(self, error: ProxycastError) -> tuple[int, bytes]:
        return error.status, json.dumps(error_body(error)).encode()


def _usage_asked(parsed: wire.ChatCompletionRequest) -> bool:
    return bool(parsed.stream_options and parsed.stream_options.include_usage)


def _ask_usage(text: str, spans: Mapping[str, tuple[int, int]]) -> tuple[tuple[int, int], str]:
    """The edit of a forwarded body that sets ``stream_options.include_usage``."""
    if "stream_options" in spans:
        start, end = spans["stream_options"]
        options = json.loads(text[start:end])
        options = {**options, "include_usage": True} if isinstance(options, dict) else {}
        return (start, end), json.dumps(options or {"include_usage": True}, ensure_ascii=False)
    close = text.rindex("}")  # the body is a JSON object: its last brace closes it
    return (close, close), ', "stream_options": {"include_usage": true}'


DIALECT = OpenAIDialect()
