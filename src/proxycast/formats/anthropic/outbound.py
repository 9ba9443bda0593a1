"""The internal model -> Anthropic's Messages API (requests), and its answers back.

The mapping choices are in ``docs/mappings.md`` ("To Anthropic upstreams").
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from proxycast import hub, sse
from proxycast.errors import ErrorInfo, InvalidRequestError, UpstreamError, upstream_error
from proxycast.formats.anthropic.errors import error_info
from proxycast.formats.contracts import UpstreamRequest

log = logging.getLogger("proxycast")

DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096}
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")

_STOP: dict[str, hub.Stop] = {
    "end_turn": "end",
    "pause_turn": "end",
    "stop_sequence": "stop_sequence",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_use",
    "refusal": "content_filter",
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


def _block(part: hub.Part, where: str) -> dict[str, Any] | None:
    if isinstance(part, hub.Text):
        if not part.text:
            return None
        block: dict[str, Any] = {"type": "text", "text": part.text}
        if part.cache_control is not None:
            block["cache_control"] = part.cache_control
        return block
    if isinstance(part, hub.Image):
        if part.data is not None and part.media_type not in IMAGE_TYPES:
            raise InvalidRequestError(
                f"{where}: image type {part.media_type!r} is not accepted by Anthropic models "
                "(jpeg, png, gif and webp are)."
            )
        return {"type": "image", "source": _source(part.media_type, part.data, part.url)}
    if isinstance(part, hub.Document):
        return {"type": "document", "source": _source(part.media_type, part.data, part.url)}
    if isinstance(part, hub.ToolCall):
        return {
            "type": "tool_use",
            "id": clean_tool_id(part.id),
            "name": part.name,
            "input": part.arguments,
        }
    if isinstance(part, hub.ToolResult):
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


def _messages(conversation: hub.Conversation) -> list[dict[str, Any]]:
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


def _tool_choice(conversation: hub.Conversation, thinking: bool) -> dict[str, Any] | None:
    choice = conversation.tool_choice
    if choice == "none":
        return {"type": "none"}
    if thinking or choice is None or choice == "auto":
        out: dict[str, Any] | None = {"type": "auto"} if choice is not None or thinking else None
    elif choice == "required":
        out = {"type": "any"}
    else:
        assert isinstance(choice, hub.NamedTool)
        out = {"type": "tool", "name": choice.name}
    if conversation.parallel_tool_calls is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def request_from_internal(conversation: hub.Conversation, model: str) -> UpstreamRequest:
    """The Anthropic Messages request for a conversation, sent to ``model``.

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
        if not isinstance(part, hub.Text):
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
            p.name for m in conversation.messages for p in m.parts if isinstance(p, hub.ToolCall)
        }
        has_results = any(
            isinstance(p, hub.ToolResult) for m in conversation.messages for p in m.parts
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
    return UpstreamRequest(path="/v1/messages", body=body, stream=conversation.stream)


def _stop(reason: str | None) -> hub.Stop:
    if reason in _STOP:
        return _STOP[reason]
    log.warning("unknown Anthropic stop_reason %r, reported as 'stop'", reason)
    return "end"


def usage_to_internal(usage: dict[str, Any] | None) -> hub.Usage:
    usage = usage if isinstance(usage, dict) else {}
    return hub.Usage(
        input=usage.get("input_tokens") or 0,
        output=usage.get("output_tokens") or 0,
        cache_read=usage.get("cache_read_input_tokens") or 0,
        cache_write=usage.get("cache_creation_input_tokens") or 0,
    )


def response_to_internal(message: dict[str, Any]) -> hub.Reply:
    """An Anthropic ``message`` object as a reply."""
    parts: list[hub.Part] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            if parts and isinstance(parts[-1], hub.Text):
                # adjacent text blocks read as one text (a stream cannot tell them apart)
                parts[-1] = hub.Text(parts[-1].text + block["text"])
            else:
                parts.append(hub.Text(block["text"]))
        elif kind == "tool_use":
            parts.append(
                hub.ToolCall(id=block["id"], name=block["name"], arguments=block.get("input") or {})
            )
        elif kind == "thinking":
            parts.append(
                hub.Reasoning(text=block.get("thinking", ""), signature=block.get("signature"))
            )
    return hub.Reply(
        id=message.get("id", ""),
        model=message.get("model", ""),
        parts=tuple(parts),
        stop=_stop(message.get("stop_reason")),
        usage=usage_to_internal(message.get("usage")),
    )


def stream_error(body: Any) -> UpstreamError:
    """An ``error`` event inside a 200 stream, as the error the status it implies would have been."""
    info = error_info(body) or ErrorInfo(message="Anthropic reported an error mid-stream.")
    return upstream_error("anthropic", info, info.status or 500)


class StreamDecoder(sse.EventDecoder):
    """Anthropic SSE events -> stream events (docs/mappings.md, "To Anthropic upstreams").

    Tool calls are numbered from 0 in the order they start, never by Anthropic's block index (a text or
    thinking block before a tool shifts that). A tool block that received no argument text gets ``{}``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tools: dict[int, list[Any]] = {}  # block index -> [tool ordinal, got arguments]
        self._count = 0
        self._stop: hub.Stop = "end"
        self._usage = hub.Usage()
        self.finished = False

    def event(self, event: sse.Event) -> list[hub.StreamEvent]:
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
                hub.Start(
                    id=message.get("id", ""), model=message.get("model", ""), usage=self._usage
                )
            ]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._tools[data.get("index", -1)] = [self._count, False]
                self._count += 1
                return [
                    hub.ToolCallStart(
                        index=self._count - 1, id=block.get("id", ""), name=block.get("name", "")
                    )
                ]
            if block.get("type") == "text" and block.get("text"):
                return [hub.TextDelta(block["text"])]
            if block.get("type") == "thinking" and block.get("thinking"):
                return [hub.ReasoningDelta(text=block["thinking"])]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                return [hub.TextDelta(delta["text"])]
            if dtype == "thinking_delta" and delta.get("thinking"):
                return [hub.ReasoningDelta(text=delta["thinking"])]
            if dtype == "signature_delta" and delta.get("signature"):
                return [hub.ReasoningDelta(signature=delta["signature"])]
            if dtype == "input_json_delta" and delta.get("partial_json"):
                tool = self._tools.get(data.get("index", -1))
                if tool is not None:
                    tool[1] = True
                    return [hub.ToolArgsDelta(index=tool[0], fragment=delta["partial_json"])]
            return []
        if kind == "content_block_stop":
            tool = self._tools.get(data.get("index", -1))
            if tool is not None and not tool[1]:
                tool[1] = True
                return [hub.ToolArgsDelta(index=tool[0], fragment="{}")]
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
            return [hub.Finish(stop=self._stop, usage=self._usage)]
        if kind == "error":
            self.finished = True
            return [hub.Failure(stream_error(data))]
        return []  # ping, and event types Anthropic adds later

    def end(self) -> list[hub.StreamEvent]:
        """Nothing: an Anthropic stream ends with ``message_stop``, and one that did not was cut."""
        return []
