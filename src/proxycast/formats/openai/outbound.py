"""The internal model -> OpenAI-compatible upstreams (requests), and their answers back.

The mapping choices are in ``docs/mappings.md`` ("To OpenAI-compatible upstreams").
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

from proxycast.errors import ErrorInfo, InvalidRequestError, upstream_error
from proxycast.formats import internal, sse
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.json_spans import dumps_text, loads_event
from proxycast.formats.openai.errors import error_info

if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_TOOL_NAME = 64
MAX_TOOL_ID = 40
"""The strictest limit OpenAI enforces on ``tool_calls[].id`` (Chat Completions answers
``string_above_max_length`` over 40 on some models, 64 on others)."""


def short_tool_id(call_id: str) -> str:
    """A tool call id within :data:`MAX_TOOL_ID`: a longer one (a signed id, another provider's)
    becomes ``call_`` + 32 hex digits of its SHA-256, the same for the call and its result."""
    if len(call_id) <= MAX_TOOL_ID:
        return call_id
    return "call_" + hashlib.sha256(call_id.encode()).hexdigest()[:32]


def short_tool_name(name: str) -> str:
    """OpenAI limits function names to 64 characters: longer ones are cut, with a hash to stay unique."""
    if len(name) <= MAX_TOOL_NAME:
        return name
    return f"{name[: MAX_TOOL_NAME - 9]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _data_url_of(media_type: str | None, data: str) -> str:
    return f"data:{media_type or 'application/octet-stream'};base64,{data}"


def _content_part(part: internal.Part) -> dict[str, Any] | None:
    if isinstance(part, internal.Text):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, internal.Image):
        url = _data_url_of(part.media_type, part.data) if part.data is not None else part.url
        image: dict[str, Any] = {"url": url}
        if part.detail:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if isinstance(part, internal.Audio):
        audio_format = part.media_type.removeprefix("audio/").replace("mpeg", "mp3")
        return {"type": "input_audio", "input_audio": {"data": part.data, "format": audio_format}}
    if isinstance(part, internal.Document):
        if part.data is None:
            raise InvalidRequestError(
                "Documents given by URL cannot be sent to OpenAI-compatible models."
            )
        file: dict[str, Any] = {"file_data": _data_url_of(part.media_type, part.data)}
        file["filename"] = part.filename or "document.pdf"
        return {"type": "file", "file": file}
    return None


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text alone is one string (a local server's chat template renders a string, not a list of
    parts: two Anthropic text blocks become two paragraphs, joined by a newline as vLLM joins them)."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(str(p["text"]) for p in parts)
    return parts


def searches(conversation: internal.Conversation) -> bool:
    """A demanded search goes as ``web_search_options``; an offered one is left out."""
    return _web_search_options(conversation.params.web_search) is not None


def _web_search_options(search: internal.WebSearch | None) -> dict[str, Any] | None:
    """``web_search_options`` for a demanded search. A search offered as a Responses built-in tool
    is left out: chat completions servers (vLLM, Ollama, OpenAI's own non-search models) have no
    search of their own, and the Responses route tells the client it was left out."""
    if search is None or search.tool is not None:
        return None
    options: dict[str, Any] = {}
    if search.context_size is not None:
        options["search_context_size"] = search.context_size
    if search.location:
        options["user_location"] = {"type": "approximate", "approximate": dict(search.location)}
    return options


def _text(parts: tuple[internal.Part, ...]) -> str:
    """Text parts as one content string, each part's boundary kept (:func:`internal.joined`)."""
    return internal.joined(p.text for p in parts if isinstance(p, internal.Text))


def request_from_internal(conversation: internal.Conversation, model: str) -> UpstreamRequest:
    """The Chat Completions request for a conversation, sent to ``model``.

    Tool names over OpenAI's 64 characters are shortened; the request carries the way back. What is
    sent is what every OpenAI-compatible server accepts (docs/mappings.md): no ``null`` where a value
    may be absent (an assistant turn's ``content`` beside its ``tool_calls`` is left out), no empty
    ``tools``, text-only content as one string.
    """
    messages: list[dict[str, Any]] = []
    system = "\n\n".join(p.text for p in conversation.system if isinstance(p, internal.Text))
    if system:
        messages.append({"role": "system", "content": system})
    for message in conversation.messages:
        if message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant"}
            text = _text(message.parts)
            if text or not any(isinstance(p, internal.ToolCall) for p in message.parts):
                entry["content"] = text  # beside tool calls: absent, never null (llama.cpp's 500)
            reasoning = [p for p in message.parts if isinstance(p, internal.Reasoning)]
            if reasoning:
                # DeepSeek's thinking mode wants its reasoning back on tool-call turns
                entry["reasoning_content"] = internal.joined(p.text for p in reasoning)
            calls = [p for p in message.parts if isinstance(p, internal.ToolCall)]
            if calls:
                entry["tool_calls"] = [
                    {
                        "id": short_tool_id(c.id),
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
        media: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, internal.ToolResult):
                text = _text(part.content)
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": short_tool_id(part.call_id),
                        "content": f"Error: {text}" if part.is_error else text,
                    }
                )
                # a tool message holds only text: its images follow in a user message
                images = [
                    _content_part(p) for p in part.content if not isinstance(p, internal.Text)
                ]
                if any(images):
                    label = f"Images returned by tool call {short_tool_id(part.call_id)}:"
                    media += [{"type": "text", "text": label}, *(i for i in images if i)]
            else:
                converted = _content_part(part)
                if converted is not None:
                    rest.append(converted)
        rest = media + rest
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
                    **({"strict": t.strict} if t.strict is not None else {}),
                },
            }
            for t in conversation.tools
        ]
        choice = conversation.tool_choice
        if isinstance(choice, internal.NamedTool):
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
        ("response_format", params.response_format),
        ("logprobs", params.logprobs),
        ("logit_bias", params.logit_bias),
        ("top_logprobs", params.top_logprobs),
        ("service_tier", params.service_tier),
        ("web_search_options", _web_search_options(params.web_search)),
    ):
        if value is not None:
            body[name] = value
    if params.stop:
        body["stop"] = list(params.stop)
    if conversation.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    names = {short_tool_name(t.name): t.name for t in conversation.tools}
    return UpstreamRequest(
        path="/chat/completions",
        body=body,
        stream=conversation.stream,
        tool_names={short: name for short, name in names.items() if short != name},
    )


