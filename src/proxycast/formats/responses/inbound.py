"""OpenAI Responses API clients (``POST /v1/responses``: Codex CLI, the OpenAI Agents SDK, the openai
SDKs' ``responses``): their requests in, responses, stream events and errors out.

The mapping choices are in ``docs/mappings.md`` ("OpenAI Responses"). A non-streamed response is made
by running the reply through the stream encoder, so that a stream and its non-streamed twin cannot
disagree.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
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
from proxycast.formats.converters import invalid_request, out_of_range, refuse
from proxycast.formats.json_spans import dumps_text, replace_value
from proxycast.formats.passthrough import read_forwarded
from proxycast.formats.responses import wire
from proxycast.formats.responses.errors import error_body, stream_error
from proxycast.formats.responses.passthrough import ResponsesPassthrough, usage_to_internal

if TYPE_CHECKING:
    from proxycast.config import ProviderConfig

log = logging.getLogger("proxycast")

FUNCTION_TOOLS = frozenset({"function", "custom", "namespace"})
"""Tool types that are the client's own functions; any other type is one of OpenAI's built-in
tools, left out of the request (and named in ``x-proxycast-dropped-tools``) unless the upstream
runs an equivalent of its own (:data:`SEARCH_TOOLS`)."""
SEARCH_TOOLS = frozenset(
    {"web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"}
)
"""The built-in web search tool's types: ``Params.web_search``, which Claude and Gemini run."""

_NAMESPACE_SEPARATOR = "__"
_CUSTOM_INPUT = "input"


@attrs.frozen(kw_only=True)
class Request:
    """A validated ``/v1/responses`` request, and what the route added to it."""

    body: wire.ResponseCreateRequest
    history: tuple[dict[str, Any], ...] = ()
    """The items of the previous responses (``previous_response_id``, from the local store)."""
    record: Callable[[dict[str, Any]], None] | None = attrs.field(default=None, eq=False)
    """Called with the finished response (completed or incomplete), to store it."""
    compact: bool = False
    """``POST /v1/responses/compact``: the answer is the window compacted (:func:`compacted`)."""


@attrs.frozen(kw_only=True)
class ResponsesConversation(internal.Conversation):
    """The hub conversation, with what a Responses answer repeats or needs to map back."""

    echo: dict[str, Any] = attrs.field(factory=dict, eq=False)
    """Request fields a response object repeats (``instructions``, ``tools``, ``metadata``, ...)."""
    custom: frozenset[str] = frozenset()
    """Tool names of custom (freeform) tools: their calls are ``custom_tool_call`` items."""
    namespaces: Mapping[str, tuple[str, str]] = attrs.field(factory=dict)
    """Flattened tool name -> (namespace, name), for tools of a ``namespace`` tool."""
    dropped: tuple[str, ...] = ()
    """Built-in tools the hub has nothing for (their types): left out whatever the upstream."""
    record: Callable[[dict[str, Any]], None] | None = attrs.field(default=None, eq=False)


def dropped_tools(body: wire.ResponseCreateRequest, searches: bool = False) -> tuple[str, ...]:
    """The built-in tools of the request that a converted request leaves out: all of them, but the
    web search when the upstream runs it (``searches``)."""
    types = (t.get("type") for t in body.tools or ())
    kept = SEARCH_TOOLS if searches else frozenset()
    return tuple(dict.fromkeys(str(t) for t in types if t not in FUNCTION_TOOLS | kept))


def _web_search(tools: list[dict[str, Any]]) -> internal.WebSearch | None:
    """The first web search tool, offered to the model (``WebSearch.tool``)."""
    for tool in tools:
        if tool.get("type") in SEARCH_TOOLS:
            filters = tool.get("filters")
            domains = filters.get("allowed_domains") if isinstance(filters, dict) else None
            size = tool.get("search_context_size")
            return internal.WebSearch(
                context_size=size if isinstance(size, str) else None,
                location=internal.location(tool.get("user_location")),
                allowed_domains=tuple(d for d in domains or () if isinstance(d, str)),
                tool=str(tool["type"]),
            )
    return None


# Requests in


def _data_url(url: str) -> tuple[str, str] | None:
    if not url.startswith("data:"):
        return None
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64":
        return None
    return media_type, data


def _field(item: dict[str, Any], key: str, kind: type, where: str, *, required: bool = True) -> Any:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise InvalidRequestError(
            f"{where}.{key} must be a {kind.__name__}.", param=f"{where}.{key}"
        )
    return value


