"""Anthropic Messages API clients (``/v1/messages``, Claude Code, the Anthropic SDKs): their requests
in, messages, stream events and errors out.

The mapping choices are in ``docs/mappings.md`` ("Anthropic Messages").
"""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any

from proxycast.errors import ProxycastError
from proxycast.formats import internal
from proxycast.formats.anthropic import wire
from proxycast.formats.anthropic.errors import error_body, mark_not_retryable, status
from proxycast.formats.anthropic.outbound import clean_tool_id, usage_to_internal
from proxycast.formats.anthropic.passthrough import AnthropicPassthrough
from proxycast.formats.contracts import (
    Headers,
    InboundRequest,
    InboundRoute,
    Operation,
    UpstreamRequest,
    bearer_or_api_key,
)
from proxycast.formats.converters import Problem, out_of_range, refuse, too_many
from proxycast.formats.json_spans import dumps_text, replace_value
from proxycast.formats.passthrough import read_forwarded
from proxycast.formats.required import deferred, envelope, structured

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from proxycast.config import ProviderConfig
    from proxycast.formats.contracts import StreamEncoder as StreamEncoderType


def _effort(budget: int | None) -> str:
    """A thinking budget as a reasoning effort (docs/mappings.md)."""
    if budget is None or budget < 2048:
        return "low"
    return "medium" if budget < 4096 else "high"


def _part_from_block(block: wire.Block, names: dict[str, str]) -> internal.Part | None:
    if isinstance(block, wire.TextBlock):
        return internal.Text(block.text, block.cache_control) if block.text else None
    if isinstance(block, (wire.ImageBlock, wire.DocumentBlock)):
        source = block.source
        if source.type == "text" and source.data is not None:
            return internal.Text(source.data, block.cache_control)
        media = source.media_type or (
            "application/pdf" if isinstance(block, wire.DocumentBlock) else None
        )
        if isinstance(block, wire.ImageBlock):
            return internal.Image(
                media_type=media,
                data=source.data,
                url=source.url,
                cache_control=block.cache_control,
            )
        return internal.Document(
            media_type=media or "application/pdf",
            data=source.data,
            url=source.url,
            filename=block.title,
            cache_control=block.cache_control,
        )
    if isinstance(block, wire.ToolUseBlock):
        call_id, signature = internal.split_id(block.id)
        names[call_id] = block.name
        return internal.ToolCall(
            id=call_id, name=block.name, arguments=block.input, signature=signature
        )
    if isinstance(block, wire.ToolResultBlock):
        content = block.content
        blocks: list[wire.Block] = (
            [wire.TextBlock(text=content)] if isinstance(content, str) else content or []
        )
        parts = [p for p in (_part_from_block(b, names) for b in blocks) if p is not None]
        call_id = internal.split_id(block.tool_use_id)[0]
        return internal.ToolResult(
            call_id=call_id,
            content=tuple(parts),
            name=names.get(call_id),
            is_error=bool(block.is_error),
        )
    if isinstance(block, wire.ThinkingBlock):
        return internal.reasoning_from_client(block.thinking, block.signature)
    if isinstance(block, wire.RedactedThinkingBlock):
        return internal.reasoning_from_client("", block.data, redacted=True)
    return None  # server tools and blocks Anthropic adds later


def _reasoning_effort(request: wire.MessagesRequest | wire.CountTokensRequest) -> str | None:
    """``thinking`` and ``output_config.effort`` as one reasoning effort (docs/mappings.md)."""
    thinking = request.thinking
    config = request.output_config if isinstance(request, wire.MessagesRequest) else None
    effort = config.effort if config else None
    if thinking is not None and thinking.type == "enabled":
        return _effort(thinking.budget_tokens)
    if thinking is not None and thinking.type == "adaptive":
        return effort or "high"  # Anthropic's default effort
    if thinking is not None and thinking.type == "disabled":
        return None
    return effort