_STOP: dict[str, internal.Stop] = {
    "stop": "end",
    "length": "length",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}


def _arguments_object(text: str) -> tuple[dict[str, Any], bool]:
    """A tool call's arguments as an object; text that is not a JSON object is kept under
    ``arguments`` (and the second value says so)."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"arguments": text}, True
    return (value, False) if isinstance(value, dict) else ({"arguments": value}, True)


def estimate_input(body: Mapping[str, Any]) -> int:
    """The input tokens of a Chat Completions request, estimated: about four characters a token
    (OpenAI's rule of thumb for English) over the messages and tools, plus a few tokens of framing
    per message. An estimate, and said to be one (``Usage.estimated``)."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    text = dumps_text(messages) + json.dumps(body.get("tools") or [])
    return math.ceil(len(text) / 4) + 3 * len(messages)


def estimated_usage(body: Mapping[str, Any] | None, output: int) -> internal.Usage:
    """The usage of an answer whose upstream reported none (llama-cpp-python's streams, say)."""
    return internal.Usage(
        input=estimate_input(body) if body is not None else 0, output=output, estimated=True
    )


def usage_to_internal(usage: dict[str, Any] | None) -> internal.Usage:
    usage = usage if isinstance(usage, dict) else {}
    cached = internal.count(internal.section(usage, "prompt_tokens_details").get("cached_tokens"))
    return internal.Usage(
        input=max(0, internal.count(usage.get("prompt_tokens")) - cached),
        output=internal.count(usage.get("completion_tokens")),
        cache_read=cached,
        reasoning=internal.count(
            internal.section(usage, "completion_tokens_details").get("reasoning_tokens")
        ),
    )


def _stop_of(reason: str | None, called: bool) -> internal.Stop:
    return "tool_use" if called else _STOP.get(reason or "stop", "end")


def response_to_internal(
    body: dict[str, Any],
    tool_names: dict[str, str] | None = None,
    prompt: Mapping[str, Any] | None = None,
) -> internal.Reply:
    """A ``chat.completion`` (its first choice) as a reply; ``tool_names`` restores shortened names.
    An answer without usage gets an estimate (from ``prompt``, the request, and the reply's text)."""
    tool_names = tool_names or {}
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    parts: list[internal.Part] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(internal.Reasoning(text=reasoning))
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(internal.Text(message["content"]))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        text = function.get("arguments") or ""
        arguments, wrapped = _arguments_object(text)
        parts.append(
            internal.ToolCall(
                id=call.get("id") or f"call_{len(parts)}",
                name=tool_names.get(function.get("name", ""), function.get("name", "")),
                arguments=arguments,
                raw_arguments=text if wrapped else None,
            )
        )
    called = any(isinstance(p, internal.ToolCall) for p in parts)
    if isinstance(body.get("usage"), dict):
        usage = usage_to_internal(body["usage"])
    else:
        written = len(str(message.get("content") or "")) + len(str(reasoning or ""))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            written += len(str(function.get("name") or "")) + len(str(function.get("arguments")))
        usage = estimated_usage(prompt, internal.estimated_tokens(written))
    return internal.Reply(
        id=body.get("id", ""),
        model=body.get("model", ""),
        parts=tuple(parts),
        stop=_stop_of(choice.get("finish_reason"), called),
        usage=usage,
    )


class StreamDecoder(sse.EventDecoder):
    """OpenAI ``chat.completion.chunk`` events -> stream events (docs/mappings.md, "To
    OpenAI-compatible upstreams").

    Normalises what OpenAI-compatible servers do differently: whole arguments in one chunk with the id and
    name; every call at index 0 (a new id at a known index is a new call); ``reasoning`` or
    ``reasoning_content``; content and finish reason in one chunk; ``tool_calls: []`` beside text. The
    finish waits for ``[DONE]`` (or the end of the body) so that the usage chunk is counted; a server
    that sends none (llama-cpp-python ignores ``stream_options.include_usage``) gets an estimate:
    the request's input (``prompt``, its body), the streamed output.
    """

    def __init__(
        self, tool_names: dict[str, str] | None = None, prompt: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        self._tool_names = tool_names or {}
        self._prompt = prompt
        self._reported = False
        self._written = 0
        """Characters of output streamed (text, reasoning, tool names and arguments)."""
        self._deltas = 0
        self._started = False
        self._ids: dict[int, str] = {}  # upstream index -> id of the call there now
        self._ordinal: dict[int, int] = {}  # upstream index -> our tool ordinal
        self._count = 0
        self._reason: str | None = None
        self._usage = internal.Usage()
        self.finished = False

    def event(self, event: sse.Event) -> list[internal.StreamEvent]:
        if event.data == "[DONE]":
            return self.end()
        try:
            chunk = loads_event(event.data)
        except ValueError:
            return []
        if not isinstance(chunk, dict):
            return []
        if "error" in chunk:
            self.finished = True
            info = error_info(chunk) or ErrorInfo(
                message=f"upstream error: {chunk['error']!r:.200}"
            )
            status = info.status if info.status and 400 <= info.status < 600 else 500
            return [internal.Failure(upstream_error("openai", info, status))]
        out: list[internal.StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(internal.Start(id=chunk.get("id", ""), model=chunk.get("model", "")))
        if chunk.get("usage"):
            self._usage = usage_to_internal(chunk["usage"])
            self._reported = True
        for choice in (chunk.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(internal.ReasoningDelta(text=reasoning))
                self._written += len(reasoning)
                self._deltas += 1
            if isinstance(delta.get("content"), str) and delta["content"]:
                out.append(internal.TextDelta(delta["content"]))
                self._written += len(delta["content"])
                self._deltas += 1
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self._reason = choice["finish_reason"]
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[internal.StreamEvent]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        out: list[internal.StreamEvent] = []
        ident = call.get("id")
        if index not in self._ordinal or (ident and ident != self._ids.get(index)):
            ident = ident or f"call_{self._count}"
            self._ids[index] = ident
            self._ordinal[index] = self._count
            name = function.get("name") or ""
            self._written += len(name)
            name = self._tool_names.get(name, name)
            out.append(internal.ToolCallStart(index=self._count, id=ident, name=name))
            self._count += 1
        if function.get("arguments"):
            fragment = str(function["arguments"])
            out.append(internal.ToolArgsDelta(index=self._ordinal[index], fragment=fragment))
            self._written += len(fragment)
            self._deltas += 1
        return out

    def end(self) -> list[internal.StreamEvent]:
        """``[DONE]`` or the end of the body: finished if a finish reason came."""
        if self.finished or self._reason is None:
            return []
        self.finished = True
        usage = self._usage
        if not self._reported:
            usage = estimated_usage(self._prompt, self.estimated_output())
        return [internal.Finish(stop=_stop_of(self._reason, self._count > 0), usage=usage)]

    def estimated_output(self) -> int:
        """The output tokens streamed so far, estimated."""
        return internal.estimated_tokens(self._written, self._deltas)
