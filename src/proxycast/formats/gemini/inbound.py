"""Gemini API clients (the Gemini CLI, the google-genai SDKs): ``generateContent``,
``streamGenerateContent`` (SSE with ``?alt=sse``, else Google's streamed JSON array) and
``countTokens``, their requests read into the internal model and the answers written back
(docs/mappings.md, "Gemini API clients").

What only another upstream understands travels in the fields a Gemini client keeps and sends back:
a thinking block's text and signature (Claude's) ride in the ``thoughtSignature`` of the part after
it (or of the thought part, when the client asked for thoughts), packed so that a client, which
handles the signature as opaque base64 bytes, sends it back unchanged; a function call's id rides in
``functionCall.id``, which clients return in ``functionResponse.id``.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import TYPE_CHECKING, Any, Literal

import attrs

from proxycast.errors import InvalidRequestError, ProxycastError
from proxycast.formats import internal
from proxycast.formats.contracts import (
    Headers,
    InboundRequest,
    InboundRoute,
    UpstreamRequest,
    bearer_or_api_key,
)
from proxycast.formats.gemini.errors import error_body
from proxycast.formats.gemini.outbound import (
    THINKING_BUDGETS,
    path,
    text_part,
    usage_to_internal,
)
from proxycast.formats.gemini.passthrough import GeminiPassthrough, frame
from proxycast.formats.json_spans import dumps_text
from proxycast.formats.passthrough import read_forwarded

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from proxycast.config import ProviderConfig

PREFIXES = ("/v1beta", "/v1")
"""Google's SDKs call ``v1beta`` by default, ``v1`` when asked to."""

_CARRIER = b"\x00proxycast:reasoning:"
"""Starts the bytes of a ``thoughtSignature`` that carries another upstream's reasoning."""

_STOPS = {
    "end": "STOP",
    "stop_sequence": "STOP",
    "tool_use": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
}
_MODES = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}
_LEVELS = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high"}
_SCHEMA_KEYS = frozenset(
    {
        "description",
        "enum",
        "format",
        "items",
        "properties",
        "required",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "title",
        "default",
        "anyOf",
        "minProperties",
        "maxProperties",
    }
)


@attrs.frozen(kw_only=True)
class Request:
    """A Gemini API request: its body (a ``countTokens`` request's ``generateContentRequest``
    unwrapped), and what the client asked of the answer's shape."""

    body: dict[str, Any]
    sse: bool = False
    """``?alt=sse``: server-sent events; else a stream is Google's JSON array."""
    thoughts: bool = False
    """``thinkingConfig.includeThoughts``: thought parts in the answer."""


# Reading a request --------------------------------------------------------------------------------


