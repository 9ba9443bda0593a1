"""A fake Anthropic Messages upstream (``POST /v1/messages``), scriptable per test.

Its streams have the shapes of recorded Anthropic traffic: ``message_start`` (usage with input and cache
tokens, ``output_tokens`` 1), a ``ping``, per block ``content_block_start`` / deltas / ``content_block_stop``
(a tool use starts with ``input: {}`` and its first ``input_json_delta`` is empty; a thinking block ends
with a ``signature_delta``; a redacted one comes whole), ``message_delta`` with the stop reason and
cumulative usage, ``message_stop``.

Like Claude, it refuses (400 ``invalid_request_error``, in Claude's words) tool ids outside
``^[a-zA-Z0-9_-]+$``, unpaired ``tool_use``/``tool_result`` blocks, thinking blocks it did not sign,
a tool loop whose assistant turn does not start with thinking while thinking is on, thinking blocks in a
final assistant turn while it is off, a forced tool choice with thinking, ``thinking.type: enabled`` on
adaptive-only models, more than 4 ``cache_control`` blocks, and a ``metadata.user_id`` that looks like
an e-mail address or a phone number.

    fake = FakeAnthropic()
    base_url = await nursery.start(fake.serve)            # http://127.0.0.1:PORT
    fake.script(AnthropicScript(blocks=(Thinking("hmm"), Text("Hi"), ToolUse("get", {"a": 1}))))
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from proxycast.testing._server import FakeUpstream, RecordedRequest, Responder


@attrs.frozen
class Citation:
    """A ``web_search_result_location`` citation on a text block."""

    url: str
    title: str = "A page"
    cited_text: str = "Some cited text."


@attrs.frozen
class Text:
    text: str
    citations: tuple[Citation, ...] = ()


@attrs.frozen
class Thinking:
    thinking: str
    signature: str = "sig-fake"


@attrs.frozen
class ToolUse:
    name: str
    input: dict[str, Any] = attrs.field(factory=dict)
    id: str | None = None


@attrs.frozen
class RedactedThinking:
    data: str = "redacted-fake"


@attrs.frozen(kw_only=True)
class WebSearch:
    """A search Claude ran with its web search server tool: a ``server_tool_use`` block and its
    ``web_search_tool_result`` (an error result when ``error_code`` is set)."""

    query: str
    results: tuple[tuple[str, str], ...] = (("https://example.com/", "Example"),)
    """(url, title) pairs."""
    id: str = "srvtoolu_fake01"
    error_code: str | None = None


Block = Text | Thinking | RedactedThinking | ToolUse | WebSearch

WEB_SEARCH_TYPES = ("web_search_20250305", "web_search_20260209")
"""The web search tool versions Claude accepts."""
_WEB_SEARCH_FIELDS = {
    "type",
    "name",
    "max_uses",
    "allowed_domains",
    "blocked_domains",
    "user_location",
    "cache_control",
}


@attrs.frozen(kw_only=True)
class AnthropicScript:
    """How the fake answers one request."""

    blocks: tuple[Block, ...] = (Text("Hello from Claude."),)
    stop_reason: str | None = None
    """Default: ``tool_use`` when there is a tool use, else ``end_turn``."""
    input_tokens: int = 12
    output_tokens: int | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    usage_in_message_delta: bool = False
    """Report input and cache tokens in ``message_delta`` too (as newer API versions do)."""
    pieces: int = 3
    """Deltas per text, thinking or tool-input block."""
    interval: float = 0.0
    headers_delay: float = 0.0
    status: int = 200
    error_type: str = "invalid_request_error"
    error_message: str = "The fake upstream failed."
    error_body: bytes | None = None
    """The exact body to send with :attr:`status` instead of an answer (an answer that is not one)."""
    headers: tuple[tuple[str, str], ...] = ()
    error_after: int | None = None
    """Send ``event: error`` (overloaded) after this many events, then end."""
    drop_after: int | None = None
    """Cut the connection after this many events (streams) or before the body."""


def ratelimit_headers(
    requests: int,
    tokens: int,
    reset_in: float = 60.0,
    limit_requests: int = 50,
    limit_tokens: int = 40000,
) -> tuple[tuple[str, str], ...]:
    """The ``anthropic-ratelimit-*`` headers Anthropic sends with every answer (resets as RFC 3339
    times, ``reset_in`` seconds from now; input and output tokens each as many as ``tokens``),
    for a script's ``headers``."""
    when = datetime.fromtimestamp(time.time() + reset_in, timezone.utc)
    reset = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = [
        ("anthropic-ratelimit-requests-limit", str(limit_requests)),
        ("anthropic-ratelimit-requests-remaining", str(requests)),
        ("anthropic-ratelimit-requests-reset", reset),
    ]
    for kind in ("tokens", "input-tokens", "output-tokens"):
        headers += [
            (f"anthropic-ratelimit-{kind}-limit", str(limit_tokens)),
            (f"anthropic-ratelimit-{kind}-remaining", str(tokens)),
            (f"anthropic-ratelimit-{kind}-reset", reset),
        ]
    return tuple(headers)


