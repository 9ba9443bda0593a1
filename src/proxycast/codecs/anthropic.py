"""Anthropic Messages <-> the internal model (PROTOCOLS.md sections 1, 2, 3.1 and 5, Anthropic side).

Choices where the mapping offers one (documented in the README):
- ``temperature`` above 1 (OpenAI's range is 0-2, Anthropic's 0-1) is clamped to 1;
- with both ``temperature`` and ``top_p``, only ``temperature`` is sent (newer Claude models reject both);
- ``max_tokens`` defaults to 4096; with thinking on it is raised to at least budget + 1024;
- ``reasoning_effort`` low/medium/high -> thinking budgets 1024/2048/4096; thinking drops temperature and
  top_p and turns a forced tool choice into ``auto`` (Anthropic allows neither with thinking);
- penalties, ``seed``, ``logit_bias`` and ``logprobs`` have no equivalent and are dropped;
- history with tool calls but no ``tools`` gets stub tool definitions and ``tool_choice: none``;
- ``n`` > 1 and ``response_format`` json modes are refused with a 400.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from proxycast import models
from proxycast.errors import (
    InvalidRequestError,
    ProxycastError,
    UpstreamError,
    anthropic_error_body,
    kind_for_status,
)
from proxycast.wire import anthropic as wire

if TYPE_CHECKING:
    from proxycast.sse import Event

log = logging.getLogger("proxycast")

DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096}
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")

_STOP: dict[str, models.Stop] = {
    "end_turn": "end",
    "pause_turn": "end",
    "stop_sequence": "stop_sequence",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_use",
    "refusal": "content_filter",
}

# Anthropic error types -> HTTP status (PROTOCOLS.md 5.2), for errors that arrive inside a stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 503,
    "timeout_error": 504,
}


def clean_tool_id(tool_id: str) -> str:
    """A tool id matching Anthropic's ``^[a-zA-Z0-9_-]+$``; the same id always cleans the same way, and
    two ids that differ stay different (a cleaned id carries a hash of the original)."""
    if _TOOL_ID.match(tool_id):
        return tool_id
    digest = hashlib.sha256(tool_id.encode()).hexdigest()[:10]
    return f"{_TOOL_ID_BAD.sub('_', tool_id)}_{digest}"


def _source(media_type: str | None, data: str | None, url: str | None) -> dict[str, Any]:
    if data is not None:
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _block(part: models.Part, where: str) -> dict[str, Any] | None:
    if isinstance(part, models.Text):
        if not part.text:
            return None
        block: dict[str, Any] = {"type": "text", "text": part.text}
        if part.cache_control is not None:
            block["cache_control"] = part.cache_control
        return block
    if isinstance(part, models.Image):
        if part.data is not None and part.media_type not in IMAGE_TYPES:
            raise InvalidRequestError(
                f"{where}: image type {part.media_type!r} is not accepted by Anthropic models "
                "(jpeg, png, gif and webp are)."
            )
        return {"type": "image", "source": _source(part.media_type, part.data, part.url)}
    if isinstance(part, models.Document):
        return {"type": "document", "source": _source(part.media_type, part.data, part.url)}
    if isinstance(part, models.ToolCall):
        return {
            "type": "tool_use",
            "id": clean_tool_id(part.id),
            "name": part.name,
            "input": part.arguments,
        }
    if isinstance(part, models.ToolResult):
        content = [b for b in (_block(p, where) for p in part.content) if b is not None]
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": clean_tool_id(part.call_id)}
        if content:
            result["content"] = content
        if part.is_error:
            result["is_error"] = True
        return result
    # Reasoning: Anthropic accepts thinking blocks only with the signature it issued.
    if part.signature:
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None


_ORDER = {"thinking": 0, "tool_result": 0, "text": 1, "image": 1, "document": 1, "tool_use": 2}


def _messages(conversation: models.Conversation) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(conversation.messages):
        blocks: list[dict[str, Any]] = [
            b for b in (_block(p, f"messages[{i}]") for p in message.parts) if b is not None
        ]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == message.role:
            messages[-1]["content"] += blocks  # a turn emptied by conversion joined its neighbours
        else:
            messages.append({"role": message.role, "content": blocks})
    for entry in messages:
        # assistant: thinking, text, tool_use; user: tool_result blocks first (stable otherwise)
        entry["content"].sort(key=lambda b: _ORDER.get(b["type"], 1))
    if messages and messages[-1]["role"] == "assistant":
        # a prefill: Anthropic rejects a final assistant text that ends in white space
        content = messages[-1]["content"]
        if content[-1]["type"] == "text":
            content[-1]["text"] = content[-1]["text"].rstrip()
            if not content[-1]["text"]:
                content.pop()
        if not content:
            messages.pop()
    return messages


def _tool_choice(conversation: models.Conversation, thinking: bool) -> dict[str, Any] | None:
    choice = conversation.tool_choice
    if choice == "none":
        return {"type": "none"}
    if thinking or choice is None or choice == "auto":
        out: dict[str, Any] | None = {"type": "auto"} if choice is not None or thinking else None
    elif choice == "required":
        out = {"type": "any"}
    else:
        assert isinstance(choice, models.NamedTool)
        out = {"type": "tool", "name": choice.name}
    if conversation.parallel_tool_calls is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def request_from_internal(conversation: models.Conversation, model: str) -> dict[str, Any]:
    """The Anthropic Messages request body for a conversation, sent to ``model``.

    Raises:
        InvalidRequestError: something Anthropic cannot take (``n`` > 1, a JSON response format,
            non-text system content, an image type it does not read).
    """
    params = conversation.params
    if params.n is not None and params.n > 1:
        raise InvalidRequestError(
            "n > 1 is not supported by Anthropic models; send n = 1 (or leave it out).", param="n"
        )
    if params.response_format and params.response_format.get("type") != "text":
        raise InvalidRequestError(
            "response_format json_object/json_schema is not supported for Anthropic models by this "
            "gateway; describe the format in the prompt or use a tool.",
            param="response_format",
        )
    body: dict[str, Any] = {"model": model}
    system = []
    for part in conversation.system:
        if not isinstance(part, models.Text):
            raise InvalidRequestError("System messages may hold only text for Anthropic models.")
        block = _block(part, "system")
        if block is not None:
            system.append(block)
    if system:
        body["system"] = system
    body["messages"] = _messages(conversation)
    budget = (
        THINKING_BUDGETS.get(params.reasoning_effort or "") if params.reasoning_effort else None
    )
    max_tokens = params.max_tokens or DEFAULT_MAX_TOKENS
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        max_tokens = max(max_tokens, budget + 1024)
    body["max_tokens"] = max_tokens
    if budget is None:
        if params.temperature is not None:
            body["temperature"] = min(params.temperature, 1.0)
        elif params.top_p is not None:
            body["top_p"] = params.top_p
    stops = [s for s in params.stop if s.strip()]
    if stops:
        body["stop_sequences"] = stops
    tools = [
        {"name": t.name, "description": t.description, "input_schema": t.parameters}
        if t.description
        else {"name": t.name, "input_schema": t.parameters}
        for t in conversation.tools
    ]
    choice = _tool_choice(conversation, budget is not None)
    if not tools:
        used = {
            p.name for m in conversation.messages for p in m.parts if isinstance(p, models.ToolCall)
        }
        has_results = any(
            isinstance(p, models.ToolResult) for m in conversation.messages for p in m.parts
        )
        if used or has_results:
            # Anthropic rejects tool blocks in a request without tools: declare stubs, forbid calls
            tools = [{"name": n, "input_schema": {"type": "object"}} for n in sorted(used)]
            choice = {"type": "none"} if tools else None
        else:
            choice = None
    if tools:
        body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice
    if params.user:
        body["metadata"] = {"user_id": params.user}
    if conversation.stream:
        body["stream"] = True
    return body


def _stop(reason: str | None) -> models.Stop:
    if reason in _STOP:
        return _STOP[reason]
    log.warning("unknown Anthropic stop_reason %r, reported as 'stop'", reason)
    return "end"


def usage_to_internal(usage: dict[str, Any] | None) -> models.Usage:
    usage = usage or {}
    return models.Usage(
        input=usage.get("input_tokens") or 0,
        output=usage.get("output_tokens") or 0,
        cache_read=usage.get("cache_read_input_tokens") or 0,
        cache_write=usage.get("cache_creation_input_tokens") or 0,
    )


def response_to_internal(message: dict[str, Any]) -> models.Reply:
    """An Anthropic ``message`` object as a reply."""
    parts: list[models.Part] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            if parts and isinstance(parts[-1], models.Text):
                # adjacent text blocks read as one text (a stream cannot tell them apart)
                parts[-1] = models.Text(parts[-1].text + block["text"])
            else:
                parts.append(models.Text(block["text"]))
        elif kind == "tool_use":
            parts.append(
                models.ToolCall(
                    id=block["id"], name=block["name"], arguments=block.get("input") or {}
                )
            )
        elif kind == "thinking":
            parts.append(
                models.Reasoning(text=block.get("thinking", ""), signature=block.get("signature"))
            )
    return models.Reply(
        id=message.get("id", ""),
        model=message.get("model", ""),
        parts=tuple(parts),
        stop=_stop(message.get("stop_reason")),
        usage=usage_to_internal(message.get("usage")),
    )


def error_from_body(body: Any, status: int | None = None) -> ProxycastError:
    """An Anthropic error body (``{"type": "error", "error": {type, message}}``) as a proxycast error."""
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    status = status or ERROR_STATUS.get(kind or "", 500)
    if status == 529:
        status = 503
    return UpstreamError(
        message if isinstance(message, str) else f"Anthropic error {kind or 'unknown'}",
        status=status,
        kind=kind_for_status(status),
    )


class StreamDecoder:
    """Anthropic SSE events -> stream events (PROTOCOLS.md 3.1).

    Tool calls are numbered from 0 in the order they start, never by Anthropic's block index (a text or
    thinking block before a tool shifts that). A tool block that received no argument text gets ``{}``.
    """

    def __init__(self) -> None:
        self._tools: dict[int, list[Any]] = {}  # block index -> [tool ordinal, got arguments]
        self._count = 0
        self._stop: models.Stop = "end"
        self._usage = models.Usage()
        self.finished = False

    def feed(self, event: Event) -> list[models.StreamEvent]:
        try:
            data = json.loads(event.data)
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        kind = data.get("type", event.event)
        if kind == "message_start":
            message = data.get("message") or {}
            self._usage = usage_to_internal(message.get("usage"))
            return [
                models.Start(
                    id=message.get("id", ""), model=message.get("model", ""), usage=self._usage
                )
            ]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._tools[data.get("index", -1)] = [self._count, False]
                self._count += 1
                return [
                    models.ToolCallStart(
                        index=self._count - 1, id=block.get("id", ""), name=block.get("name", "")
                    )
                ]
            if block.get("type") == "text" and block.get("text"):
                return [models.TextDelta(block["text"])]
            if block.get("type") == "thinking" and block.get("thinking"):
                return [models.ReasoningDelta(text=block["thinking"])]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                return [models.TextDelta(delta["text"])]
            if dtype == "thinking_delta" and delta.get("thinking"):
                return [models.ReasoningDelta(text=delta["thinking"])]
            if dtype == "signature_delta" and delta.get("signature"):
                return [models.ReasoningDelta(signature=delta["signature"])]
            if dtype == "input_json_delta" and delta.get("partial_json"):
                tool = self._tools.get(data.get("index", -1))
                if tool is not None:
                    tool[1] = True
                    return [models.ToolArgsDelta(index=tool[0], fragment=delta["partial_json"])]
            return []
        if kind == "content_block_stop":
            tool = self._tools.get(data.get("index", -1))
            if tool is not None and not tool[1]:
                tool[1] = True
                return [models.ToolArgsDelta(index=tool[0], fragment="{}")]
            return []
        if kind == "message_delta":
            delta = data.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop = _stop(delta["stop_reason"])
            usage = data.get("usage") or {}
            # cumulative counts; a message_delta may also carry input and cache tokens
            merged = {
                "input_tokens": self._usage.input,
                "output_tokens": self._usage.output,
                "cache_read_input_tokens": self._usage.cache_read,
                "cache_creation_input_tokens": self._usage.cache_write,
                **{k: v for k, v in usage.items() if isinstance(v, int)},
            }
            self._usage = usage_to_internal(merged)
            return []
        if kind == "message_stop":
            self.finished = True
            return [models.Finish(stop=self._stop, usage=self._usage)]
        if kind == "error":
            self.finished = True
            return [models.Failure(error_from_body(data))]
        return []  # ping, and event types Anthropic adds later

    def end(self) -> list[models.StreamEvent]:
        """Nothing: an Anthropic stream ends with ``message_stop``, and one that did not was cut."""
        return []


# The inbound direction: an Anthropic client (``/v1/messages``) served by another upstream kind.


def _effort(budget: int | None) -> str:
    """PROTOCOLS.md 3.3: a thinking budget as an OpenAI reasoning effort."""
    if budget is None or budget < 2048:
        return "low"
    return "medium" if budget < 4096 else "high"


def _part_from_block(block: wire.Block, names: dict[str, str]) -> models.Part | None:
    if isinstance(block, wire.TextBlock):
        return models.Text(block.text, block.cache_control) if block.text else None
    if isinstance(block, (wire.ImageBlock, wire.DocumentBlock)):
        source = block.source
        if source.type == "text" and source.data is not None:
            return models.Text(source.data)
        media = source.media_type or (
            "application/pdf" if isinstance(block, wire.DocumentBlock) else None
        )
        if isinstance(block, wire.ImageBlock):
            return models.Image(media_type=media, data=source.data, url=source.url)
        return models.Document(
            media_type=media or "application/pdf", data=source.data, url=source.url
        )
    if isinstance(block, wire.ToolUseBlock):
        names[block.id] = block.name
        return models.ToolCall(id=block.id, name=block.name, arguments=block.input)
    if isinstance(block, wire.ToolResultBlock):
        content = block.content
        blocks: list[wire.Block] = (
            [wire.TextBlock(text=content)] if isinstance(content, str) else content or []
        )
        parts = [p for p in (_part_from_block(b, names) for b in blocks) if p is not None]
        return models.ToolResult(
            call_id=block.tool_use_id,
            content=tuple(parts),
            name=names.get(block.tool_use_id),
            is_error=bool(block.is_error),
        )
    if isinstance(block, wire.ThinkingBlock):
        return models.Reasoning(text=block.thinking, signature=block.signature)
    return None  # redacted thinking, server tools and blocks Anthropic adds later


def request_to_internal(
    request: wire.MessagesRequest | wire.CountTokensRequest,
) -> models.Conversation:
    """An Anthropic Messages request as a conversation (PROTOCOLS.md 3.3)."""
    names: dict[str, str] = {}
    system: list[models.Part] = []
    if isinstance(request.system, str):
        system = [models.Text(request.system)] if request.system else []
    elif request.system:
        system = [models.Text(b.text, b.cache_control) for b in request.system if b.text]
    messages = []
    for message in request.messages:
        blocks: list[wire.Block] = (
            [wire.TextBlock(text=message.content)]
            if isinstance(message.content, str)
            else message.content
        )
        parts = [p for p in (_part_from_block(b, names) for b in blocks) if p is not None]
        if parts:
            messages.append(models.Message(message.role, tuple(parts)))
    choice: models.ToolChoice | None = None
    parallel = None
    if request.tool_choice is not None:
        kind = request.tool_choice.type
        if kind == "tool" and request.tool_choice.name:
            choice = models.NamedTool(request.tool_choice.name)
        else:
            choice = {"auto": "auto", "any": "required", "none": "none", "tool": "auto"}[kind]  # type: ignore[assignment]
        if request.tool_choice.disable_parallel_tool_use:
            parallel = False
    thinking = request.thinking
    effort = _effort(thinking.budget_tokens) if thinking and thinking.type == "enabled" else None
    full = request if isinstance(request, wire.MessagesRequest) else None
    params = models.Params(
        max_tokens=full.max_tokens if full else None,
        temperature=full.temperature if full else None,
        top_p=full.top_p if full else None,
        stop=tuple(full.stop_sequences or ()) if full else (),
        reasoning_effort=effort,
        user=full.metadata.user_id if full and full.metadata else None,
    )
    stream = bool(full and full.stream)
    return models.Conversation(
        model=request.model,
        system=tuple(system),
        messages=tuple(messages),
        tools=tuple(
            models.Tool(name=t.name, description=t.description, parameters=t.input_schema)
            for t in request.tools or ()
        ),
        tool_choice=choice,
        parallel_tool_calls=parallel,
        params=params,
        stream=stream,
        include_usage=stream,  # an Anthropic stream always ends with its usage
    )


_STOP_REASON: dict[models.Stop, str] = {
    "end": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool_use": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(stop: models.Stop, sent_tool_use: bool) -> str:
    """Anthropic's stop reason; ``tool_use`` whenever tool_use blocks were sent (vllm#9209)."""
    if sent_tool_use:
        return "tool_use"
    reason = _STOP_REASON[stop]
    return "end_turn" if reason == "tool_use" else reason


