"""The internal model -> Anthropic's Messages API (requests), and its answers back.

The mapping choices are in ``docs/mappings.md`` ("To Anthropic upstreams").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from typing import Any

from proxycast.errors import ErrorInfo, InvalidRequestError, UpstreamError, upstream_error
from proxycast.formats import internal, sse
from proxycast.formats.anthropic.errors import error_info
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.json_spans import loads_event

log = logging.getLogger("proxycast")

DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS = {
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 16384,
    "max": 32000,
}
ADAPTIVE_EFFORTS = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "max",
}
ADAPTIVE_ONLY = (
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-mythos",
    "claude-fable",
)
"""Model families that accept only ``thinking: {type: "adaptive"}`` (a budget is a 400 there)."""
JSON_TOOL = "proxycast_json_response"
"""The forced tool a ``json_object`` response format becomes; its input is the answer's text."""
SERVICE_TIERS = {"auto": "auto", "priority": "auto", "default": "standard_only"}
TEXT_DOCUMENTS = ("text/", "application/json", "application/xml", "application/csv")
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")

_STOP: dict[str, internal.Stop] = {
    "end_turn": "end",
    "pause_turn": "length",
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


def _cached(block: dict[str, Any], cache_control: dict[str, Any] | None) -> dict[str, Any]:
    if cache_control is not None:
        block["cache_control"] = cache_control
    return block


def _image(part: internal.Image, where: str) -> dict[str, Any]:
    if part.data is not None and part.media_type not in IMAGE_TYPES:
        raise InvalidRequestError(
            f"{where}: image type {part.media_type!r} is not accepted by Anthropic models "
            "(jpeg, png, gif and webp are)."
        )
    block = {"type": "image", "source": _source(part.media_type, part.data, part.url)}
    return _cached(block, part.cache_control)


def _document(part: internal.Document, where: str) -> dict[str, Any]:
    """PDFs as documents, plain text as a text-source document, images as image blocks."""
    media = part.media_type
    if part.data is None or media == "application/pdf":
        block = {"type": "document", "source": _source(media, part.data, part.url)}
    elif media.startswith("image/"):
        return _image(
            internal.Image(media_type=media, data=part.data, cache_control=part.cache_control),
            where,
        )
    elif media.startswith(TEXT_DOCUMENTS):
        try:
            text = base64.b64decode(part.data, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidRequestError(
                f"{where}: the {media} file is not base64 of UTF-8 text.", param=where
            ) from None
        block = {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": text},
        }
    else:
        raise InvalidRequestError(
            f"{where}: Anthropic models read PDF, plain-text and image files, not {media!r}.",
            param=where,
        )
    if part.filename:
        block["title"] = part.filename
    return _cached(block, part.cache_control)


def _block(part: internal.Part, where: str) -> dict[str, Any] | None:
    if isinstance(part, internal.Text):
        if not part.text:
            return None
        return _cached({"type": "text", "text": part.text}, part.cache_control)
    if isinstance(part, internal.Image):
        return _image(part, where)
    if isinstance(part, internal.Document):
        return _document(part, where)
    if isinstance(part, internal.Audio):
        raise InvalidRequestError(
            f"{where}: Anthropic models do not take audio input.", param=where
        )
    if isinstance(part, internal.ToolCall):
        return {
            "type": "tool_use",
            "id": clean_tool_id(part.id),
            "name": part.name,
            "input": part.arguments,
        }
    if isinstance(part, internal.ToolResult):
        content = [b for b in (_block(p, where) for p in part.content) if b is not None]
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": clean_tool_id(part.call_id)}
        if content:
            result["content"] = content
        if part.is_error:
            result["is_error"] = True
        return result
    if isinstance(part, internal.WebSearchCall):
        return None  # an answer's search (no inbound dialect puts one in a history)
    # Reasoning: Anthropic accepts thinking blocks only with the signature it issued.
    if part.source is not None or not part.signature:  # another upstream's: Claude refuses it
        return None
    if part.redacted:
        return {"type": "redacted_thinking", "data": part.signature}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


_ORDER = {
    "thinking": 0,
    "redacted_thinking": 0,
    "tool_result": 0,
    "text": 1,
    "image": 1,
    "document": 1,
    "tool_use": 2,
}


def _messages(conversation: internal.Conversation) -> list[dict[str, Any]]:
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


_THINKING = ("thinking", "redacted_thinking")


def _loop_without_thinking(messages: list[dict[str, Any]]) -> bool:
    """Whether the current tool loop's assistant turn (the last one, followed by nothing but tool
    results) uses tools without starting with a thinking block, which Claude refuses with thinking on."""
    for index in range(len(messages) - 1, -1, -1):
        entry = messages[index]
        if entry["role"] == "assistant":
            uses = any(b["type"] == "tool_use" for b in entry["content"])
            return uses and entry["content"][0]["type"] not in _THINKING
        if any(b["type"] != "tool_result" for b in entry["content"]):
            return False
    return False


def _without_final_thinking(messages: list[dict[str, Any]]) -> None:
    """Thinking off: a final assistant turn may not hold thinking blocks (Claude refuses it)."""
    if messages and messages[-1]["role"] == "assistant":
        content = [b for b in messages[-1]["content"] if b["type"] not in _THINKING]
        if content:
            messages[-1]["content"] = content
        else:
            messages.pop()


def _thinking(effort: str | None, model: str) -> dict[str, Any] | None:
    """The ``thinking`` setting for a reasoning effort (docs/mappings.md, "To Anthropic upstreams")."""
    if effort is None or effort == "none":
        return None
    if effort not in THINKING_BUDGETS:
        raise InvalidRequestError(
            f"reasoning_effort {effort!r} is not one of none, {', '.join(THINKING_BUDGETS)}.",
            param="reasoning_effort",
        )
    if model.startswith(ADAPTIVE_ONLY):
        return {"type": "adaptive"}
    return {"type": "enabled", "budget_tokens": THINKING_BUDGETS[effort]}


def _strict_schema(schema: Any) -> Any:
    """A schema for Claude's structured output: every object closed (``additionalProperties: false``
    is required there)."""
    if isinstance(schema, list):
        return [_strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict_schema(v) for k, v in schema.items()}
    if out.get("type") == "object" and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def user_id(user: str) -> str:
    """``metadata.user_id`` for a client's ``user``: Claude refuses e-mail addresses and phone numbers
    there and asks for an opaque id, so a stable hash is sent."""
    return "u_" + hashlib.sha256(user.encode()).hexdigest()[:32]


def _refuse_unsupported(params: internal.Params) -> None:
    if params.logprobs:
        raise InvalidRequestError(
            "logprobs is not supported by Anthropic models; leave it out or set it to false.",
            param="logprobs",
        )
    if params.logit_bias:
        raise InvalidRequestError(
            "logit_bias is not supported by Anthropic models; leave it out.", param="logit_bias"
        )
    if params.service_tier is not None and params.service_tier not in SERVICE_TIERS:
        raise InvalidRequestError(
            f"service_tier {params.service_tier!r} has no Anthropic equivalent "
            f"({', '.join(SERVICE_TIERS)} have).",
            param="service_tier",
        )


WEB_SEARCH_TOOL = "web_search_20250305"
"""The type of Claude's web search server tool (its name is always ``web_search``)."""


def web_search_tool(search: internal.WebSearch) -> dict[str, Any]:
    """Claude's web search server tool: Claude runs the searches and answers with
    ``server_tool_use`` / ``web_search_tool_result`` blocks and cited text. OpenAI's
    ``search_context_size`` has no counterpart (dropped); Claude chooses how often to search."""
    tool: dict[str, Any] = {"type": WEB_SEARCH_TOOL, "name": "web_search"}
    if search.allowed_domains:
        tool["allowed_domains"] = list(search.allowed_domains)
    if search.location:
        tool["user_location"] = {"type": "approximate", **search.location}
    return tool


def _tool_choice(conversation: internal.Conversation, thinking: bool) -> dict[str, Any] | None:
    choice = conversation.tool_choice
    if choice == "none":
        return {"type": "none"}
    if thinking or choice is None or choice == "auto":
        out: dict[str, Any] | None = {"type": "auto"} if choice is not None or thinking else None
    elif choice == "required":
        out = {"type": "any"}
    else:
        assert isinstance(choice, internal.NamedTool)
        out = {"type": "tool", "name": choice.name}
    if conversation.parallel_tool_calls is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


def _tool(tool: internal.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["input_schema"] = tool.parameters
    if tool.strict is not None:
        out["strict"] = tool.strict
    return _cached(out, tool.cache_control)


def request_from_internal(conversation: internal.Conversation, model: str) -> UpstreamRequest:
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
    _refuse_unsupported(params)
    body: dict[str, Any] = {"model": model}
    system = []
    for part in conversation.system:
        if not isinstance(part, internal.Text):
            raise InvalidRequestError("System messages may hold only text for Anthropic models.")
        block = _block(part, "system")
        if block is not None:
            system.append(block)
    if system:
        body["system"] = system
    messages = _messages(conversation)
    thinking = _thinking(params.reasoning_effort, model)
    if thinking is not None and _loop_without_thinking(messages):
        # the client did not send the thinking blocks back (LiteLLM's modify_params choice)
        log.info("thinking dropped: the tool-using assistant turn came without its thinking blocks")
        thinking = None
    if thinking is None:
        _without_final_thinking(messages)
    body["messages"] = messages
    max_tokens = params.max_tokens or DEFAULT_MAX_TOKENS
    if thinking is not None:
        body["thinking"] = thinking
        if thinking["type"] == "adaptive":
            body["output_config"] = {"effort": ADAPTIVE_EFFORTS[params.reasoning_effort or "high"]}
        else:
            max_tokens = max(max_tokens, thinking["budget_tokens"] + 1024)
    body["max_tokens"] = max_tokens
    response_format = params.response_format or {}
    json_tool = False
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        output = {"type": "json_schema", "schema": _strict_schema(schema)}
        body["output_config"] = {**body.get("output_config", {}), "format": output}
    elif response_format.get("type") == "json_object":
        if thinking is not None:
            raise InvalidRequestError(
                "response_format json_object needs a forced tool, which Claude refuses with "
                "thinking on; use json_schema, or no reasoning_effort.",
                param="response_format",
            )
        json_tool = True
    if thinking is None:
        if params.temperature is not None:
            body["temperature"] = min(params.temperature, 1.0)
        elif params.top_p is not None:
            body["top_p"] = params.top_p
    stops = [s for s in params.stop if s.strip()]
    if stops:
        body["stop_sequences"] = stops
    tools = [_tool(t) for t in conversation.tools]
    choice = _tool_choice(conversation, thinking is not None)
    if not tools:
        used = {
            p.name
            for m in conversation.messages
            for p in m.parts
            if isinstance(p, internal.ToolCall)
        }
        has_results = any(
            isinstance(p, internal.ToolResult) for m in conversation.messages for p in m.parts
        )
        if used or has_results:
            # Anthropic rejects tool blocks in a request without tools: declare stubs, forbid calls
            tools = [{"name": n, "input_schema": {"type": "object"}} for n in sorted(used)]
            choice = {"type": "none"} if tools else None
        else:
            choice = None
    if params.web_search is not None:
        tools.append(web_search_tool(params.web_search))
    if json_tool:
        tools.append({"name": JSON_TOOL, "input_schema": {"type": "object"}})
        choice = {"type": "tool", "name": JSON_TOOL}
    if tools:
        body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice
    if params.user:
        body["metadata"] = {"user_id": user_id(params.user)}
    if params.service_tier is not None:
        body["service_tier"] = SERVICE_TIERS[params.service_tier]
    if conversation.stream:
        body["stream"] = True
    return UpstreamRequest(path="/v1/messages", body=body, stream=conversation.stream)


def _stop(reason: str | None) -> internal.Stop:
    if reason in _STOP:
        return _STOP[reason]
    log.warning("unknown Anthropic stop_reason %r, reported as 'stop'", reason)
    return "end"


def usage_to_internal(usage: dict[str, Any] | None) -> internal.Usage:
    usage = usage if isinstance(usage, dict) else {}
    return internal.Usage(
        input=internal.count(usage.get("input_tokens")),
        output=internal.count(usage.get("output_tokens")),
        cache_read=internal.count(usage.get("cache_read_input_tokens")),
        cache_write=internal.count(usage.get("cache_creation_input_tokens")),
    )


def json_tool_forced(request: UpstreamRequest | None) -> bool:
    """Whether the request forced :data:`JSON_TOOL` (its input is then the answer's text)."""
    choice = request.body.get("tool_choice") if request is not None else None
    return choice == {"type": "tool", "name": JSON_TOOL}


def citations(blocks: Any, start: int, length: int) -> tuple[internal.Citation, ...]:
    """A text block's web search citations (``web_search_result_location``), citing the block's
    span (it starts at ``start`` in the text part; Claude cites whole blocks)."""
    return tuple(
        internal.Citation(url=c["url"], title=c.get("title"), start=start, end=start + length)
        for c in blocks or ()
        if isinstance(c, dict)
        and c.get("type") == "web_search_result_location"
        and isinstance(c.get("url"), str)
    )


def web_search_call(result: dict[str, Any], searches: dict[str, Any]) -> internal.WebSearchCall:
    """A ``web_search_tool_result`` block (an error result has no sources), with the query of the
    ``server_tool_use`` block it answers."""
    ident = result.get("tool_use_id", "")
    query = (searches.get(ident) or {}).get("query")
    found = result.get("content")
    sources = (
        [r.get("url") for r in found if isinstance(r, dict)] if isinstance(found, list) else []
    )
    return internal.WebSearchCall(
        id=ident,
        queries=(query,) if isinstance(query, str) else (),
        sources=tuple(u for u in sources if isinstance(u, str)),
    )


def response_to_internal(
    message: dict[str, Any], request: UpstreamRequest | None = None
) -> internal.Reply:
    """An Anthropic ``message`` object as a reply."""
    parts: list[internal.Part] = []
    searches: dict[str, Any] = {}  # server_tool_use id -> its input
    json_text = json_tool_forced(request)
    stop = _stop(message.get("stop_reason"))
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "tool_use" and json_text and block.get("name") == JSON_TOOL:
            parts.append(internal.Text(json.dumps(block.get("input") or {})))
            stop = "end"
            continue
        if kind == "text" and block.get("text"):
            before = (
                parts[-1] if parts and isinstance(parts[-1], internal.Text) else internal.Text("")
            )
            if before.text:
                parts.pop()  # adjacent text blocks read as one text (a stream cannot tell them apart)
            cited = citations(block.get("citations"), len(before.text), len(block["text"]))
            parts.append(
                internal.Text(before.text + block["text"], citations=(*before.citations, *cited))
            )
        elif kind == "server_tool_use":
            searches[block.get("id", "")] = block.get("input") or {}
        elif kind == "web_search_tool_result":
            parts.append(web_search_call(block, searches))
        elif kind == "tool_use":
            parts.append(
                internal.ToolCall(
                    id=block["id"], name=block["name"], arguments=block.get("input") or {}
                )
            )
        elif kind == "thinking":
            parts.append(
                internal.Reasoning(text=block.get("thinking", ""), signature=block.get("signature"))
            )
        elif kind == "redacted_thinking":
            parts.append(
                internal.Reasoning(text="", signature=block.get("data", ""), redacted=True)
            )
    return internal.Reply(
        id=message.get("id", ""),
        model=message.get("model", ""),
        parts=tuple(parts),
        stop=stop,
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

    def __init__(self, request: UpstreamRequest | None = None) -> None:
        super().__init__()
        self._json_text = json_tool_forced(request)
        self._json_blocks: set[int] = set()
        self._tools: dict[int, list[Any]] = {}  # block index -> [tool ordinal, got arguments]
        self._count = 0
        self._stop: internal.Stop = "end"
        self._usage = internal.Usage()
        self._searches: dict[int, tuple[str, list[str]]] = {}  # block index -> (id, input json)
        self._queries: dict[str, Any] = {}  # server_tool_use id -> its input
        self._texts: dict[int, tuple[int, list[Any]]] = {}  # text block -> (its start, citations)
        self._run = 0  # characters of text since the last part of another kind
        self.finished = False

    def event(self, event: sse.Event) -> list[internal.StreamEvent]:
        events = self._event(event)
        for e in events:
            if isinstance(e, internal.TextDelta):
                self._run += len(e.text)
            elif not isinstance(
                e, (internal.Citation, internal.Start, internal.Finish, internal.ToolArgsDelta)
            ):
                self._run = 0
        return events

    def _event(self, event: sse.Event) -> list[internal.StreamEvent]:
        try:
            data = loads_event(event.data)
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        kind = data.get("type", event.event)
        if kind == "content_block_delta":  # the commonest, first
            return self._delta(data)
        if kind == "message_start":
            message = data.get("message") or {}
            self._usage = usage_to_internal(message.get("usage"))
            return [
                internal.Start(
                    id=message.get("id", ""), model=message.get("model", ""), usage=self._usage
                )
            ]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "redacted_thinking":
                return [internal.ReasoningDelta(signature=block.get("data", ""), redacted=True)]
            if (
                block.get("type") == "tool_use"
                and self._json_text
                and block.get("name") == JSON_TOOL
            ):
                self._json_blocks.add(data.get("index", -1))
                return []
            if block.get("type") == "tool_use":
                self._tools[data.get("index", -1)] = [self._count, False]
                self._count += 1
                return [
                    internal.ToolCallStart(
                        index=self._count - 1, id=block.get("id", ""), name=block.get("name", "")
                    )
                ]
            if block.get("type") == "server_tool_use":
                self._searches[data.get("index", -1)] = (block.get("id", ""), [])
                return []
            if block.get("type") == "web_search_tool_result":
                return [web_search_call(block, self._queries)]
            if block.get("type") == "text":
                self._texts[data.get("index", -1)] = (self._run, list(block.get("citations") or ()))
                return [internal.TextDelta(block["text"])] if block.get("text") else []
            if block.get("type") == "thinking" and block.get("thinking"):
                return [internal.ReasoningDelta(text=block["thinking"])]
            return []
        if kind == "content_block_stop":
            text = self._texts.pop(data.get("index", -1), None)
            if text is not None:
                return list(citations(text[1], text[0], self._run - text[0]))
            search = self._searches.pop(data.get("index", -1), None)
            if search is not None:
                try:
                    self._queries[search[0]] = json.loads("".join(search[1]) or "{}")
                except ValueError:
                    pass
                return []
            tool = self._tools.get(data.get("index", -1))
            if tool is not None and not tool[1]:
                tool[1] = True
                return [internal.ToolArgsDelta(index=tool[0], fragment="{}")]
            return []
        if kind == "message_delta":
            delta = data.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop = "end" if self._json_blocks else _stop(delta["stop_reason"])
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
            return [internal.Finish(stop=self._stop, usage=self._usage)]
        if kind == "error":
            self.finished = True
            return [internal.Failure(stream_error(data))]
        return []  # ping, and event types Anthropic adds later

    def _delta(self, data: dict[str, Any]) -> list[internal.StreamEvent]:
        """A ``content_block_delta`` event."""
        delta = data.get("delta") or {}
        dtype = delta.get("type")
        if dtype == "text_delta" and delta.get("text"):
            return [internal.TextDelta(delta["text"])]
        if dtype == "thinking_delta" and delta.get("thinking"):
            return [internal.ReasoningDelta(text=delta["thinking"])]
        if dtype == "signature_delta" and delta.get("signature"):
            return [internal.ReasoningDelta(signature=delta["signature"])]
        if dtype == "citations_delta" and data.get("index", -1) in self._texts:
            self._texts[data.get("index", -1)][1].append(delta.get("citation"))
            return []
        search = self._searches.get(data.get("index", -1))
        if dtype == "input_json_delta" and search is not None:
            search[1].append(delta.get("partial_json") or "")
            return []
        if dtype == "input_json_delta" and data.get("index", -1) in self._json_blocks:
            return [internal.TextDelta(delta["partial_json"])] if delta.get("partial_json") else []
        if dtype == "input_json_delta" and delta.get("partial_json"):
            tool = self._tools.get(data.get("index", -1))
            if tool is not None:
                tool[1] = True
                return [internal.ToolArgsDelta(index=tool[0], fragment=delta["partial_json"])]
        return []

    def end(self) -> list[internal.StreamEvent]:
        """Nothing: an Anthropic stream ends with ``message_stop``, and one that did not was cut."""
        return []