def _problem(where: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid value at '{where}': {what}.", param=where)


def _expect(value: Any, kind: type, where: str, what: str) -> None:
    if not isinstance(value, kind):
        raise _problem(where, f"expected {what}")


_NUMBERS = ("temperature", "topP", "presencePenalty", "frequencyPenalty")
_INTEGERS = ("topK", "maxOutputTokens", "candidateCount", "seed")


def validate(body: dict[str, Any], counting: bool) -> None:
    """Refuse what no upstream could accept: a known field of the wrong type (a 400 naming it, in
    Google's shape); unknown fields and values newer than this gateway are the upstream's to judge."""
    contents = body.get("contents")
    if contents is None and not counting:
        raise _problem("contents", "a list of contents is required")
    if contents is not None:
        _expect(contents, list, "contents", "a list of contents")
        for i, content in enumerate(contents):
            _expect(content, dict, f"contents[{i}]", "a content object")
            parts = content.get("parts")
            _expect(parts, list, f"contents[{i}].parts", "a list of parts")
            for j, part in enumerate(parts):
                where = f"contents[{i}].parts[{j}]"
                _expect(part, dict, where, "a part object")
                for name in ("functionCall", "functionResponse", "inlineData", "fileData"):
                    if name in part:
                        _expect(part[name], dict, f"{where}.{name}", "an object")
                if "args" in part.get("functionCall", {}):
                    _expect(
                        part["functionCall"]["args"],
                        dict,
                        f"{where}.functionCall.args",
                        "an object",
                    )
                extra = part.get("functionResponse", {}).get("parts")
                if extra is not None:
                    _expect(extra, list, f"{where}.functionResponse.parts", "a list of parts")
            role = content.get("role")
            if role is not None and role not in ("user", "model", "function"):
                raise _problem(f"contents[{i}].role", "expected 'user' or 'model'")
    system = body.get("systemInstruction")
    if system is not None:
        _expect(system, dict, "systemInstruction", "a content object")
        _expect(system.get("parts", []), list, "systemInstruction.parts", "a list of parts")
    tools = body.get("tools")
    if tools is not None:
        _expect(tools, list, "tools", "a list of tools")
        for i, tool in enumerate(tools):
            _expect(tool, dict, f"tools[{i}]", "a tool object")
            declarations = tool.get("functionDeclarations", [])
            _expect(declarations, list, f"tools[{i}].functionDeclarations", "a list")
            for j, declaration in enumerate(declarations):
                where = f"tools[{i}].functionDeclarations[{j}]"
                _expect(declaration, dict, where, "a function declaration")
                _expect(declaration.get("name"), str, f"{where}.name", "a name")
    config = body.get("generationConfig")
    if config is not None:
        _expect(config, dict, "generationConfig", "an object")
        for name in _NUMBERS:
            if name in config and (
                not isinstance(config[name], (int, float)) or isinstance(config[name], bool)
            ):
                raise _problem(f"generationConfig.{name}", "expected a number")
        for name in _INTEGERS:
            if name in config and (
                not isinstance(config[name], int) or isinstance(config[name], bool)
            ):
                raise _problem(f"generationConfig.{name}", "expected an integer")
        if "thinkingConfig" in config:
            _expect(config["thinkingConfig"], dict, "generationConfig.thinkingConfig", "an object")
        stops = config.get("stopSequences")
        if stops is not None and (
            not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
        ):
            raise _problem("generationConfig.stopSequences", "expected a list of strings")
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        _expect(tool_config, dict, "toolConfig", "an object")
        calling = tool_config.get("functionCallingConfig")
        if calling is not None:
            _expect(calling, dict, "toolConfig.functionCallingConfig", "an object")
            names = calling.get("allowedFunctionNames")
            if names is not None and (
                not isinstance(names, list) or not all(isinstance(n, str) for n in names)
            ):
                raise _problem(
                    "toolConfig.functionCallingConfig.allowedFunctionNames",
                    "expected a list of names",
                )


_OPAQUE = frozenset({"args", "response", "parametersJsonSchema", "responseJsonSchema"})
"""Fields whose values are the client's own JSON (a ``Struct``), never renamed."""


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def camel(value: Any) -> Any:
    """The request with every field name in lowerCamelCase: Google's JSON parsing accepts a field's
    proto name (``thinking_budget``) as well, and Google's SDKs send some that way."""
    if isinstance(value, list):
        return [camel(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, inner in value.items():
        name = _camel_key(key) if "_" in key else key
        if name in _OPAQUE:
            out[name] = inner
        elif name == "properties" and isinstance(inner, dict):  # a schema's own property names
            out[name] = {prop: camel(sub) for prop, sub in inner.items()}
        else:
            out[name] = camel(inner)
    return out


_CONTENT_KEYS = ("functionCall", "functionResponse", "inlineData", "fileData")
"""A part with one of these is that content (a signature on it is its own), not a signed text."""


def _unpack(signature: str) -> internal.Reasoning | None:
    """The reasoning a packed ``thoughtSignature`` carries (:func:`pack`); None for another
    signature (Gemini's own)."""
    # Google's SDKs hold the field as bytes, and may send it back in base64's URL-safe alphabet
    standard = signature.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_CARRIER):
        return None
    try:
        packed = json.loads(raw[len(_CARRIER) :])
    except ValueError:
        return None
    if not isinstance(packed, dict):
        return None
    return internal.Reasoning(
        text=str(packed.get("text", "")),
        signature=packed.get("signature"),
        redacted=bool(packed.get("redacted")),
        source=packed.get("source"),
    )


def pack(part: internal.Reasoning) -> str:
    """A reasoning part as a ``thoughtSignature`` a client sends back unchanged (base64, as the
    field is bytes to Google's SDKs)."""
    packed: dict[str, Any] = {"text": part.text, "signature": part.signature}
    if part.redacted:
        packed["redacted"] = True
    if part.source:
        packed["source"] = part.source
    raw = _CARRIER + json.dumps(packed, ensure_ascii=False).encode()
    return base64.b64encode(raw).decode()


def _media(blob: dict[str, Any], where: str) -> internal.Part:
    mime = blob.get("mimeType")
    if not isinstance(mime, str) or not mime:
        raise _problem(f"{where}.mimeType", "a MIME type is required")
    data, uri = blob.get("data"), blob.get("fileUri")
    if mime.startswith("image/"):
        return internal.Image(media_type=mime, data=data, url=uri)
    if mime.startswith("audio/") and isinstance(data, str):
        return internal.Audio(media_type=mime, data=data)
    return internal.Document(media_type=mime, data=data, url=uri)


def _response_text(response: Any) -> tuple[str, bool]:
    """A ``functionResponse.response`` as a tool result's text, and whether it reports an error
    (Google's convention: ``{"error": ...}`` alone)."""
    if isinstance(response, dict) and set(response) == {"error"}:
        inner = response["error"]
        return (inner if isinstance(inner, str) else json.dumps(inner, ensure_ascii=False)), True
    if isinstance(response, dict) and set(response) in ({"output"}, {"content"}):
        inner = next(iter(response.values()))
        if isinstance(inner, str):
            return inner, False
    return json.dumps(response, ensure_ascii=False), False


class _Calls:
    """Function call ids across the conversation: a call without an id gets one, and a response
    without one answers the oldest unanswered call of its name."""

    def __init__(self) -> None:
        self._pending: dict[str, list[str]] = {}
        self._count = 0

    def call(self, name: str, ident: Any) -> str:
        if isinstance(ident, str) and ident:
            given = ident
        else:
            self._count += 1
            given = f"call_gemini_{self._count}"
        self._pending.setdefault(name, []).append(given)
        return given

    def response(self, name: str, ident: Any) -> str:
        waiting = self._pending.get(name, [])
        if isinstance(ident, str) and ident:
            if ident in waiting:
                waiting.remove(ident)
            return ident
        if waiting:
            return waiting.pop(0)
        self._count += 1
        return f"call_gemini_{self._count}"


def _parts(
    parts: list[dict[str, Any]], model: bool, calls: _Calls, where: str
) -> list[internal.Part]:
    out: list[internal.Part] = []
    shown: list[internal.Part] = []  # the unsigned thought parts just before (a packed one's text)
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        signature = part.get("thoughtSignature")
        carried = _unpack(signature) if isinstance(signature, str) and signature else None
        if carried is not None:  # reasoning of another upstream, before the part that carries it
            while shown and out and out[-1] is shown[-1]:  # its text, already shown as thoughts
                out.pop()
                shown.pop()
            out.append(carried)
            signature = None
        if part.get("thought") and isinstance(part.get("text"), str):
            if carried is None:  # a signature here is Gemini's own: only Gemini takes it back
                source = "gemini" if signature else None
                out.append(
                    internal.Reasoning(text=part["text"], signature=signature, source=source)
                )
                if signature is None:
                    shown.append(out[-1])
            continue
        shown.clear()
        signed_only = bool(signature) and not any(key in part for key in _CONTENT_KEYS)
        if model and (isinstance(part.get("text"), str) or signed_only):
            # a model turn's text parts read as one text, as Gemini's answers do (a streamed
            # answer kept chunk by chunk); Gemini's own signature signs the text part it is on
            text_part(out, part.get("text") or "", signature, after_text=False)
            continue
        if isinstance(part.get("text"), str):
            if part["text"]:
                out.append(internal.Text(part["text"]))
        elif isinstance(part.get("inlineData"), dict):
            out.append(_media(part["inlineData"], f"{at}.inlineData"))
        elif isinstance(part.get("fileData"), dict):
            out.append(_media(part["fileData"], f"{at}.fileData"))
        elif isinstance(part.get("functionCall"), dict):
            call = part["functionCall"]
            name = call.get("name")
            if not isinstance(name, str) or not name:
                raise _problem(f"{at}.functionCall.name", "a function name is required")
            args = call.get("args") or {}
            if not isinstance(args, dict):
                raise _problem(f"{at}.functionCall.args", "expected an object")
            out.append(
                internal.ToolCall(
                    id=calls.call(name, call.get("id")),
                    name=name,
                    arguments=args,
                    signature=signature if model else None,
                )
            )
            continue
        elif isinstance(part.get("functionResponse"), dict):
            response = part["functionResponse"]
            name = response.get("name")
            if not isinstance(name, str) or not name:
                raise _problem(f"{at}.functionResponse.name", "a function name is required")
            text, failed = _response_text(response.get("response", {}))
            content: list[internal.Part] = [internal.Text(text)]
            for k, extra in enumerate(response.get("parts") or ()):
                if isinstance(extra, dict) and isinstance(extra.get("inlineData"), dict):
                    content.append(_media(extra["inlineData"], f"{at}.functionResponse.parts[{k}]"))
            out.append(
                internal.ToolResult(
                    call_id=calls.response(name, response.get("id")),
                    content=tuple(content),
                    name=name,
                    is_error=failed,
                )
            )
            continue
        else:
            continue  # executable code and its results: nothing to carry
        if signature and model:  # Gemini's signature on a text or media part: it signs that part
            out.append(internal.Reasoning(text="", signature=signature, source="gemini"))
    return out


def json_schema(schema: Any) -> dict[str, Any]:
    """A Gemini ``Schema`` (OpenAPI's subset, upper-case types, ``nullable``) as JSON Schema."""
    if not isinstance(schema, dict):
        return {}
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, str) and kind.upper() != "TYPE_UNSPECIFIED":
        out["type"] = kind.lower()
        if schema.get("nullable"):
            out["type"] = [kind.lower(), "null"]
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = json_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [json_schema(sub) for sub in value]
        elif key in ("minItems", "maxItems", "minLength", "maxLength") and isinstance(value, str):
            out[key] = int(value) if value.isdigit() else value  # int64 fields come as strings
        else:
            out[key] = value
    return out


def _tools(body: dict[str, Any]) -> tuple[tuple[internal.Tool, ...], internal.WebSearch | None]:
    tools: list[internal.Tool] = []
    search = None
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or ():
            parameters = declaration.get("parametersJsonSchema")
            if not isinstance(parameters, dict):
                parameters = json_schema(declaration.get("parameters")) or {
                    "type": "object",
                    "properties": {},
                }
            tools.append(
                internal.Tool(
                    name=declaration["name"],
                    description=declaration.get("description"),
                    parameters=parameters,
                )
            )
        if "googleSearch" in tool or "googleSearchRetrieval" in tool:
            search = internal.WebSearch(tool="google_search")
    return tuple(tools), search


def dropped_tools(body: dict[str, Any]) -> tuple[str, ...]:
    """Google's built-in tools that no other upstream has (left out of a converted request)."""
    built_in = ("codeExecution", "urlContext", "googleMaps", "computerUse", "fileSearch")
    return tuple(
        name
        for tool in body.get("tools") or ()
        if isinstance(tool, dict)
        for name in built_in
        if name in tool
    )


def _choice(
    body: dict[str, Any], tools: tuple[internal.Tool, ...]
) -> tuple[internal.ToolChoice | None, tuple[internal.Tool, ...]]:
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = config.get("mode")
    if not isinstance(mode, str) or mode not in _MODES:
        return None, tools
    choice: internal.ToolChoice = _MODES[mode]  # type: ignore[assignment]
    allowed = config.get("allowedFunctionNames")
    if mode in ("ANY", "VALIDATED") and isinstance(allowed, list) and allowed:
        tools = tuple(t for t in tools if t.name in allowed)  # only the allowed go upstream
        if len(allowed) == 1 and mode == "ANY":
            choice = internal.NamedTool(str(allowed[0]))
    return choice, tools


def _effort(thinking: dict[str, Any]) -> str | None:
    level = thinking.get("thinkingLevel")
    if isinstance(level, str) and level.lower() in _LEVELS:
        return _LEVELS[level.lower()]
    budget = thinking.get("thinkingBudget")
    if not isinstance(budget, int) or isinstance(budget, bool):
        return None
    if budget == -1:
        return "medium"  # dynamic: the model decides
    # the effort whose Gemini budget is the nearest at or above this one
    for effort, tokens in THINKING_BUDGETS.items():
        if tokens >= budget >= 0:
            return effort
    return "high"


def _params(body: dict[str, Any]) -> internal.Params:
    config = body.get("generationConfig") or {}
    response_format = None
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema")
        if not isinstance(schema, dict) and isinstance(config.get("responseSchema"), dict):
            schema = json_schema(config["responseSchema"])
        response_format = (
            {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
            if isinstance(schema, dict)
            else {"type": "json_object"}
        )
    thinking = config.get("thinkingConfig")
    return internal.Params(
        max_tokens=config.get("maxOutputTokens"),
        temperature=config.get("temperature"),
        top_p=config.get("topP"),
        stop=tuple(config.get("stopSequences") or ()),
        n=config.get("candidateCount"),
        seed=config.get("seed"),
        presence_penalty=config.get("presencePenalty"),
        frequency_penalty=config.get("frequencyPenalty"),
        response_format=response_format,
        reasoning_effort=_effort(thinking) if isinstance(thinking, dict) else None,
    )


def request_to_internal(request: Request, stream: bool) -> internal.Conversation:
    """The conversation a Gemini request holds (docs/mappings.md, "Gemini API clients")."""
    body = request.body
    system_parts = (body.get("systemInstruction") or {}).get("parts") or ()
    system = tuple(
        internal.Text(p["text"])
        for p in system_parts
        if isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"]
    )
    calls = _Calls()
    messages: list[internal.Message] = []
    for i, content in enumerate(body.get("contents") or ()):
        model = content.get("role") == "model"
        parts = _parts(content.get("parts") or [], model, calls, f"contents[{i}]")
        if not parts:
            continue
        role: Literal["user", "assistant"] = "assistant" if model else "user"
        if messages and messages[-1].role == role:  # Gemini allows turns of one role in a row
            joined = list(messages[-1].parts)
            first = parts[0]
            if model and isinstance(first, internal.Text) and not first.citations:
                text_part(joined, first.text, first.signature, after_text=False)
                parts = parts[1:]
            messages[-1] = internal.Message(role, (*joined, *parts))
        else:
            messages.append(internal.Message(role, tuple(parts)))
    tools, search = _tools(body)
    choice, tools = _choice(body, tools)
    params = _params(body)
    if search is not None:
        params = attrs.evolve(params, web_search=search)
    return internal.Conversation(
        system=system,
        messages=tuple(messages),
        tools=tools,
        tool_choice=choice if tools or choice == "none" else None,
        params=params,
        stream=stream,
        include_usage=True,
    )


# Writing an answer --------------------------------------------------------------------------------


def usage_from_internal(usage: internal.Usage) -> dict[str, int]:
    prompt = usage.input + usage.cache_read + usage.cache_write
    out = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": usage.output - usage.reasoning,
        "totalTokenCount": prompt + usage.output,
    }
    if usage.reasoning:
        out["thoughtsTokenCount"] = usage.reasoning
    if usage.cache_read:
        out["cachedContentTokenCount"] = usage.cache_read
    return out


def _call(part: internal.ToolCall) -> dict[str, Any]:
    """A call as Gemini's part, with the signature Gemini put on it (Gemini 3 checks it comes back)."""
    out: dict[str, Any] = {
        "functionCall": {"id": part.id, "name": part.name, "args": part.arguments}
    }
    if part.signature:
        out["thoughtSignature"] = part.signature
    return out


def candidate_parts(parts: tuple[internal.Part, ...], thoughts: bool) -> list[dict[str, Any]]:
    """A reply's parts as Gemini's: reasoning as thought parts (when the client asked for thoughts)
    whose signature carries it whole; otherwise carried by the next part's ``thoughtSignature``."""
    out: list[dict[str, Any]] = []
    pending: str | None = None
    for part in parts:
        if isinstance(part, internal.Reasoning):
            carried = pack(part) if part.signature else None
            if thoughts and part.text:
                out.append({"text": part.text, "thought": True})
            if carried and thoughts:  # as a stream gives it: the signature after the thought
                out.append({"text": "", "thought": True, "thoughtSignature": carried})
            elif carried:
                if (
                    pending is not None
                ):  # one signature a part: the earlier one on a part of its own
                    out.append({"text": "", "thoughtSignature": pending})
                pending = carried
            continue
        if isinstance(part, internal.Text):
            converted: dict[str, Any] = {"text": part.text}
            if part.signature and part.source == "gemini":  # Gemini's own, where Gemini puts it
                if pending is not None:
                    out.append({"text": "", "thoughtSignature": pending})
                    pending = None
                converted["thoughtSignature"] = part.signature
        elif isinstance(part, internal.ToolCall):
            converted = _call(part)
            if part.signature and pending is not None:  # one signature a part (as above)
                out.append({"text": "", "thoughtSignature": pending})
                pending = None
        else:
            continue  # a search the upstream ran: nothing of Gemini's shape says it
        if pending is not None:
            converted["thoughtSignature"] = pending
            pending = None
        out.append(converted)
    if pending is not None:
        out.append({"text": "", "thoughtSignature": pending})
    return out


def response_from_internal(
    replies: list[internal.Reply], model: str, thoughts: bool
) -> dict[str, Any]:
    candidates = [
        {
            "content": {"role": "model", "parts": candidate_parts(reply.parts, thoughts)},
            "finishReason": _STOPS[reply.stop],
            "index": index,
        }
        for index, reply in enumerate(replies)
    ]
    usage = replies[0].usage if replies else internal.Usage()
    return {
        "candidates": candidates,
        "usageMetadata": usage_from_internal(usage),
        "modelVersion": model,
        "responseId": replies[0].id if replies else secrets.token_hex(12),
    }


class StreamEncoder:
    """Stream events -> ``streamGenerateContent`` chunks: text and thoughts as they come, each
    function call whole (as Gemini sends it), the finish reason and usage in the last chunk; a
    failure as Google's error object, never a clean end."""

    def __init__(self, model: str, request: Request) -> None:
        self._model = model
        self._sse = request.sse
        self.content_type = "text/event-stream" if request.sse else "application/json"
        self._thoughts = request.thoughts
        self._id = secrets.token_hex(12)
        self._first = True
        self._call: tuple[internal.ToolCallStart, list[str]] | None = None
        self._reasoning: list[str] = []
        self._pending: str | None = None
        self.finished = False

    def _chunk(self, data: dict[str, Any]) -> bytes:
        out = frame(dumps_text(data).encode(), self._sse, self._first)
        self._first = False
        return out

    def _parts(self, parts: list[dict[str, Any]], **extra: Any) -> bytes:
        if self._pending is not None and parts and "thought" not in parts[0]:
            parts[0]["thoughtSignature"] = self._pending
            self._pending = None
        candidate = {"content": {"role": "model", "parts": parts}, "index": 0, **extra}
        return self._chunk(
            {"candidates": [candidate], "modelVersion": self._model, "responseId": self._id}
        )

    def _flush_call(self) -> bytes:
        if self._call is None:
            return b""
        start, fragments = self._call
        self._call = None
        try:
            args = json.loads("".join(fragments) or "{}")
        except ValueError:
            args = {}
        if not isinstance(args, dict):
            args = {"value": args}
        call = internal.ToolCall(
            id=start.id, name=start.name, arguments=args, signature=start.signature
        )
        out = b""
        if call.signature and self._pending is not None:  # one signature a part
            out = self._parts([{"text": "", "thoughtSignature": self._pending}])
            self._pending = None
        return out + self._parts([_call(call)])

    def encode(self, event: internal.StreamEvent) -> bytes:
        if isinstance(event, internal.Start):
            self._id = event.id or self._id
            return b""
        if isinstance(event, internal.ToolArgsDelta):
            if self._call is not None:
                self._call[1].append(event.fragment)
            return b""
        out = self._flush_call()
        if not isinstance(event, internal.ReasoningDelta):
            self._reasoning = []  # a part of another kind closes the reasoning in progress
        if isinstance(event, internal.TextDelta):
            part: dict[str, Any] = {"text": event.text}
            if event.signature and event.source == "gemini":  # Gemini's own, as Gemini sends it
                if self._pending is not None:
                    out += self._parts([{"text": "", "thoughtSignature": self._pending}])
                    self._pending = None
                part["thoughtSignature"] = event.signature
            elif not event.text:
                return out
            return out + self._parts([part])
        if isinstance(event, internal.ReasoningDelta):
            self._reasoning.append(event.text)
            if self._thoughts and event.text:
                out += self._parts([{"text": event.text, "thought": True}])
            if event.signature is not None:
                whole = internal.Reasoning(
                    text="".join(self._reasoning),
                    signature=event.signature,
                    redacted=event.redacted,
                    source=event.source,
                )
                self._reasoning = []
                if self._thoughts:
                    signed = {"text": "", "thought": True, "thoughtSignature": pack(whole)}
                    out += self._parts([signed])
                else:
                    if self._pending is not None:  # one signature a part (as above)
                        out += self._parts([{"text": "", "thoughtSignature": self._pending}])
                        self._pending = None
                    self._pending = pack(whole)
            return out
        if isinstance(event, internal.ToolCallStart):
            self._call = (event, [])
            return out
        if isinstance(event, internal.Finish):
            parts: list[dict[str, Any]] = []
            if self._pending is not None:  # reasoning that no part followed
                parts.append({"text": "", "thoughtSignature": self._pending})
                self._pending = None
            self.finished = True
            candidate = {
                "content": {"role": "model", "parts": parts},
                "finishReason": _STOPS[event.stop],
                "index": 0,
            }
            last = {  # the usage goes in the last chunk, beside the finish reason
                "candidates": [candidate],
                "usageMetadata": usage_from_internal(event.usage),
                "modelVersion": self._model,
                "responseId": self._id,
            }
            return out + self._chunk(last) + (b"" if self._sse else b"]")
        if isinstance(event, internal.Failure):
            return out + self.fail(event.error)
        return out  # citations and searches: nothing of Gemini's shape says them

    def fail(self, error: Exception) -> bytes:
        self.finished = True
        if not isinstance(error, ProxycastError):
            error = ProxycastError("Internal error in proxycast; see its log.")
        out = frame(json.dumps(error_body(error)).encode(), self._sse, self._first)
        self._first = False
        return out + (b"" if self._sse else b"]")


# The dialect --------------------------------------------------------------------------------------


def _routes() -> tuple[InboundRoute, ...]:
    routes: list[InboundRoute] = []
    for prefix in PREFIXES:
        models = f"{prefix}/models/{{model:path}}"  # a model name may hold '/' (org/model)
        routes += [
            InboundRoute(path=f"{models}:generateContent", operation="generate", stream=False),
            InboundRoute(path=f"{models}:streamGenerateContent", operation="generate", stream=True),
            InboundRoute(path=f"{models}:countTokens", operation="count_tokens"),
            InboundRoute(path=f"{models}:embedContent", operation="embed"),
            InboundRoute(path=f"{models}:batchEmbedContents", operation="embed"),
        ]
    # v1's models list is OpenAI's route (/v1/models): the listing answers in Gemini's shape there
    # when the request comes from Google's clients (formats/gemini/models.py)
    routes += [
        InboundRoute(path="/v1beta/models", operation="list_models", method="GET"),
        InboundRoute(path="/v1beta/models/{model:path}", operation="get_model", method="GET"),
    ]
    return tuple(routes)


_METHODS = {False: "generateContent", True: "streamGenerateContent?alt=sse"}


class GeminiDialect:
    """The Gemini API, as the Gemini CLI and Google's SDKs speak it."""

    name = "gemini"
    native_type = "gemini"
    routes = _routes()

    def owns(self, path: str) -> bool:
        return path.startswith("/v1beta/") or (path.startswith("/v1/models/") and ":" in path)

    def credential(self, headers: Headers, query: Mapping[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or query.get("key") or bearer_or_api_key(headers)

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
        model = params["model"].removeprefix("models/")
        body = camel(body)
        if operation == "count_tokens" and "generateContentRequest" in body:
            _expect(body["generateContentRequest"], dict, "generateContentRequest", "an object")
            body = body["generateContentRequest"]
        validate(body, counting=operation == "count_tokens")
        thinking = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
        parsed = Request(
            body=body,
            sse=query.get("alt") == "sse",
            thoughts=bool(thinking.get("includeThoughts")),
        )
        return InboundRequest(
            client_model=model,
            stream=bool(route.stream) and operation == "generate",
            operation=operation,
            parsed=parsed,
            text=text,
            spans=spans,
        )

    def request_to_internal(self, request: InboundRequest) -> internal.Conversation:
        return request_to_internal(request.parsed, request.stream)

    def forwards_to(self, provider: ProviderConfig, request: InboundRequest) -> bool:
        return provider.speaks == self.native_type

    def forward(self, request: InboundRequest, upstream_model: str) -> UpstreamRequest:
        if request.operation == "count_tokens":
            raw = request.text
            if "generateContentRequest" in request.spans:  # its model names the upstream's too
                body = json.loads(raw)
                body["generateContentRequest"]["model"] = f"models/{upstream_model}"
                raw = dumps_text(body)
            return UpstreamRequest(path=path(upstream_model, "countTokens"), raw=raw.encode())
        return UpstreamRequest(
            path=path(upstream_model, _METHODS[request.stream]),
            raw=request.text.encode(),
            stream=request.stream,
        )

    def forwarded_reply(
        self, data: bytes, client_model: str, provider: str
    ) -> tuple[bytes, internal.Usage]:
        data, answer = read_forwarded(data, client_model, provider)
        usage = answer.get("usageMetadata")
        return data, usage_to_internal(usage if isinstance(usage, dict) else None)

    def forwarded_stream(
        self, request: InboundRequest, provider: str, redact: Callable[[str], str]
    ) -> GeminiPassthrough:
        parsed: Request = request.parsed
        return GeminiPassthrough(request.client_model, provider, redact, sse=parsed.sse)

    def reply_from_internal(
        self,
        replies: list[internal.Reply],
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> dict[str, Any]:
        thoughts = request is not None and request.parsed.thoughts
        return response_from_internal(replies, client_model, thoughts)

    def stream_encoder(
        self,
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> StreamEncoder:
        parsed = request.parsed if request is not None else Request(body={}, sse=True)
        return StreamEncoder(client_model, parsed)

    def dropped_tools(
        self, request: InboundRequest, searches: Callable[[], bool]
    ) -> tuple[str, ...]:
        body = request.parsed.body
        dropped = list(dropped_tools(body))
        tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
        if (
            any("googleSearch" in t or "googleSearchRetrieval" in t for t in tools)
            and not searches()
        ):
            dropped.append("googleSearch")
        return tuple(dropped)

    def tokens_counted(self, count: int) -> dict[str, Any]:
        return {"totalTokens": count}

    def render_error(self, error: ProxycastError) -> tuple[int, bytes]:
        return error.status, json.dumps(error_body(error)).encode()


DIALECT = GeminiDialect()