def _split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _tool_id(block: ToolUse, index: int) -> str:
    return block.id or f"toolu_fake{index:02d}"


def message(script: AnthropicScript, model: str, ident: str) -> dict[str, Any]:
    """The non-streaming ``message`` the script describes."""
    content: list[dict[str, Any]] = []
    for index, block in enumerate(script.blocks):
        if isinstance(block, Text):
            text: dict[str, Any] = {"type": "text", "text": block.text}
            if block.citations:
                text["citations"] = [
                    {
                        "type": "web_search_result_location",
                        "url": c.url,
                        "title": c.title,
                        "encrypted_index": "ZmFrZQ==",
                        "cited_text": c.cited_text,
                    }
                    for c in block.citations
                ]
            content.append(text)
        elif isinstance(block, WebSearch):
            content.append(
                {
                    "type": "server_tool_use",
                    "id": block.id,
                    "name": "web_search",
                    "input": {"query": block.query},
                }
            )
            found: Any = [
                {
                    "type": "web_search_result",
                    "url": url,
                    "title": title,
                    "encrypted_content": "ZmFrZQ==",
                    "page_age": None,
                }
                for url, title in block.results
            ]
            if block.error_code is not None:
                found = {"type": "web_search_tool_result_error", "error_code": block.error_code}
            content.append(
                {"type": "web_search_tool_result", "tool_use_id": block.id, "content": found}
            )
        elif isinstance(block, Thinking):
            content.append(
                {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
            )
        elif isinstance(block, RedactedThinking):
            content.append({"type": "redacted_thinking", "data": block.data})
        elif isinstance(block, ToolUse):
            content.append(
                {
                    "type": "tool_use",
                    "id": _tool_id(block, index),
                    "name": block.name,
                    "input": block.input,
                }
            )
    has_tool = any(isinstance(b, ToolUse) for b in script.blocks)
    output = script.output_tokens
    if output is None:
        output = sum(len(json.dumps(c)) // 8 + 1 for c in content)
    searches = sum(isinstance(b, WebSearch) for b in script.blocks)
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": script.stop_reason or ("tool_use" if has_tool else "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": script.input_tokens,
            "cache_creation_input_tokens": script.cache_creation_input_tokens,
            "cache_read_input_tokens": script.cache_read_input_tokens,
            "output_tokens": output,
            **({"server_tool_use": {"web_search_requests": searches}} if searches else {}),
        },
    }


def stream_events(
    full: dict[str, Any], pieces: int = 3, usage_in_delta: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """The ``(event, data)`` pairs Anthropic streams for the message ``full``."""
    usage = full["usage"]
    start = {**full, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(full["content"]):

        def delta(body: dict[str, Any], index: int = index) -> tuple[str, dict[str, Any]]:
            return (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": body},
            )

        first: dict[str, Any]
        if block["type"] == "text":
            first = {"type": "text", "text": ""}
            deltas = [
                delta({"type": "citations_delta", "citation": c})
                for c in block.get("citations") or ()
            ]
            deltas += [
                delta({"type": "text_delta", "text": p}) for p in _split(block["text"], pieces)
            ]
        elif block["type"] == "server_tool_use":
            first = {**block, "input": {}}
            deltas = [
                delta({"type": "input_json_delta", "partial_json": p})
                for p in _split(json.dumps(block["input"]), pieces)
            ]
        elif block["type"] == "web_search_tool_result":
            first = dict(block)
            deltas = []
        elif block["type"] == "redacted_thinking":
            first = dict(block)
            deltas = []
        elif block["type"] == "thinking":
            first = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                delta({"type": "thinking_delta", "thinking": p})
                for p in _split(block["thinking"], pieces)
            ]
            deltas.append(delta({"type": "signature_delta", "signature": block["signature"]}))
        else:
            first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            arguments = json.dumps(block["input"]) if block["input"] else ""
            deltas = [delta({"type": "input_json_delta", "partial_json": ""})]
            deltas += [
                delta({"type": "input_json_delta", "partial_json": p})
                for p in _split(arguments, pieces)
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            )
        )
        events += deltas
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    final_usage = {"output_tokens": usage["output_tokens"]}
    if "server_tool_use" in usage:
        final_usage["server_tool_use"] = usage["server_tool_use"]
    if usage_in_delta:
        final_usage = dict(usage)
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": full["stop_reason"], "stop_sequence": None},
                "usage": final_usage,
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def encode_events(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"^\+?[\d\s().-]{7,}$")
ADAPTIVE_ONLY = ("claude-opus-4-7", "claude-opus-4-8", "claude-opus-5", "claude-sonnet-5")
_THINKING = ("thinking", "redacted_thinking")


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [{"type": "text", "text": content}] if isinstance(content, str) else content or []