def _part(part: Any, where: str) -> internal.Part | None:
    if not isinstance(part, dict):
        raise InvalidRequestError(f"{where} must be an object.", param=where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = _field(part, "text", str, where)
        return internal.Text(text) if text else None
    if kind == "refusal":
        text = _field(part, "refusal", str, where)
        return internal.Text(text) if text else None
    if kind == "input_image":
        url = _field(part, "image_url", str, where, required=False) or ""
        inline = _data_url(url)
        if inline is not None:
            return internal.Image(media_type=inline[0], data=inline[1])
        if url.startswith(("http://", "https://")):
            return internal.Image(url=url)
        raise InvalidRequestError(
            f"{where}.image_url must be an http(s) URL or a base64 data URL (file_id refers to "
            "OpenAI's own file store).",
            param=f"{where}.image_url",
        )
    if kind == "input_file":
        filename = _field(part, "filename", str, where, required=False)
        data = _field(part, "file_data", str, where, required=False)
        url = _field(part, "file_url", str, where, required=False)
        if data:
            inline = _data_url(data)
            if inline is not None:
                return internal.Document(media_type=inline[0], data=inline[1], filename=filename)
            return internal.Document(media_type="application/pdf", data=data, filename=filename)
        if url:
            return internal.Document(media_type="application/pdf", url=url, filename=filename)
        raise InvalidRequestError(
            f"{where} needs file_data or file_url (file_id refers to OpenAI's own file store).",
            param=where,
        )
    raise InvalidRequestError(
        f"{where}: content parts of type {kind!r} cannot be sent to this model's provider.",
        param=where,
    )


def _parts(content: Any, where: str) -> list[internal.Part]:
    if isinstance(content, str):
        return [internal.Text(content)] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where} must be a string or a list of parts.", param=where)
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


def _flat(name: str, namespace: str | None) -> str:
    return f"{namespace}{_NAMESPACE_SEPARATOR}{name}" if namespace else name


def _tools(
    tools: list[dict[str, Any]],
) -> tuple[list[internal.Tool], set[str], dict[str, tuple[str, str]]]:
    out: list[internal.Tool] = []
    custom: set[str] = set()
    namespaces: dict[str, tuple[str, str]] = {}

    def add(tool: dict[str, Any], where: str, namespace: str | None) -> None:
        kind = tool.get("type")
        if kind not in ("function", "custom"):
            return
        name = _field(tool, "name", str, where)
        flat = _flat(name, namespace)
        if namespace:
            namespaces[flat] = (namespace, name)
        description = _field(tool, "description", str, where, required=False)
        if kind == "function":
            parameters = _field(tool, "parameters", dict, where, required=False)
            out.append(
                internal.Tool(
                    name=flat,
                    description=description,
                    parameters=parameters or {"type": "object", "properties": {}},
                )
            )
            return
        # A custom (freeform) tool takes one string; a function of one string argument carries it
        # to upstreams that only know functions, and its grammar is told to the model in words.
        custom.add(flat)
        fmt = tool.get("format")
        hint = "The raw input of this tool."
        if isinstance(fmt, dict) and fmt.get("type") == "grammar":
            hint += (
                f" It must follow this {fmt.get('syntax', '')} grammar:\n{fmt.get('definition')}"
            )
        out.append(
            internal.Tool(
                name=flat,
                description=description,
                parameters={
                    "type": "object",
                    "properties": {_CUSTOM_INPUT: {"type": "string", "description": hint}},
                    "required": [_CUSTOM_INPUT],
                },
            )
        )

    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if tool.get("type") == "namespace":
            namespace = _field(tool, "name", str, where)
            inner = _field(tool, "tools", list, where)
            for j, member in enumerate(inner):
                if isinstance(member, dict):
                    add(member, f"{where}.tools[{j}]", namespace)
        else:
            add(tool, where, None)
    return out, custom, namespaces


def _tool_choice(
    choice: str | dict[str, Any] | None, namespaces: set[str]
) -> internal.ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequestError(
                f"tool_choice {choice!r} is not one of auto, none, required.", param="tool_choice"
            )
        return choice  # type: ignore[return-value]
    if choice.get("type") in ("function", "custom") and isinstance(choice.get("name"), str):
        return internal.NamedTool(choice["name"])
    return "auto"  # a built-in tool or an MCP server: the model chooses


def _allowed_tools(choice: dict[str, Any]) -> tuple[set[str], set[str], str]:
    """An ``allowed_tools`` choice: (the flat names of the allowed functions and custom tools, the
    allowed built-in tools' types, the mode)."""
    mode = choice.get("mode", "auto")
    if mode not in ("auto", "required"):
        raise InvalidRequestError(
            f"tool_choice.mode {mode!r} is not one of auto, required.", param="tool_choice.mode"
        )
    listed = _field(choice, "tools", list, "tool_choice")
    names: set[str] = set()
    types: set[str] = set()
    for i, tool in enumerate(listed):
        where = f"tool_choice.tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequestError(f"{where} must be an object.", param=where)
        kind = tool.get("type")
        if kind in ("function", "custom"):
            namespace = _field(tool, "namespace", str, where, required=False)
            names.add(_flat(_field(tool, "name", str, where), namespace))
        elif kind == "namespace":  # every tool of the namespace
            names.add(_field(tool, "name", str, where) + _NAMESPACE_SEPARATOR)
        elif isinstance(kind, str):
            types.add(kind)
    return names, types, mode