def _response_format(
    request: wire.MessagesRequest | wire.CountTokensRequest,
) -> dict[str, Any] | None:
    config = request.output_config if isinstance(request, wire.MessagesRequest) else None
    form = config.format if config else None
    if not form or form.get("type") != "json_schema":
        return None
    schema = form.get("schema") or {"type": "object"}
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def request_to_internal(
    request: wire.MessagesRequest | wire.CountTokensRequest,
) -> internal.Conversation:
    """An Anthropic Messages request as a conversation (docs/mappings.md, "Anthropic Messages")."""
    names: dict[str, str] = {}
    system: list[internal.Part] = []
    if isinstance(request.system, str):
        system = [internal.Text(request.system)] if request.system else []
    elif request.system:
        system = [internal.Text(b.text, b.cache_control) for b in request.system if b.text]
    messages = []
    for message in request.messages:
        blocks: list[wire.Block] = (
            [wire.TextBlock(text=message.content)]
            if isinstance(message.content, str)
            else message.content
        )
        parts = [p for p in (_part_from_block(b, names) for b in blocks) if p is not None]
        if message.role == "system":
            # A system message mid-conversation (Claude Code's mid-conversation-system beta):
            # instructions, so they join the system prompt, in order (docs/mappings.md).
            system += [p for p in parts if isinstance(p, internal.Text)]
        elif parts:
            messages.append(internal.Message(message.role, tuple(parts)))
    choice: internal.ToolChoice | None = None
    parallel = None
    if request.tool_choice is not None:
        kind = request.tool_choice.type
        if kind == "tool" and request.tool_choice.name:
            choice = internal.NamedTool(request.tool_choice.name)
        else:
            choice = {"auto": "auto", "any": "required", "none": "none", "tool": "auto"}[kind]  # type: ignore[assignment]
        if request.tool_choice.disable_parallel_tool_use:
            parallel = False
    full = request if isinstance(request, wire.MessagesRequest) else None
    params = internal.Params(
        max_tokens=full.max_tokens if full else None,
        temperature=full.temperature if full else None,
        top_p=full.top_p if full else None,
        stop=tuple(full.stop_sequences or ()) if full else (),
        reasoning_effort=_reasoning_effort(request),
        response_format=_response_format(request),
        user=full.metadata.user_id if full and full.metadata else None,
    )
    stream = bool(full and full.stream)
    return internal.Conversation(
        system=tuple(system),
        messages=tuple(messages),
        tools=tuple(
            internal.Tool(
                name=t.name,
                description=t.description,
                parameters=t.input_schema,
                strict=t.strict,
                cache_control=t.cache_control,
            )
            for t in request.tools or ()
        ),
        tool_choice=choice,
        parallel_tool_calls=parallel,
        params=params,
        stream=stream,
        include_usage=stream,  # an Anthropic stream always ends with its usage
    )