def usage_from_internal(usage: models.Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": usage.output,
    }


def _message_id(ident: str) -> str:
    return ident if ident.startswith("msg_") else f"msg_{clean_tool_id(ident or 'proxycast')}"


def response_from_internal(reply: models.Reply, model: str) -> dict[str, Any]:
    """An Anthropic ``message`` for ``reply``, under the model name the client asked for."""
    content: list[dict[str, Any]] = []
    for part in reply.parts:
        if isinstance(part, models.Reasoning):
            content.append(
                {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
            )
        elif isinstance(part, models.Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, models.ToolCall):
            content.append(
                {
                    "type": "tool_use",
                    "id": clean_tool_id(part.id),
                    "name": part.name,
                    "input": part.arguments,
                }
            )
    sent_tool_use = any(b["type"] == "tool_use" for b in content)
    return {
        "id": _message_id(reply.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(reply.stop, sent_tool_use),
        "stop_sequence": None,
        "usage": usage_from_internal(reply.usage),
    }


def _frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def error_frame(error: ProxycastError) -> bytes:
    """``event: error`` with the Anthropic error body; nothing follows it."""
    return _frame("error", anthropic_error_body(error))


class StreamEncoder:
    """Stream events -> Anthropic SSE frames (PROTOCOLS.md 3.2), each with its ``event:`` line.

    Blocks are numbered 0, 1, 2... across kinds; a change of kind closes the open block and starts the
    next. Tool-use blocks stay open until a text or thinking block starts or the message ends, so that
    argument fragments of parallel calls arriving interleaved still land in their own block.
    ``message_delta`` (stop reason and usage) and ``message_stop`` come at the finish.
    """

    def __init__(self, model: str) -> None:
        self._model = model
        self._next = 0
        self._open: tuple[str, int] | None = (
            None  # (kind, block index) of the open text/thinking block
        )
        self._tools: dict[int, int] = {}  # tool ordinal -> block index, while open
        self._sent_tool_use = False
        self._usage = models.Usage()
        self.finished = False

    def _start(self, block: dict[str, Any]) -> tuple[int, bytes]:
        index = self._next
        self._next += 1
        return index, _frame(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )

    def _stop(self, index: int) -> bytes:
        return _frame("content_block_stop", {"type": "content_block_stop", "index": index})

    def _close_all(self) -> bytes:
        out = b""
        if self._open is not None:
            out += self._stop(self._open[1])
            self._open = None
        for index in sorted(self._tools.values()):
            out += self._stop(index)
        self._tools.clear()
        return out

    def _ensure(self, kind: str) -> tuple[int, bytes]:
        if self._open is not None and self._open[0] == kind:
            return self._open[1], b""
        out = self._close_all()
        block = (
            {"type": "text", "text": ""}
            if kind == "text"
            else {"type": "thinking", "thinking": "", "signature": ""}
        )
        index, start = self._start(block)
        self._open = (kind, index)
        return index, out + start

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _frame(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def encode(self, event: models.StreamEvent) -> bytes:
        if self.finished:
            return b""
        if isinstance(event, models.Start):
            self._usage = event.usage
            message: dict[str, Any] = {
                "id": _message_id(event.id),
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": self._model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**usage_from_internal(event.usage), "output_tokens": 0},
            }
            return _frame("message_start", {"type": "message_start", "message": message})
        if isinstance(event, models.TextDelta):
            index, out = self._ensure("text")
            return out + self._delta(index, {"type": "text_delta", "text": event.text})
        if isinstance(event, models.ReasoningDelta):
            index, out = self._ensure("thinking")
            if event.text:
                out += self._delta(index, {"type": "thinking_delta", "thinking": event.text})
            if event.signature:
                out += self._delta(index, {"type": "signature_delta", "signature": event.signature})
            return out
        if isinstance(event, models.ToolCallStart):
            out = b""
            if self._open is not None:
                out += self._stop(self._open[1])
                self._open = None
            block = {
                "type": "tool_use",
                "id": clean_tool_id(event.id),
                "name": event.name,
                "input": {},
            }
            index, start = self._start(block)
            self._tools[event.index] = index
            self._sent_tool_use = True
            return out + start
        if isinstance(event, models.ToolArgsDelta):
            tool_index = self._tools.get(event.index)
            if tool_index is None or not event.fragment:
                return b""
            return self._delta(
                tool_index, {"type": "input_json_delta", "partial_json": event.fragment}
            )
        if isinstance(event, models.Finish):
            self.finished = True
            delta = {
                "stop_reason": stop_reason(event.stop, self._sent_tool_use),
                "stop_sequence": None,
            }
            return (
                self._close_all()
                + _frame(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": delta,
                        "usage": usage_from_internal(event.usage),
                    },
                )
                + _frame("message_stop", {"type": "message_stop"})
            )
        assert isinstance(event, models.Failure)
        return self.fail(event.error)

    def fail(self, error: Exception) -> bytes:
        self.finished = True
        if not isinstance(error, ProxycastError):
            error = ProxycastError("Internal error in proxycast while converting the stream.")
        return error_frame(error)