def _restrict(
    choice: Any, tools: list[internal.Tool], web_search: internal.WebSearch | None
) -> tuple[list[internal.Tool], internal.WebSearch | None, internal.ToolChoice | None]:
    """The tools that go upstream and the choice among them, for an ``allowed_tools`` choice: only
    the allowed tools; ``required`` forces a call (of the one tool, when one is allowed)."""
    names, types, mode = _allowed_tools(choice)
    kept = [
        t
        for t in tools
        if t.name in names
        or any(n.endswith(_NAMESPACE_SEPARATOR) and t.name.startswith(n) for n in names)
    ]
    search = web_search if web_search is not None and web_search.tool in types else None
    if not kept:
        return [], search, None
    if mode == "auto":
        return kept, search, "auto"
    if len(kept) == 1 and search is None:
        return kept, search, internal.NamedTool(kept[0].name)
    return kept, search, "required"


def _items(items: list[Any]) -> tuple[list[internal.Part], list[tuple[str, list[internal.Part]]]]:
    """Input items -> (system parts, turns). Consecutive turns of one role are merged; tool outputs
    are user turns."""
    system: list[internal.Part] = []
    turns: list[tuple[str, list[internal.Part]]] = []
    names: dict[str, str] = {}

    def add(role: str, parts: list[internal.Part]) -> None:
        if not parts:
            return
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(parts)
        else:
            turns.append((role, parts))

    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(f"{where} must be an object.", param=where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            content = _parts(item.get("content"), f"{where}.content")
            if role in ("system", "developer"):
                system.extend(content)
            elif role in ("user", "assistant"):
                add(role, content)
            else:
                raise InvalidRequestError(
                    f"{where}.role {role!r} is not one of system, developer, user, assistant.",
                    param=f"{where}.role",
                )
        elif kind in ("function_call", "custom_tool_call"):
            call_id, signature = internal.split_id(_field(item, "call_id", str, where))
            name = _flat(
                _field(item, "name", str, where),
                _field(item, "namespace", str, where, required=False),
            )
            names[call_id] = name
            if kind == "function_call":
                arguments = _arguments(_field(item, "arguments", str, where), f"{where}.arguments")
            else:
                arguments = {_CUSTOM_INPUT: _field(item, "input", str, where)}
            call = internal.ToolCall(
                id=call_id, name=name, arguments=arguments, signature=signature
            )
            add("assistant", [call])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = internal.split_id(_field(item, "call_id", str, where))[0]
            output = item.get("output")
            content = _parts(output if output is not None else "", f"{where}.output")
            add(
                "user",
                [
                    internal.ToolResult(
                        call_id=call_id, content=tuple(content), name=names.get(call_id)
                    )
                ],
            )
        elif kind == "reasoning":
            summary = item.get("summary") or []
            texts = [s.get("text", "") for s in summary if isinstance(s, dict)]
            if not texts:
                texts = [
                    c.get("text", "") for c in item.get("content") or [] if isinstance(c, dict)
                ]
            text = "\n\n".join(t for t in texts if isinstance(t, str))
            signature = item.get("encrypted_content")
            if text or isinstance(signature, str):
                add("assistant", [reasoning_from_client(text, signature)])
        elif kind == "compaction":
            summary = compaction_summary(item.get("encrypted_content"))
            if summary is not None:
                add("user", [internal.Text(SUMMARY_HEADING + summary)])
        elif kind is None:
            raise InvalidRequestError(f"{where} needs a 'type'.", param=f"{where}.type")
        # Other items (built-in tools' calls, item references, another service's compaction) have
        # no equivalent upstream; they are left out like the tools that made them.
    return system, turns


REDACTED_MARK = "redacted:"
"""Begins the ``encrypted_content`` of a reasoning item that carries a redacted block (Claude's
``redacted_thinking``: its data, which has no text)."""


def encrypted_content(event: internal.ReasoningDelta) -> str:
    """A reasoning block's signature as its item's ``encrypted_content``: marked with its source
    when only that upstream accepts it back (``gemini-ts:...``), and as redacted when it is."""
    carried = internal.carried_signature(
        internal.Reasoning(text="", signature=event.signature, source=event.source)
    )
    return REDACTED_MARK + carried if event.redacted else carried


def reasoning_from_client(text: str, content: Any) -> internal.Reasoning:
    """A reasoning item a client sent back, with the signature its ``encrypted_content`` carries
    (:func:`encrypted_content`); another's ``encrypted_content`` (OpenAI's) is passed on as is."""
    if not isinstance(content, str):
        return internal.Reasoning(text=text)
    redacted = content.startswith(REDACTED_MARK)
    if redacted:
        content = content[len(REDACTED_MARK) :]
    return internal.reasoning_from_client(text, content, redacted)


# Compaction (POST /v1/responses/compact, converted): the upstream model summarises the window; the
# summary travels in a compaction item's encrypted_content, which proxycast expands on the way up.

COMPACTION_PREFIX = "pxc1."
"""How proxycast's compaction items' ``encrypted_content`` begins: then the summary, as base64url
of the JSON ``{"summary": text}`` (not encrypted: proxycast keeps no key; docs/mappings.md)."""
SUMMARY_HEADING = "Summary of the earlier conversation (compacted):\n"
"""What the summary of a compaction item is headed with, as the user turn it becomes upstream."""
COMPACT_PROMPT = (
    "Summarize the conversation above so that it can be continued from the summary alone: keep "
    "every fact, decision, name, number, file and open task a later turn may need. Answer with "
    "the summary only."
)
"""The instruction a converted ``/v1/responses/compact`` ends the window with."""


def compaction_content(summary: str) -> str:
    """A summary as a compaction item's ``encrypted_content``."""
    data = json.dumps({"summary": summary}).encode()
    return COMPACTION_PREFIX + base64.urlsafe_b64encode(data).decode()


def compaction_summary(content: Any) -> str | None:
    """The summary a compaction item of proxycast's carries; None for another's (OpenAI's are
    encrypted with its own key) or a damaged one."""
    if not isinstance(content, str) or not content.startswith(COMPACTION_PREFIX):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(content[len(COMPACTION_PREFIX) :]))
    except ValueError:
        return None
    summary = data.get("summary") if isinstance(data, dict) else None
    return summary if isinstance(summary, str) else None