_STOP_REASON: dict[internal.Stop, str] = {
    "end": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool_use": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(stop: internal.Stop, sent_tool_use: bool) -> str:
    """Anthropic's stop reason; ``tool_use`` whenever tool_use blocks were sent (vllm#9209)."""
    if sent_tool_use:
        return "tool_use"
    reason = _STOP_REASON[stop]
    return "end_turn" if reason == "tool_use" else reason


def usage_from_internal(usage: internal.Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": usage.output,
    }


def client_tool_id(call_id: str, signature: str | None) -> str:
    """The id an Anthropic client sees: ``^[a-zA-Z0-9_-]+$``, with a thought signature carried
    losslessly (base64url, :func:`internal.signed_id`)."""
    return internal.signed_id(clean_tool_id(call_id), signature)


def _message_id(ident: str) -> str:
    return ident if ident.startswith("msg_") else f"msg_{clean_tool_id(ident or 'proxycast')}"


def response_from_internal(reply: internal.Reply, model: str) -> dict[str, Any]:
    """An Anthropic ``message`` for ``reply``, under the model name the client asked for."""
    content: list[dict[str, Any]] = []
    for part in reply.parts:
        if isinstance(part, internal.Reasoning) and part.redacted:
            content.append({"type": "redacted_thinking", "data": part.signature or ""})
        elif isinstance(part, internal.Reasoning):
            signature = internal.carried_signature(part)
            content.append({"type": "thinking", "thinking": part.text, "signature": signature})
        elif isinstance(part, internal.Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, internal.ToolCall):
            content.append(
                {
                    "type": "tool_use",
                    "id": client_tool_id(part.id, part.signature),
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
    return f"event: {event}\ndata: {dumps_text(data)}\n\n".encode()


def error_frame(error: ProxycastError) -> bytes:
    """``event: error`` with the Anthropic error body; nothing follows it."""
    return _frame("error", error_body(error))


class StreamEncoder:
    """Stream events -> Anthropic SSE frames, each with its ``event:`` line (docs/mappings.md,
    "Stream events out").

    Blocks are numbered 0, 1, 2... across kinds; a change of kind closes the open block and starts the
    next, and each block's events are contiguous (its ``content_block_stop`` before the next block's
    start), as Claude sends them. A tool call's argument fragments may still come after the next
    block started (parallel calls' fragments interleaved), so what starts after an open tool call is
    held back until the message ends, while that call's arguments stream; then the call closes and
    the held blocks follow, each call with all its arguments (tool calls run once the message ended).
    ``message_delta`` (stop reason and usage) and ``message_stop`` come at the finish.
    """

    def __init__(self, model: str) -> None:
        self._model = model
        self._next = 0
        self._open: tuple[str, int] | None = (
            None  # (kind, block index) of the open text/thinking block
        )
        self._tools: dict[int, int] = {}  # tool ordinal -> block index, while open
        self._held: list[internal.StreamEvent] | None = None  # what started after an open call
        self._replaying = False
        self._sent_tool_use = False
        self._usage = internal.Usage()
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

    def encode(self, event: internal.StreamEvent) -> bytes:
        if self.finished:
            return b""
        if isinstance(event, (internal.Finish, internal.Failure)):
            pass
        elif self._held is not None:
            if not (isinstance(event, internal.ToolArgsDelta) and event.index in self._tools):
                self._held.append(event)
                return b""
        elif self._tools and isinstance(event, _BLOCK_EVENTS):
            if not self._replaying:
                self._held = [event]
                return b""
            return self._close_all() + self.encode(event)
        if isinstance(event, internal.Finish) and self._held is not None:
            held, self._held = self._held, None
            out = self._close_all()
            self._replaying = True
            for one in internal.regrouped(held):
                out += self.encode(one)
            return out + self.encode(event)
        return self._encode(event)

    def _encode(self, event: internal.StreamEvent) -> bytes:
        if isinstance(event, internal.Start):
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
        if isinstance(event, internal.TextDelta):
            if not event.text:
                # a text part's signature alone (Gemini 3's, after its text): an Anthropic client
                # has no place for it that keeps the answer's text last (docs/mappings.md)
                return b""
            index, out = self._ensure("text")
            return out + self._delta(index, {"type": "text_delta", "text": event.text})
        if isinstance(event, internal.ReasoningDelta) and event.redacted:
            out = self._close_all()
            index, start = self._start({"type": "redacted_thinking", "data": event.signature or ""})
            return out + start + self._stop(index)
        if isinstance(event, internal.ReasoningDelta):
            index, out = self._ensure("thinking")
            if event.text:
                out += self._delta(index, {"type": "thinking_delta", "thinking": event.text})
            if event.signature:
                signature = internal.carried_signature(
                    internal.Reasoning(text="", signature=event.signature, source=event.source)
                )
                out += self._delta(index, {"type": "signature_delta", "signature": signature})
                # the signature ends its block: the next reasoning is a block of its own
                out += self._stop(index)
                self._open = None
            return out
        if isinstance(event, internal.ToolCallStart):
            out = b""
            if self._open is not None:
                out += self._stop(self._open[1])
                self._open = None
            block = {
                "type": "tool_use",
                "id": client_tool_id(event.id, event.signature),
                "name": event.name,
                "input": {},
            }
            index, start = self._start(block)
            self._tools[event.index] = index
            self._sent_tool_use = True
            return out + start
        if isinstance(event, internal.ToolArgsDelta):
            tool_index = self._tools.get(event.index)
            if tool_index is None or not event.fragment:
                return b""
            return self._delta(
                tool_index, {"type": "input_json_delta", "partial_json": event.fragment}
            )
        if isinstance(event, internal.Finish):
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
        if isinstance(event, (internal.Citation, internal.WebSearchCall)):
            # Claude's search blocks and citations are Claude's own: another upstream's search is
            # left out of the answer (its text stays)
            return b""
        assert isinstance(event, internal.Failure)
        return self.fail(event.error)

    def fail(self, error: Exception) -> bytes:
        self.finished = True
        if not isinstance(error, ProxycastError):
            error = ProxycastError("Internal error in proxycast while converting the stream.")
        return error_frame(error)


_BLOCK_EVENTS = (internal.TextDelta, internal.ReasoningDelta, internal.ToolCallStart)
"""Events that start a block when none of their kind is open."""

EFFORTS = ("low", "medium", "high", "xhigh", "max")
"""``output_config.effort`` values the anthropic SDK (2.14) declares."""
THINKING_TYPES = ("enabled", "disabled", "adaptive")
"""The ``thinking`` types proxycast converts (``between_tools`` has no equivalent elsewhere)."""
MAX_MESSAGES = 100_000
"""Anthropic's documented limit of messages in one request."""


def _problems(request: wire.MessagesRequest | wire.CountTokensRequest) -> list[Problem]:
    """Values outside the ranges Anthropic's API documents."""
    problems = [*too_many(request.messages, MAX_MESSAGES, ("messages",))]
    if not request.messages:
        problems.append((("messages",), "must hold at least one message"))
    if isinstance(request, wire.MessagesRequest):
        problems += [
            *out_of_range(request.max_tokens, 1, None, ("max_tokens",)),
            *out_of_range(request.temperature, 0, 1, ("temperature",)),
            *out_of_range(request.top_p, 0, 1, ("top_p",)),
            *out_of_range(request.top_k, 0, None, ("top_k",)),
        ]
        if request.thinking is not None and request.thinking.type == "enabled":
            budget = request.thinking.budget_tokens
            problems += out_of_range(budget, 1024, None, ("thinking", "budget_tokens"))
        config = request.output_config
        if config is not None and config.effort is not None and config.effort not in EFFORTS:
            problems.append((("output_config", "effort"), f"must be one of {', '.join(EFFORTS)}"))
        form = (config.format if config else None) or {}
        if form and form.get("type") != "json_schema":
            problems.append((("output_config", "format", "type"), "must be json_schema"))
    if request.thinking is not None and request.thinking.type not in THINKING_TYPES:
        problems.append((("thinking", "type"), f"must be one of {', '.join(THINKING_TYPES)}"))
    return problems


_REQUEST_TYPES: dict[Operation, type[Any]] = {
    "generate": wire.MessagesRequest,
    "count_tokens": wire.CountTokensRequest,
}
_FORWARDED_PATHS: dict[Operation, str] = {
    "generate": "/v1/messages",
    "count_tokens": "/v1/messages/count_tokens",
}
_FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
"""The client's headers an Anthropic upstream gets too (it picks the API version and betas)."""


def without_foreign_signatures(text: str, model: str) -> str | None:
    """A forwarded body whose history carries another upstream's signatures in thinking blocks (a
    Gemini conversation moving to Claude: they are marked with their source), without those blocks:
    Claude refuses signatures it did not issue. None when there is none (the body is then forwarded
    byte for byte)."""
    if internal.SIGNATURE_MARK not in text:
        return None
    body = json.loads(text)
    changed = False
    messages = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            kept = [
                b
                for b in content
                if not (
                    isinstance(b, dict)
                    and b.get("type") == "thinking"
                    and internal.marked_source(str(b.get("signature", ""))) is not None
                )
            ]
            changed = changed or len(kept) < len(content)
            if not kept:
                continue  # a turn left empty goes (Claude joins the turns around it)
            message["content"] = kept
        messages.append(message)
    if not changed:
        return None
    body["messages"] = messages
    body["model"] = model
    return dumps_text(body)


class AnthropicDialect:
    """``/v1/messages`` and ``/v1/messages/count_tokens``, as Anthropic's SDKs and Claude Code speak them."""

    name = "anthropic"
    native_type = "anthropic"
    routes = (
        InboundRoute(path="/v1/messages", operation="generate"),
        InboundRoute(path="/v1/messages/count_tokens", operation="count_tokens"),
    )

    def owns(self, path: str) -> bool:
        return path == "/v1/messages" or path.startswith("/v1/messages/")

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

        parsed: wire.MessagesRequest | wire.CountTokensRequest | None
        parsed, problem = structured(wire.converter, body, _REQUEST_TYPES[operation])
        if parsed is not None:
            # Ranges are checked only when converted: to an Anthropic upstream the request is
            # forwarded, and Anthropic is the authority on values newer than these declarations.
            _, problem = deferred(partial(refuse, _problems(parsed)))
            parsed = parsed if problem is None else None
        return InboundRequest(
            client_model=model,
            stream=stream and operation == "generate",
            operation=operation,
            parsed=parsed,
            problem=problem,
            text=text,
            spans=spans,
            headers={k: v for k in _FORWARDED_HEADERS if (v := headers.get(k))},
        )

    def request_to_internal(self, request: InboundRequest) -> internal.Conversation:
        if request.problem is not None:
            raise request.problem
        parsed: wire.MessagesRequest | wire.CountTokensRequest = request.parsed
        return request_to_internal(parsed)

    def forward(self, request: InboundRequest, upstream_model: str) -> UpstreamRequest:
        text = without_foreign_signatures(request.text, upstream_model)
        if text is None:
            text = request.text
            if upstream_model != request.client_model:
                text = replace_value(text, request.spans["model"], upstream_model)
        return UpstreamRequest(
            path=_FORWARDED_PATHS[request.operation],
            raw=text.encode(),
            stream=request.stream,
            headers=request.headers,
        )

    def forwarded_reply(
        self, data: bytes, client_model: str, provider: str
    ) -> tuple[bytes, internal.Usage]:
        data, answer = read_forwarded(data, client_model, provider)
        return data, usage_to_internal(answer.get("usage"))

    def forwarded_stream(
        self, request: InboundRequest, provider: str, redact: Callable[[str], str]
    ) -> AnthropicPassthrough:
        return AnthropicPassthrough(request.client_model, provider, redact)

    def forwards_to(self, provider: ProviderConfig, request: InboundRequest) -> bool:
        return provider.speaks == self.native_type

    def reply_from_internal(
        self,
        replies: list[internal.Reply],
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> dict[str, Any]:
        return response_from_internal(replies[0], client_model)  # Anthropic has no n > 1

    def stream_encoder(
        self,
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> StreamEncoderType:
        return StreamEncoder(client_model)

    def dropped_tools(
        self, request: InboundRequest, searches: Callable[[], bool]
    ) -> tuple[str, ...]:
        return ()  # server tools a converted request cannot carry are refused, not left out

    def tokens_counted(self, count: int) -> dict[str, Any]:
        return {"input_tokens": count}

    def render_error(self, error: ProxycastError) -> tuple[int, bytes]:
        mark_not_retryable(error)
        return status(error), json.dumps(error_body(error)).encode()


DIALECT = AnthropicDialect()