def _thinking_on(body: dict[str, Any]) -> bool:
    return (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")


def _server_tool_problem(tool: dict[str, Any], where: str) -> str | None:
    """What Claude refuses in a server tool's definition (a tool with a ``type`` other than
    ``custom``): an unknown type, a web search tool with another name, unknown fields, both domain
    lists, a location that is not ``approximate``, ``max_uses`` below 1."""
    kind = tool.get("type")
    if kind is None or kind == "custom":
        return None
    if kind not in WEB_SEARCH_TYPES:
        return f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
    if tool.get("name") != "web_search":
        return f"{where}.{kind}.name: Input should be 'web_search'"
    extra = sorted(set(tool) - _WEB_SEARCH_FIELDS)
    if extra:
        return f"{where}.{kind}.{extra[0]}: Extra inputs are not permitted"
    if "allowed_domains" in tool and "blocked_domains" in tool:
        return f"{where}: Cannot specify both allowed_domains and blocked_domains"
    location = tool.get("user_location")
    if location is not None and location.get("type") != "approximate":
        return f"{where}.{kind}.user_location.type: Input should be 'approximate'"
    uses = tool.get("max_uses")
    if uses is not None and (not isinstance(uses, int) or uses < 1):
        return f"{where}.{kind}.max_uses: Input should be greater than or equal to 1"
    return None


def problem(body: dict[str, Any], issued: set[tuple[str, str]]) -> str | None:
    """What the Messages API refuses (400 ``invalid_request_error``) in this request, with Claude's
    own wording where it is known; None if nothing."""
    messages = body.get("messages") or []
    for i, tool in enumerate(body.get("tools") or []):
        refused = _server_tool_problem(tool, f"tools.{i}")
        if refused:
            return refused
    cached = sum("cache_control" in t for t in body.get("tools") or [])
    system = body.get("system")
    cached += sum("cache_control" in b for b in system) if isinstance(system, list) else 0
    for i, message in enumerate(messages):
        for j, block in enumerate(_blocks(message)):
            where = f"messages.{i}.content.{j}"
            cached += "cache_control" in block
            kind = block.get("type")
            for key in ("id", "tool_use_id") if kind in ("tool_use", "tool_result") else ():
                if key in block and not TOOL_ID.match(block[key]):
                    return f"{where}.{kind}.{key}: String should match pattern '^[a-zA-Z0-9_-]+$'"
            if kind == "thinking" and (block.get("thinking"), block.get("signature")) not in issued:
                return f"{where}: Invalid `signature` in `thinking` block"
            if kind == "redacted_thinking" and ("", block.get("data")) not in issued:
                return f"{where}: Invalid `data` in `redacted_thinking` block"
    if cached > 4:
        return f"A maximum of 4 blocks with cache_control may be provided. Found {cached}."
    for i in range(1, len(messages)):
        uses = {b["id"] for b in _blocks(messages[i - 1]) if b.get("type") == "tool_use"}
        results = {b["tool_use_id"] for b in _blocks(messages[i]) if b.get("type") == "tool_result"}
        if messages[i - 1].get("role") == "assistant" and uses - results:
            return (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(sorted(uses - results))}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        if results - uses:
            return (
                f"messages.{i}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{', '.join(sorted(results - uses))}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled" and str(body.get("model")).startswith(ADAPTIVE_ONLY):
        return (
            '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" '
            'and "output_config.effort" to control thinking behavior.'
        )
    if _thinking_on(body):
        if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
            return "Thinking may not be enabled when tool_choice forces tool use."
        # the current tool loop: the last assistant message, followed only by tool results
        for i in range(len(messages) - 1, -1, -1):
            blocks = _blocks(messages[i])
            if messages[i].get("role") == "assistant":
                first = blocks[0].get("type") if blocks else None
                if any(b.get("type") == "tool_use" for b in blocks) and first not in _THINKING:
                    return (
                        f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, "
                        f"but found `{first}`. When `thinking` is enabled, a final `assistant` "
                        "message must start with a thinking block (preceeding the lastmost set of "
                        "`tool_use` and `tool_result` blocks). We recommend you include thinking "
                        "blocks from previous turns. To avoid this requirement, disable `thinking`."
                    )
                break
            if any(b.get("type") != "tool_result" for b in blocks):
                break
    elif messages and messages[-1].get("role") == "assistant":
        if any(b.get("type") in _THINKING for b in _blocks(messages[-1])):
            return (
                f"messages.{len(messages) - 1}.content.0: When thinking is disabled, an "
                "`assistant` message in the final position cannot contain `thinking`. To use "
                "thinking blocks, enable `thinking` in your request."
            )
    user_id = (body.get("metadata") or {}).get("user_id")
    if isinstance(user_id, str) and EMAIL.search(user_id):
        return (
            "metadata.user_id: user_id appears to contain an email address. Please send a uuid or "
            "hash value instead."
        )
    if isinstance(user_id, str) and PHONE.match(user_id) and sum(c.isdigit() for c in user_id) >= 7:
        return (
            "metadata.user_id: user_id appears to contain a phone number. Please send a uuid or "
            "hash value instead."
        )
    return None


class FakeAnthropic(FakeUpstream[AnthropicScript]):
    """A scriptable Anthropic Messages upstream; see the module docstring."""

    url_suffix = ""

    def __init__(self, default: AnthropicScript | None = None) -> None:
        super().__init__(default or AnthropicScript())
        self.issued: set[tuple[str, str]] = set()
        """(thinking, signature) of every thinking block answered (``("", data)`` for redacted
        ones): Claude accepts back only the blocks it signed."""

    async def side_route(self, request: RecordedRequest, respond: Responder) -> bool:
        if request.method in ("GET", "HEAD") and request.route == "/v1/models":
            await respond.json(200, models_page(self.models, parse_qs(request.query)))
            return True
        return False

    async def answer(
        self, script: AnthropicScript, request: RecordedRequest, respond: Responder
    ) -> None:
        if script.headers_delay:
            await trio.sleep(script.headers_delay)
        if request.method == "POST" and request.route == "/v1/messages/count_tokens":
            await respond.json(200, {"input_tokens": count_tokens(request.json())})
            return
        if request.method != "POST" or request.route != "/v1/messages":
            await respond.json(404, _error("not_found_error", "no such route"))
            return
        if script.error_body is not None:
            headers = [("content-type", "text/html"), *script.headers]
            await respond.start(
                script.status, [*headers, ("content-length", str(len(script.error_body)))]
            )
            await respond.send(script.error_body)
            await respond.end()
            return
        if script.status >= 300:
            await respond.json(
                script.status, _error(script.error_type, script.error_message), list(script.headers)
            )
            return
        body = request.json()
        refused = problem(body, self.issued)
        if refused:
            await respond.json(400, _error("invalid_request_error", refused))
            return
        full = message(script, body["model"], f"msg_fake{len(self.requests):04d}")
        for block in full["content"]:
            if block["type"] == "thinking":
                self.issued.add((block["thinking"], block["signature"]))
            elif block["type"] == "redacted_thinking":
                self.issued.add(("", block["data"]))
        if not body.get("stream"):
            if script.drop_after is not None:
                await respond.drop()
                return
            await respond.json(200, full, list(script.headers))
            return
        await respond.start(
            200,
            [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *script.headers],
        )
        events = stream_events(full, script.pieces, script.usage_in_message_delta)
        for index, (name, data) in enumerate(events):
            if script.drop_after is not None and index >= script.drop_after:
                await respond.drop()
                return
            if script.error_after is not None and index >= script.error_after:
                error = _error("overloaded_error", "Overloaded")
                await respond.send(encode_events([("error", error)]))
                break
            if index and script.interval:
                await trio.sleep(script.interval)
            await respond.send(encode_events([(name, data)]))
        await respond.end()


def models_page(models: tuple[str, ...], query: dict[str, list[str]]) -> dict[str, Any]:
    """A page of Anthropic's ``GET /v1/models`` (``limit``, default 20, and ``after_id``)."""
    limit = int(query.get("limit", ["20"])[0])
    after = query.get("after_id", [None])[0]
    start = models.index(after) + 1 if after in models else 0
    page = models[start : start + limit]
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
        for m in page
    ]
    return {
        "data": data,
        "has_more": start + limit < len(models),
        "first_id": page[0] if page else None,
        "last_id": page[-1] if page else None,
    }


def count_tokens(body: dict[str, Any]) -> int:
    """The fake's token count: one per four characters of system, messages and tools."""
    counted = [body.get("system", ""), body.get("messages", []), body.get("tools", [])]
    return max(1, len(json.dumps(counted)) // 4)


def _error(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}}