def compaction_request(conversation: ResponsesConversation) -> ResponsesConversation:
    """The conversation that asks the model for a summary of ``conversation`` (its tools kept, for
    the calls in it, but none called)."""
    ask = internal.Message("user", (internal.Text(COMPACT_PROMPT),))
    messages = list(conversation.messages)
    if messages and messages[-1].role == "user":
        messages[-1] = internal.Message("user", (*messages[-1].parts, *ask.parts))
    else:
        messages.append(ask)
    return attrs.evolve(
        conversation,
        messages=tuple(messages),
        tool_choice="none" if conversation.tools else None,
        stream=False,
        include_usage=False,
        record=None,
    )


def _user_message(item: dict[str, Any], number: int, ident: str) -> dict[str, Any]:
    content = item.get("content")
    if isinstance(content, str):
        content = [{"type": "input_text", "text": content}]
    return {
        "id": item["id"] if isinstance(item.get("id"), str) else f"msg_{ident}{number:03d}",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": content,
    }


def compacted(reply: internal.Reply, request: Request) -> dict[str, Any]:
    """A ``response.compaction`` object (openai-python's ``CompactedResponse``): the window's user
    messages, then one compaction item that carries the model's summary of it."""
    ident = secrets.token_hex(12)
    items = [*request.history, *input_items(request.body)]
    users = [
        _user_message(item, n, ident)
        for n, item in enumerate(items)
        if isinstance(item, dict)
        and item.get("type", "message") == "message"
        and item.get("role") == "user"
    ]
    summary = "".join(p.text for p in reply.parts if isinstance(p, internal.Text))
    item = {
        "id": f"cmp_{ident}",
        "type": "compaction",
        "encrypted_content": compaction_content(summary),
        "created_by": "proxycast",
    }
    return {
        "id": f"resp_{ident}",
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [*users, item],
        "usage": usage_from_internal(reply.usage),
    }


def warm_up(request: Request, model: str) -> tuple[bytes, dict[str, Any]]:
    """The answer to ``generate: false`` (a warm-up: Codex's prewarm over a WebSocket): an empty
    completed response, made here, as its stream's events and as the response object; its
    conversation is kept (``record``) for the ``previous_response_id`` that follows."""
    encoder = StreamEncoder(model, request_to_internal(request))
    events = encoder.encode(internal.Start(id="", model=model))
    events += encoder.encode(internal.Finish(stop="end", usage=internal.Usage()))
    assert encoder.response is not None
    return events, encoder.response


def input_items(body: wire.ResponseCreateRequest) -> list[dict[str, Any]]:
    """The request's input as a list of items (a string is one user message)."""
    if isinstance(body.input, str):
        return [{"type": "message", "role": "user", "content": body.input}]
    return list(body.input)


def _response_format(text: wire.TextConfig | None) -> dict[str, Any] | None:
    fmt = text.format if text else None
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": str(fmt.get("type"))}


