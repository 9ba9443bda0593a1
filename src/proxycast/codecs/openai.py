"""OpenAI Chat Completions <-> the internal model (PROTOCOLS.md sections 1 and 2, OpenAI side)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from proxycast import models
from proxycast.errors import InvalidRequestError, ProxycastError, UpstreamError, openai_error_body
from proxycast.wire import openai as wire

if TYPE_CHECKING:
    from proxycast.sse import Event

if TYPE_CHECKING:
    from collections.abc import Sequence

_FINISH: dict[models.Stop, str] = {
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


def _part(part: wire.Part, where: str) -> models.Part | None:
    if isinstance(part, wire.TextPart):
        return models.Text(part.text, part.cache_control) if part.text else None
    if isinstance(part, wire.ImagePart):
        inline = _data_url(part.image_url.url)
        if inline is not None:
            return models.Image(media_type=inline[0], data=inline[1])
        if part.image_url.url.startswith(("http://", "https://")):
            return models.Image(url=part.image_url.url)
        raise InvalidRequestError(
            f"{where}.image_url.url must be an http(s) URL or a base64 data URL.",
            param=f"{where}.image_url.url",
        )
    if isinstance(part, wire.FilePart):
        inline = _data_url(part.file.file_data or "")
        if inline is not None:
            return models.Document(
                media_type=inline[0], data=inline[1], filename=part.file.filename
            )
        if part.file.file_data:
            return models.Document(
                media_type="application/pdf", data=part.file.file_data, filename=part.file.filename
            )
        raise InvalidRequestError(
            f"{where}.file needs file_data (file_id refers to OpenAI's own file store).",
            param=f"{where}.file",
        )
    if isinstance(part, wire.RefusalPart):
        return models.Text(part.refusal) if part.refusal else None
    kind = "input_audio" if isinstance(part, wire.AudioPart) else part.raw.get("type")
    raise InvalidRequestError(
        f"{where}: content parts of type {kind!r} cannot be sent to this model's provider.",
        param=where,
    )


def _parts(content: str | list[wire.Part] | None, where: str) -> list[models.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [models.Text(content)] if content else []
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


def request_to_internal(request: wire.ChatCompletionRequest) -> models.Conversation:
    """An OpenAI chat request as a conversation.

    System and developer messages, wherever they stand, become the system prompt; consecutive turns
    of one role are merged (tool messages are user turns of tool results); empty text is dropped.

    Raises:
        InvalidRequestError: a part no provider can take, or tool arguments that are not JSON.
    """
    system: list[models.Part] = []
    turns: list[tuple[str, list[models.Part]]] = []
    names: dict[str, str] = {}

    def add(role: str, parts: list[models.Part]) -> None:
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
            parts: list[models.Part] = []
            if message.reasoning_content:
                parts.append(models.Reasoning(text=message.reasoning_content))
            parts += _parts(message.content, f"{where}.content")
            for j, call in enumerate(message.tool_calls or ()):
                names[call.id] = call.function.name
                arguments = _arguments(
                    call.function.arguments, f"{where}.tool_calls[{j}].function.arguments"
                )
                parts.append(
                    models.ToolCall(id=call.id, name=call.function.name, arguments=arguments)
                )
            add("assistant", parts)
        elif isinstance(message, wire.ToolMessage):
            result = models.ToolResult(
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
    tool_choice: models.ToolChoice | None = None
    if isinstance(request.tool_choice, wire.NamedToolChoice):
        tool_choice = models.NamedTool(request.tool_choice.function.name)
    else:
        tool_choice = request.tool_choice
    stop = request.stop
    params = models.Params(
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
    return models.Conversation(
        model=request.model,
        system=tuple(system),
        messages=tuple(models.Message(role, tuple(parts)) for role, parts in turns),  # type: ignore[arg-type]
        tools=tuple(
            models.Tool(
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


def usage_from_internal(usage: models.Usage) -> dict[str, Any]:
    """OpenAI usage: cache reads and writes are prompt tokens; total = prompt + completion."""
    prompt = usage.input + usage.cache_read + usage.cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def finish_reason(stop: models.Stop, sent_tool_calls: bool) -> str:
    """The finish reason, agreeing with the content: ``tool_calls`` iff tool calls were sent."""
    if sent_tool_calls:
        return "tool_calls"
    reason = _FINISH[stop]
    return "stop" if reason == "tool_calls" else reason


def _choice(index: int, reply: models.Reply) -> dict[str, Any]:
    text = "".join(p.text for p in reply.parts if isinstance(p, models.Text))
    reasoning = "".join(p.text for p in reply.parts if isinstance(p, models.Reasoning))
    calls = [p for p in reply.parts if isinstance(p, models.ToolCall)]
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
    reply: models.Reply | Sequence[models.Reply], model: str, created: int
) -> dict[str, Any]:
    """A ``chat.completion`` under the model name the client asked for; several replies (``n`` > 1)
    become several choices, sharing the first reply's id and usage."""
    replies = [reply] if isinstance(reply, models.Reply) else list(reply)
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
    """Stream events -> OpenAI ``chat.completion.chunk`` SSE frames (PROTOCOLS.md 3.1, OpenAI side).

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

    def encode(self, event: models.StreamEvent) -> bytes:
        if self.finished:
            return b""
        if isinstance(event, models.Start):
            self._id = event.id if event.id.startswith("chatcmpl-") else f"chatcmpl-{event.id}"
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, models.TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, models.ReasoningDelta):
            return self._chunk({"reasoning_content": event.text}) if event.text else b""
        if isinstance(event, models.ToolCallStart):
            self._sent_tool_calls = True
            call = {
                "index": event.index,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, models.ToolArgsDelta):
            call = {"index": event.index, "function": {"arguments": event.fragment}}
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, models.Finish):
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
        assert isinstance(event, models.Failure)
        return self.fail(event.error)

    def fail(self, error: Exception) -> bytes:
        """An error frame; nothing follows it."""
        self.finished = True
        if not isinstance(error, ProxycastError):
            error = ProxycastError("Internal error in proxycast while converting the stream.")
        body = json.dumps(openai_error_body(error))
        return b"data: " + body.encode() + b"\n\n"


# The upstream direction: an OpenAI-compatible upstream serving a client of another format.

MAX_TOOL_NAME = 64


def short_tool_name(name: str) -> str:
    """OpenAI limits function names to 64 characters: longer ones are cut, with a hash to stay unique."""
    if len(name) <= MAX_TOOL_NAME:
        return name
    return f"{name[: MAX_TOOL_NAME - 9]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _data_url_of(media_type: str | None, data: str) -> str:
    return f"data:{media_type or 'application/octet-stream'};base64,{data}"


def _content_part(part: models.Part) -> dict[str, Any] | None:
    if isinstance(part, models.Text):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, models.Image):
        url = _data_url_of(part.media_type, part.data) if part.data is not None else part.url
        return {"type": "image_url", "image_url": {"url": url}}
    if isinstance(part, models.Document):
        if part.data is None:
            raise InvalidRequestError(
                "Documents given by URL cannot be sent to OpenAI-compatible models."
            )
        file: dict[str, Any] = {"file_data": _data_url_of(part.media_type, part.data)}
        file["filename"] = part.filename or "document.pdf"
        return {"type": "file", "file": file}
    return None


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _text(parts: tuple[models.Part, ...]) -> str:
    return "".join(p.text for p in parts if isinstance(p, models.Text))


def request_from_internal(conversation: models.Conversation, model: str) -> dict[str, Any]:
    """The Chat Completions body for a conversation, sent to ``model`` (PROTOCOLS.md 3.3)."""
    messages: list[dict[str, Any]] = []
    system = "\n\n".join(p.text for p in conversation.system if isinstance(p, models.Text))
    if system:
        messages.append({"role": "system", "content": system})
    for message in conversation.messages:
        if message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": _text(message.parts) or None}
            calls = [p for p in message.parts if isinstance(p, models.ToolCall)]
            if calls:
                entry["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {
                            "name": short_tool_name(c.name),
                            "arguments": json.dumps(c.arguments),
                        },
                    }
                    for c in calls
                ]
            messages.append(entry)
            continue
        rest: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, models.ToolResult):
                text = _text(part.content)
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": part.call_id,
                        "content": f"Error: {text}" if part.is_error else text,
                    }
                )
            else:
                converted = _content_part(part)
                if converted is not None:
                    rest.append(converted)
        if rest:  # a turn's own content comes after its tool results
            messages.append({"role": "user", "content": _user_content(rest)})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if conversation.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": short_tool_name(t.name),
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                },
            }
            for t in conversation.tools
        ]
        choice = conversation.tool_choice
        if isinstance(choice, models.NamedTool):
            body["tool_choice"] = {
                "type": "function",
                "function": {"name": short_tool_name(choice.name)},
            }
        elif choice is not None:
            body["tool_choice"] = choice
        if conversation.parallel_tool_calls is False:
            body["parallel_tool_calls"] = False
    params = conversation.params
    for name, value in (
        ("max_tokens", params.max_tokens),
        ("temperature", params.temperature),
        ("top_p", params.top_p),
        ("reasoning_effort", params.reasoning_effort),
        ("user", params.user),
    ):
        if value is not None:
            body[name] = value
    if params.stop:
        body["stop"] = list(params.stop)
    if conversation.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


_STOP: dict[str, models.Stop] = {
    "stop": "end",
    "length": "length",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}


def _arguments_object(text: str) -> dict[str, Any]:
    """A tool call's arguments as an object; text that is not a JSON object is kept under ``arguments``."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"arguments": text}
    return value if isinstance(value, dict) else {"arguments": value}