def _echoed_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as OpenAI repeats it: a function with its ``description``, ``parameters`` and
    ``strict`` (``false`` when the request left it out: a converted upstream gets no strict mode)."""
    if tool.get("type") != "function":
        return tool
    return {"description": None, "parameters": None, **tool, "strict": tool.get("strict") is True}


def _echo(body: wire.ResponseCreateRequest) -> dict[str, Any]:
    """What a response repeats of its request: every field OpenAI always returns, with OpenAI's
    default where the request left it out (docs/mappings.md)."""
    reasoning = body.reasoning
    text = body.text
    return {
        "background": False,  # proxycast runs nothing in the background
        "completed_at": None,
        "frequency_penalty": body.frequency_penalty or 0.0,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls,
        "metadata": body.metadata or {},
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "presence_penalty": body.presence_penalty or 0.0,
        "previous_response_id": body.previous_response_id,
        "prompt_cache_key": body.prompt_cache_key,
        "prompt_cache_retention": body.prompt_cache_retention,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": reasoning.summary if reasoning else None,
        },
        "safety_identifier": body.safety_identifier,
        "service_tier": "default",  # the tier a converted upstream served: its own, no other
        "store": body.store is not False,
        "temperature": body.temperature if body.temperature is not None else 1.0,
        "text": {
            "format": (text.format if text and text.format else None) or {"type": "text"},
            "verbosity": (text.verbosity if text else None) or "medium",
        },
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "tools": [_echoed_tool(t) for t in body.tools or ()],
        "top_logprobs": body.top_logprobs or 0,
        "top_p": body.top_p if body.top_p is not None else 1.0,
        "truncation": body.truncation or "disabled",
        "user": body.user,
    }


def request_to_internal(request: Request) -> ResponsesConversation:
    """A Responses request (after its history) as a conversation (docs/mappings.md)."""
    body = request.body
    system: list[internal.Part] = [internal.Text(body.instructions)] if body.instructions else []
    more, turns = _items([*request.history, *input_items(body)])
    tools, custom, namespaces = _tools(body.tools or [])
    web_search = _web_search(body.tools or [])
    choice = body.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        tools, web_search, tool_choice = _restrict(choice, tools, web_search)
    else:
        tool_choice = _tool_choice(choice, set(namespaces)) if tools else None
    effort = body.reasoning.effort if body.reasoning else None
    stream = bool(body.stream)
    return ResponsesConversation(
        system=(*system, *more),
        messages=tuple(internal.Message(role, tuple(parts)) for role, parts in turns),  # type: ignore[arg-type]
        tools=tuple(tools),
        tool_choice=tool_choice,
        parallel_tool_calls=body.parallel_tool_calls if tools else None,
        params=internal.Params(
            max_tokens=body.max_output_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            reasoning_effort=effort if effort not in (None, "none") else None,
            response_format=_response_format(body.text),
            user=body.user or body.safety_identifier,
            web_search=web_search,
        ),
        stream=stream,
        include_usage=stream,
        echo=_echo(body),
        custom=frozenset(custom),
        namespaces=namespaces,
        dropped=dropped_tools(body, searches=True),
        record=request.record,
    )


# Responses and stream events out


def usage_from_internal(usage: internal.Usage) -> dict[str, Any]:
    prompt = usage.input + usage.cache_read + usage.cache_write
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read,
            "cache_write_tokens": usage.cache_write,
        },
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": prompt + usage.output,
    }


_INCOMPLETE: dict[internal.Stop, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


class StreamEncoder:
    """Stream events -> the Responses API's SSE events, in the order the API emits them, each with
    its ``event:`` line and a ``sequence_number`` counting from 0 (docs/mappings.md).

    One output item per reasoning block, text run and tool call, and each item's events contiguous
    (its ``output_item.done`` before the next item's ``output_item.added``, as OpenAI sends them): a
    text run or reasoning block closes when something else starts. A tool call's arguments may
    still come after the next item started (parallel calls' fragments interleaved), so what starts
    after an open tool call is held back until the response ends, while that call's arguments
    stream; then the call closes and the held items follow, each call with all its arguments.
    :attr:`response` is the final response object once the stream finished.
    """

    def __init__(self, model: str, conversation: internal.Conversation) -> None:
        self._model = model
        self._conversation = conversation
        self._id = new_response_id()
        self._created = int(time.time())
        self._sequence = 0
        self._output: list[dict[str, Any] | None] = []  # by output index; None while open
        self._open: tuple[str, int, dict[str, Any], list[str]] | None = None  # text or reasoning
        self._tools: dict[int, tuple[int, dict[str, Any], list[str]]] = {}
        self._held: list[internal.StreamEvent] | None = None  # after an open tool call
        self._replaying = False
        self.response: dict[str, Any] | None = None
        self.finished = False

    @property
    def _custom(self) -> frozenset[str]:
        c = self._conversation
        return c.custom if isinstance(c, ResponsesConversation) else frozenset()

    @property
    def _namespaces(self) -> Mapping[str, tuple[str, str]]:
        c = self._conversation
        return c.namespaces if isinstance(c, ResponsesConversation) else {}

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return f"event: {kind}\ndata: {dumps_text(data)}\n\n".encode()

    def _response(self, status: str, **fields: Any) -> dict[str, Any]:
        c = self._conversation
        echo = c.echo if isinstance(c, ResponsesConversation) else {}
        return {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "error": None,
            "incomplete_details": None,
            **echo,
            "model": self._model,
            "output": [item for item in self._output if item is not None],
            "usage": None,
            **fields,
        }

    def _item_id(self, prefix: str) -> str:
        return f"{prefix}_{self._id[5:]}{len(self._output):03d}"

    def _add(self, item: dict[str, Any]) -> tuple[int, bytes]:
        index = len(self._output)
        self._output.append(None)
        return index, self._event("response.output_item.added", output_index=index, item=item)

    def _done(self, index: int, item: dict[str, Any]) -> bytes:
        self._output[index] = item
        return self._event("response.output_item.done", output_index=index, item=item)

    def _close_open(self, status: str = "completed") -> bytes:
        """Close the open message or reasoning item (``status``: ``incomplete`` when the response
        ends so, as OpenAI marks the message it cut)."""
        if self._open is None:
            return b""
        kind, index, item, texts = self._open
        self._open = None
        text = "".join(texts)
        if kind == "message":
            annotations = item.pop("annotations", [])
            part = {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}
            ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
            return (
                self._event("response.output_text.done", **ids, text=text, logprobs=[])
                + self._event("response.content_part.done", **ids, part=part)
                + self._done(index, {**item, "status": status, "content": [part]})
            )
        part = {"type": "summary_text", "text": text}
        ids = {"item_id": item["id"], "output_index": index, "summary_index": 0}
        out = b""
        done = {k: v for k, v in item.items() if k != "started"}
        done["summary"] = [part] if text else []
        if "started" in item:
            out += self._event("response.reasoning_summary_text.done", **ids, text=text)
            out += self._event("response.reasoning_summary_part.done", **ids, part=part)
            out += self._event(
                "response.reasoning_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
            )
            # the upstream's reasoning as it gave it (the summary repeats it: clients show that)
            done["content"] = [{"type": "reasoning_text", "text": text}]
        return out + self._done(index, done)

    def _close_tools(self) -> bytes:
        out = b""
        for _, (index, item, fragments) in sorted(self._tools.items()):
            ids = {"item_id": item["id"], "output_index": index}
            text = "".join(fragments)
            if item["type"] == "custom_tool_call":
                value = _custom_input(text)
                out += self._event("response.custom_tool_call_input.delta", **ids, delta=value)
                out += self._event("response.custom_tool_call_input.done", **ids, input=value)
                out += self._done(index, {**item, "input": value})
            else:
                out += self._event("response.function_call_arguments.done", **ids, arguments=text)
                out += self._done(index, {**item, "status": "completed", "arguments": text})
        self._tools.clear()
        return out

    def _ensure(self, kind: str) -> tuple[dict[str, Any], int, list[str], bytes]:
        if self._open is not None and self._open[0] == kind:
            return self._open[2], self._open[1], self._open[3], b""
        out = self._close_open()
        if kind == "message":
            item: dict[str, Any] = {
                "id": self._item_id("msg"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            index, added = self._add(item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            added += self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        else:
            item = {"id": self._item_id("rs"), "type": "reasoning", "summary": []}
            index, added = self._add(item)
        texts: list[str] = []
        self._open = (kind, index, item, texts)
        return item, index, texts, out + added

    def encode(self, event: internal.StreamEvent) -> bytes:
        if self.finished:
            return b""
        if isinstance(event, (internal.Finish, internal.Failure)):
            pass
        elif self._held is not None:
            if not (isinstance(event, internal.ToolArgsDelta) and event.index in self._tools):
                self._held.append(event)
                return b""
        elif self._tools and isinstance(event, _ITEM_EVENTS):
            if not self._replaying:
                self._held = [event]
                return b""
            return self._close_tools() + self.encode(event)
        if isinstance(event, internal.Finish) and self._held is not None:
            held, self._held = self._held, None
            out = self._close_tools()
            self._replaying = True
            for one in internal.regrouped(held):
                out += self.encode(one)
            return out + self.encode(event)
        if isinstance(event, internal.Start):
            response = self._response("in_progress")
            return self._event("response.created", response=response) + self._event(
                "response.in_progress", response=response
            )
        if isinstance(event, internal.TextDelta):
            if not event.text:
                return b""  # a text part's signature alone: no item keeps it (docs/mappings.md)
            item, index, texts, out = self._ensure("message")
            texts.append(event.text)
            return out + self._event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                delta=event.text,
                logprobs=[],
            )
        if isinstance(event, internal.ReasoningDelta):
            item, index, texts, out = self._ensure("reasoning")
            ids = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            if event.text:
                if "started" not in item:
                    item["started"] = True
                    out += self._event(
                        "response.reasoning_summary_part.added",
                        **ids,
                        part={"type": "summary_text", "text": ""},
                    )
                texts.append(event.text)
                out += self._event("response.reasoning_summary_text.delta", **ids, delta=event.text)
                out += self._event(
                    "response.reasoning_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=event.text,
                )
            if event.signature:  # the last delta of a thinking block
                item["encrypted_content"] = encrypted_content(event)
                out += self._close_open()
            return out
        if isinstance(event, internal.ToolCallStart):
            out = self._close_open()
            namespace, name = self._namespaces.get(event.name, (None, event.name))
            item = {"id": self._item_id("ctc" if event.name in self._custom else "fc")}
            if event.name in self._custom:
                item.update(type="custom_tool_call", status="completed", call_id=event.id)
                item.update(input="", name=name)
            else:
                item.update(type="function_call", status="in_progress", arguments="")
                # a Gemini 3 call's signature rides in its call_id, as in chat completions' ids
                item.update(call_id=internal.signed_id(event.id, event.signature), name=name)
            if namespace:
                item["namespace"] = namespace
            index, added = self._add(item)
            self._tools[event.index] = (index, item, [])
            return out + added
        if isinstance(event, internal.ToolArgsDelta):
            tool = self._tools.get(event.index)
            if tool is None or not event.fragment:
                return b""
            index, item, fragments = tool
            fragments.append(event.fragment)
            if item["type"] == "custom_tool_call":
                return b""  # its input is sent whole at the end (it is one JSON string inside)
            return self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=event.fragment,
            )
        if isinstance(event, internal.Finish):
            reason = _INCOMPLETE.get(event.stop)
            out = self._close_open("completed" if reason is None else "incomplete")
            out += self._close_tools()
            self.finished = True
            usage = usage_from_internal(event.usage)
            if reason is None:
                self.response = self._response(
                    "completed", usage=usage, completed_at=int(time.time())
                )
                out += self._event("response.completed", response=self.response)
            else:
                self.response = self._response(
                    "incomplete", usage=usage, incomplete_details={"reason": reason}
                )
                out += self._event("response.incomplete", response=self.response)
            record = getattr(self._conversation, "record", None)
            if record is not None:
                record(self.response)
            return out
        if isinstance(event, internal.Citation):
            return self._cite(event)
        if isinstance(event, internal.WebSearchCall):
            return self._search(event)
        assert isinstance(event, internal.Failure)
        return self.fail(event.error)

    def _cite(self, citation: internal.Citation) -> bytes:
        """A ``url_citation`` on the open message's text (none open: nothing to cite)."""
        if self._open is None or self._open[0] != "message":
            return b""
        _, index, item, _ = self._open
        annotations = item.setdefault("annotations", [])
        annotation = {
            "type": "url_citation",
            "url": citation.url,
            "title": citation.title or citation.url,
            "start_index": citation.start,
            "end_index": citation.end,
        }
        annotations.append(annotation)
        return self._event(
            "response.output_text.annotation.added",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            annotation_index=len(annotations) - 1,
            annotation=annotation,
        )

    def _search(self, call: internal.WebSearchCall) -> bytes:
        """A ``web_search_call`` item: the upstream's search, already done."""
        out = self._close_open()
        item: dict[str, Any] = {"id": self._item_id("ws"), "type": "web_search_call"}
        index, added = self._add({**item, "status": "in_progress"})
        ids = {"item_id": item["id"], "output_index": index}
        action: dict[str, Any] = {"type": "search", "query": " | ".join(call.queries)}
        if call.queries:
            action["queries"] = list(call.queries)
        if call.sources:
            action["sources"] = [{"type": "url", "url": url} for url in call.sources]
        return (
            out
            + added
            + self._event("response.web_search_call.in_progress", **ids)
            + self._event("response.web_search_call.searching", **ids)
            + self._event("response.web_search_call.completed", **ids)
            + self._done(index, {**item, "status": "completed", "action": action})
        )

    def fail(self, error: Exception) -> bytes:
        self.finished = True
        if not isinstance(error, ProxycastError):
            error = ProxycastError("Internal error in proxycast while converting the stream.")
        response = self._response("failed", error=stream_error(error))
        return self._event("response.failed", response=response)


_ITEM_EVENTS = (
    internal.TextDelta,
    internal.ReasoningDelta,
    internal.ToolCallStart,
    internal.WebSearchCall,
    internal.Citation,
)
"""Events that start an output item when none of their kind is open (a citation follows its text)."""


def _custom_input(arguments: str) -> str:
    """A custom tool's input from the arguments of the function that carried it."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return arguments
    carried = value.get(_CUSTOM_INPUT) if isinstance(value, dict) else None
    return carried if isinstance(carried, str) else arguments


def events_of(reply: internal.Reply) -> list[internal.StreamEvent]:
    """The stream events a reply is the accumulation of (``internal.accumulate`` inverted)."""
    events: list[internal.StreamEvent] = [internal.Start(id=reply.id, model=reply.model)]
    calls = 0
    for part in reply.parts:
        if isinstance(part, internal.Reasoning):
            events.append(
                internal.ReasoningDelta(
                    text=part.text,
                    signature=part.signature,
                    redacted=part.redacted,
                    source=part.source,
                )
            )
        elif isinstance(part, internal.Text):
            events.append(internal.TextDelta(part.text))
            events.extend(part.citations)
        elif isinstance(part, internal.WebSearchCall):
            events.append(part)
        elif isinstance(part, internal.ToolCall):
            events.append(
                internal.ToolCallStart(
                    index=calls, id=part.id, name=part.name, signature=part.signature
                )
            )
            # arguments that were not a JSON object upstream go back as they came, not re-wrapped
            fragment = part.raw_arguments
            if fragment is None:
                fragment = json.dumps(part.arguments)
            events.append(internal.ToolArgsDelta(index=calls, fragment=fragment))
            calls += 1
    events.append(internal.Finish(stop=reply.stop, usage=reply.usage))
    return events


def response_from_internal(
    reply: internal.Reply, model: str, conversation: internal.Conversation
) -> dict[str, Any]:
    """The ``response`` object for ``reply``: what its stream's last event would carry."""
    encoder = StreamEncoder(model, conversation)
    for event in events_of(reply):
        encoder.encode(event)
    assert encoder.response is not None
    return encoder.response


# The dialect


def _problems(body: wire.ResponseCreateRequest) -> list[tuple[tuple[str | int, ...], str]]:
    return [
        *out_of_range(body.max_output_tokens, 16, None, ("max_output_tokens",)),
        *out_of_range(body.temperature, 0, 2, ("temperature",)),
        *out_of_range(body.top_p, 0, 1, ("top_p",)),
    ]


def validate(body: dict[str, Any]) -> wire.ResponseCreateRequest:
    try:
        parsed = wire.converter.structure(body, wire.ResponseCreateRequest)
    except BaseValidationError as exc:
        raise invalid_request(exc) from None
    refuse(_problems(parsed))
    return parsed


class ResponsesDialect:
    """``/v1/responses``, as Codex CLI, the Agents SDK and the openai SDKs speak it.

    Its routes' handlers are ``api/responses.py``'s (the API is stateful: ``previous_response_id``
    and the store); the conversion is this dialect's, as for every other.
    """

    name = "responses"
    native_type = "openai"
    routes = (
        InboundRoute(path="/v1/responses", operation="create_response"),
        InboundRoute(path="/v1/responses/{id}", operation="get_response", method="GET"),
        InboundRoute(path="/v1/responses/{id}", operation="delete_response", method="DELETE"),
        InboundRoute(path="/v1/responses/input_tokens", operation="count_tokens"),
        InboundRoute(path="/v1/responses/compact", operation="compact_response"),
        InboundRoute(
            path="/v1/responses/{id}/input_items", operation="list_input_items", method="GET"
        ),
        InboundRoute(path="/v1/responses/{id}/cancel", operation="cancel_response"),
        InboundRoute(path="/v1/responses", operation="response_socket", method="WEBSOCKET"),
    )

    def owns(self, path: str) -> bool:
        return path == "/v1/responses" or path.startswith("/v1/responses/")

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
        parsed = validate(body)
        compact = route.operation == "compact_response"
        return InboundRequest(
            client_model=parsed.model,
            stream=bool(parsed.stream) and not compact,
            operation=operation,
            parsed=Request(body=parsed, compact=compact),
            text=text,
            spans=spans,
        )

    def forwards_to(self, provider: ProviderConfig, request: InboundRequest) -> bool:
        # A request that continues a locally stored response cannot go as written: the upstream has
        # never seen that response id.
        # Counting (/responses/input_tokens) is OpenAI's own: a cloud that speaks its format has
        # no such route (Azure answers 404), so its counts are estimated.
        parsed: Request = request.parsed
        if request.operation == "count_tokens" and provider.type != self.native_type:
            return False
        return provider.speaks == self.native_type and provider.responses and not parsed.history

    def request_to_internal(self, request: InboundRequest) -> internal.Conversation:
        # What is left out depends on the upstream: the route says it once one has answered.
        conversation = request_to_internal(request.parsed)
        return compaction_request(conversation) if request.parsed.compact else conversation

    def forward(self, request: InboundRequest, upstream_model: str) -> UpstreamRequest:
        text = request.text
        if upstream_model != request.client_model:
            text = replace_value(text, request.spans["model"], upstream_model)
        path = "/responses"
        if request.operation == "count_tokens":
            path = "/responses/input_tokens"
        elif request.parsed.compact:
            path = "/responses/compact"
        return UpstreamRequest(path=path, raw=text.encode(), stream=request.stream)

    def forwarded_reply(
        self, data: bytes, client_model: str, provider: str
    ) -> tuple[bytes, internal.Usage]:
        data, answer = read_forwarded(data, client_model, provider)
        return data, usage_to_internal(answer.get("usage"))

    def forwarded_stream(
        self, request: InboundRequest, provider: str, redact: Callable[[str], str]
    ) -> ResponsesPassthrough:
        relay = ResponsesPassthrough(request.client_model, provider, redact)
        relay.record = request.parsed.record
        return relay

    def reply_from_internal(
        self,
        replies: list[internal.Reply],
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> dict[str, Any]:
        if request is not None and request.parsed.compact:
            return compacted(replies[0], request.parsed)
        return response_from_internal(replies[0], client_model, conversation)

    def stream_encoder(
        self,
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> StreamEncoder:
        return StreamEncoder(client_model, conversation)

    def dropped_tools(
        self, request: InboundRequest, searches: Callable[[], bool]
    ) -> tuple[str, ...]:
        body = request.parsed.body
        offered = any(t.get("type") in SEARCH_TOOLS for t in body.tools or ())
        return dropped_tools(body, searches=offered and searches())

    def tokens_counted(self, count: int) -> dict[str, Any]:
        return {"object": "response.input_tokens", "input_tokens": count}

    def render_error(self, error: ProxycastError) -> tuple[int, bytes]:
        return error.status, json.dumps(error_body(error)).encode()


DIALECT = ResponsesDialect()