def usage_to_internal(usage: dict[str, Any] | None) -> models.Usage:
    usage = usage or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return models.Usage(
        input=(usage.get("prompt_tokens") or 0) - cached,
        output=usage.get("completion_tokens") or 0,
        cache_read=cached,
        reasoning=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def _stop_of(reason: str | None, called: bool) -> models.Stop:
    return "tool_use" if called else _STOP.get(reason or "stop", "end")


def response_to_internal(body: dict[str, Any]) -> models.Reply:
    """A ``chat.completion`` (its first choice) as a reply."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    parts: list[models.Part] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(models.Reasoning(text=reasoning))
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(models.Text(message["content"]))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(
            models.ToolCall(
                id=call.get("id") or f"call_{len(parts)}",
                name=function.get("name", ""),
                arguments=_arguments_object(function.get("arguments") or ""),
            )
        )
    called = any(isinstance(p, models.ToolCall) for p in parts)
    return models.Reply(
        id=body.get("id", ""),
        model=body.get("model", ""),
        parts=tuple(parts),
        stop=_stop_of(choice.get("finish_reason"), called),
        usage=usage_to_internal(body.get("usage")),
    )


class StreamDecoder:
    """OpenAI ``chat.completion.chunk`` events -> stream events (PROTOCOLS.md 3.2).

    Normalises what OpenAI-compatible servers do differently: whole arguments in one chunk with the id and
    name; every call at index 0 (a new id at a known index is a new call); ``reasoning`` or
    ``reasoning_content``; content and finish reason in one chunk; ``tool_calls: []`` beside text. The
    finish waits for ``[DONE]`` (or the end of the body) so that the usage chunk is counted.
    """

    def __init__(self) -> None:
        self._started = False
        self._ids: dict[int, str] = {}  # upstream index -> id of the call there now
        self._ordinal: dict[int, int] = {}  # upstream index -> our tool ordinal
        self._count = 0
        self._reason: str | None = None
        self._usage = models.Usage()
        self.finished = False

    def feed(self, event: Event) -> list[models.StreamEvent]:
        if event.data == "[DONE]":
            return self.end()
        try:
            chunk = json.loads(event.data)
        except ValueError:
            return []
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk:
            self.finished = True
            error = (
                chunk["error"]
                if isinstance(chunk["error"], dict)
                else {"message": str(chunk["error"])}
            )
            code = error.get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            return [
                models.Failure(
                    UpstreamError(str(error.get("message", "upstream error")), status=status)
                )
            ]
        out: list[models.StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(models.Start(id=chunk.get("id", ""), model=chunk.get("model", "")))
        if chunk.get("usage"):
            self._usage = usage_to_internal(chunk["usage"])
        for choice in (chunk.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(models.ReasoningDelta(text=reasoning))
            if isinstance(delta.get("content"), str) and delta["content"]:
                out.append(models.TextDelta(delta["content"]))
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self._reason = choice["finish_reason"]
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[models.StreamEvent]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        out: list[models.StreamEvent] = []
        ident = call.get("id")
        if index not in self._ordinal or (ident and ident != self._ids.get(index)):
            ident = ident or f"call_{self._count}"
            self._ids[index] = ident
            self._ordinal[index] = self._count
            out.append(
                models.ToolCallStart(index=self._count, id=ident, name=function.get("name") or "")
            )
            self._count += 1
        if function.get("arguments"):
            out.append(
                models.ToolArgsDelta(index=self._ordinal[index], fragment=function["arguments"])
            )
        return out

    def end(self) -> list[models.StreamEvent]:
        """``[DONE]`` or the end of the body: finished if a finish reason came."""
        if self.finished or self._reason is None:
            return []
        self.finished = True
        return [models.Finish(stop=_stop_of(self._reason, self._count > 0), usage=self._usage)]
