"""The internal model -> Gemini's ``generateContent`` API (requests), and its answers back.

The mapping choices are in ``docs/mappings.md`` ("To Gemini upstreams").
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import secrets
from typing import Any
from urllib.parse import quote

import attrs

from proxycast.errors import (
    ErrorInfo,
    InvalidRequestError,
    UpstreamError,
    UpstreamUnavailableError,
    upstream_error,
)
from proxycast.formats import internal, sse
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.gemini.errors import error_info
from proxycast.formats.gemini.schema import sanitize
from proxycast.formats.json_spans import loads_event

log = logging.getLogger("proxycast")

SKIP_SIGNATURE = "skip_thought_signature_validator"
"""The value Google's thought-signature FAQ gives for function calls that have no signature (history
from another model, calls the client made itself): Gemini 3 then skips its validation."""
THINKING_BUDGETS = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": -1,
    "max": -1,
}
"""Gemini 2.5 ``thinkingBudget`` per effort (-1: dynamic, the model's most)."""
THINKING_LEVELS = {
    "none": "low",
    "minimal": "low",
    "low": "low",
    "medium": "high",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
"""Gemini 3 ``thinkingLevel`` per effort (Gemini 3 cannot turn thinking off: ``none`` is ``low``)."""
_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "OTHER",
        "IMAGE_SAFETY",
        "LANGUAGE",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_FAILED = {
    "MALFORMED_FUNCTION_CALL": "the model wrote a function call that is not valid",
    "UNEXPECTED_TOOL_CALL": "the model called a tool that was not declared",
    "TOO_MANY_TOOL_CALLS": "the model called too many tools in a row",
    "MISSING_THOUGHT_SIGNATURE": "a thought signature was missing from the request",
}
"""Finish reasons that leave no usable answer: a 502, never a clean empty stop."""
MEDIA_RESOLUTIONS = {"low": "MEDIA_RESOLUTION_LOW", "high": "MEDIA_RESOLUTION_HIGH"}
SERVICE_TIERS = frozenset({"auto", "default"})


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def generation(model: str) -> int:
    """The Gemini generation a model name says (``gemini-3-pro`` -> 3), 0 if it says none."""
    found = re.match(r"(?:models/)?gemini-(\d+)", model)
    return int(found.group(1)) if found else 0


def _is_file_uri(url: str) -> bool:
    return url.startswith("gs://") or url.startswith(
        "https://generativelanguage.googleapis.com/v1beta/files/"
    )


def _part(part: internal.Part, where: str) -> dict[str, Any] | None:
    if isinstance(part, internal.Text):
        return {"text": part.text} if part.text else None
    if isinstance(part, internal.Audio):
        return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
    if isinstance(part, (internal.Image, internal.Document)):
        if part.data is not None:
            return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
        url = part.url or ""
        if _is_file_uri(url) or url.startswith("https://"):
            # Gemini fetches public and signed https URLs itself (file-input-methods)
            mime = part.media_type or mimetypes.guess_type(url.split("?")[0])[0] or "image/jpeg"
            return {"fileData": {"mimeType": mime, "fileUri": url}}
        raise InvalidRequestError(
            f"{where}: Gemini models cannot read {url!r}; send an https URL, a base64 data URL "
            "(data:image/png;base64,...) or a gs:// URI.",
        )
    if isinstance(part, internal.ToolCall):
        out: dict[str, Any] = {"functionCall": {"name": part.name, "args": part.arguments}}
        if part.signature:
            out["thoughtSignature"] = part.signature
        return out
    if isinstance(part, internal.ToolResult):
        if not part.name:
            raise InvalidRequestError(
                f"{where}: the tool result for {part.call_id!r} answers no tool call of an earlier "
                "assistant message; Gemini needs the called function's name."
            )
        text = internal.joined(p.text for p in part.content if isinstance(p, internal.Text))
        try:
            response = json.loads(text)
        except ValueError:
            response = None
        if not isinstance(response, dict):
            response = {"content": text}
        if part.is_error:
            response = {"error": response}
        out = {"functionResponse": {"name": part.name, "response": response}}
        media = [_part(p, where) for p in part.content if not isinstance(p, internal.Text)]
        if any(media):
            out["functionResponse"]["parts"] = [m for m in media if m]
        return out
    return None  # reasoning: Gemini's thoughts are not sent back


def _model_parts(message: internal.Message, where: str) -> list[dict[str, Any]]:
    """A model turn's parts. A Gemini signature goes back on the part it came with: a signed text
    part's on that part; a signed reasoning part's on the text part right after it (the reasoning
    that led to that text, as clients that keep it in a thinking block give it back), else on the
    part before it, else on an empty text part of its own."""
    parts: list[dict[str, Any]] = []
    pending: str | None = None  # a signature for the text part that comes next
    for part in message.parts:
        if isinstance(part, internal.Reasoning):
            if pending is not None:
                parts.append({"text": "", "thoughtSignature": pending})
                pending = None
            if part.source == "gemini" and part.signature:
                pending = part.signature
            continue  # Gemini's thoughts are not sent back, nor other providers' signatures
        converted = _part(part, where)
        if isinstance(part, internal.Text) and part.signature and part.source == "gemini":
            converted = {"text": part.text, "thoughtSignature": part.signature}
        if converted is None:
            continue
        if pending is not None:
            if "text" in converted and "thoughtSignature" not in converted:
                converted["thoughtSignature"] = pending
            elif parts and "text" in parts[-1] and "thoughtSignature" not in parts[-1]:
                parts[-1]["thoughtSignature"] = pending
            else:
                parts.append({"text": "", "thoughtSignature": pending})
            pending = None
        parts.append(converted)
    if pending is not None:
        if parts and "text" in parts[-1] and "thoughtSignature" not in parts[-1]:
            parts[-1]["thoughtSignature"] = pending
        else:
            parts.append({"text": "", "thoughtSignature": pending})
    return parts


def _skip_validation(contents: list[dict[str, Any]]) -> None:
    """Gemini 3 validates the current turn (after the last user content that is not only function
    responses): the first function call of each model step there must carry a signature. A step
    without one (history from another model) gets the documented bypass value."""
    start = 0
    for index, content in enumerate(contents):
        if content["role"] == "user" and any("functionResponse" not in p for p in content["parts"]):
            start = index
    for content in contents[start:]:
        if content["role"] != "model":
            continue
        calls = [p for p in content["parts"] if "functionCall" in p]
        if calls and not calls[0].get("thoughtSignature"):
            calls[0]["thoughtSignature"] = SKIP_SIGNATURE


def _contents(conversation: internal.Conversation, model: str) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(conversation.messages):
        role = "model" if message.role == "assistant" else "user"
        if role == "model":
            parts = _model_parts(message, f"messages[{i}]")
        else:
            parts = [p for p in (_part(p, f"messages[{i}]") for p in message.parts) if p]
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    for index, content in enumerate(contents):
        # function responses first in a user turn, and one for every call of the model turn before
        if content["role"] != "user":
            continue
        content["parts"].sort(key=lambda p: "functionResponse" not in p)
        if index == 0 or contents[index - 1]["role"] != "model":
            continue
        calls = [
            p["functionCall"]["name"] for p in contents[index - 1]["parts"] if "functionCall" in p
        ]
        answered = sum("functionResponse" in p for p in content["parts"])
        for name in calls[answered:]:
            missing = {"functionResponse": {"name": name, "response": {"error": "no result"}}}
            content["parts"].insert(answered, missing)
            answered += 1
    if generation(model) >= 3:
        _skip_validation(contents)
    else:
        # multimodal function responses are Gemini 3's: earlier models get the media after them
        for content in contents:
            extra = [
                media
                for p in content["parts"]
                if "functionResponse" in p
                for media in p["functionResponse"].pop("parts", ())
            ]
            content["parts"] += extra
    return contents


def _tool_config(choice: internal.ToolChoice | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, internal.NamedTool):
        config: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [choice.name]}
    else:
        config = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}
    return {"functionCallingConfig": config}


def _declaration(tool: internal.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    parameters = sanitize(tool.parameters)
    if parameters.get("properties"):
        out["parameters"] = parameters  # a tool without arguments declares none
    return out


def _refuse_unsupported(params: internal.Params) -> None:
    if params.logprobs:
        raise InvalidRequestError(
            "logprobs is not supported for Gemini models by this gateway; leave it out or set it "
            "to false.",
            param="logprobs",
        )
    if params.logit_bias:
        raise InvalidRequestError(
            "logit_bias is not supported by Gemini models; leave it out.", param="logit_bias"
        )
    if params.service_tier is not None and params.service_tier not in SERVICE_TIERS:
        raise InvalidRequestError(
            f"service_tier {params.service_tier!r} has no Gemini equivalent (auto and default "
            "are accepted, and change nothing).",
            param="service_tier",
        )


def searches(conversation: internal.Conversation) -> bool:
    """Whether the request carries the ``googleSearch`` tool: for a demanded search always (Gemini
    judges it), for one offered as a built-in tool only without function tools. Gemini refuses
    Google Search beside function declarations unless the request asks for the server-side tool
    invocations in the answer, which proxycast does not carry back; Codex, which offers the search,
    always has function tools, so there the search is left out and the client told so."""
    search = conversation.params.web_search
    return search is not None and (search.tool is None or not conversation.tools)


def path(model: str, method: str) -> str:
    """The URL path of a model's method (``generateContent``, ``countTokens``...)."""
    return f"/v1beta/models/{quote(model, safe='')}:{method}"


def request_from_internal(conversation: internal.Conversation, model: str) -> UpstreamRequest:
    """The ``generateContent`` (or streamed) request for a conversation; the model goes in the URL.

    Raises:
        InvalidRequestError: an image URL Gemini cannot read, a tool result without its call,
            or ``n`` > 1 on a stream.
    """
    params = conversation.params
    _refuse_unsupported(params)
    if conversation.stream and params.n is not None and params.n > 1:
        raise InvalidRequestError(
            "n > 1 is not supported with stream for Gemini models; stream with n = 1, or do not "
            "stream.",
            param="n",
        )
    body: dict[str, Any] = {"contents": _contents(conversation, model)}
    system = [_part(p, "system") for p in conversation.system]
    system_parts = [p for p in system if p is not None]
    if system_parts:
        body["systemInstruction"] = {"parts": system_parts}
    if searches(conversation):
        body["tools"] = [{"googleSearch": {}}]
    if conversation.tools:
        declarations = [_declaration(t) for t in conversation.tools]
        body["tools"] = [*body.get("tools", []), {"functionDeclarations": declarations}]
        tool_config = _tool_config(conversation.tool_choice)
        if tool_config is not None:
            body["toolConfig"] = tool_config
    config: dict[str, Any] = {}
    for name, value in (
        ("maxOutputTokens", params.max_tokens),
        ("temperature", params.temperature),
        ("topP", params.top_p),
        ("candidateCount", params.n),
        ("presencePenalty", params.presence_penalty),
        ("frequencyPenalty", params.frequency_penalty),
        ("seed", params.seed),
    ):
        if value is not None:
            config[name] = value
    if params.stop:
        config["stopSequences"] = list(params.stop)
    response_format = params.response_format or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseSchema"] = sanitize(schema)
    if params.reasoning_effort is not None and params.reasoning_effort not in THINKING_BUDGETS:
        raise InvalidRequestError(
            f"reasoning_effort {params.reasoning_effort!r} is not one of "
            f"{', '.join(THINKING_BUDGETS)}.",
            param="reasoning_effort",
        )
    if params.reasoning_effort is not None:
        effort = params.reasoning_effort
        if generation(model) >= 3:
            config["thinkingConfig"] = {
                "thinkingLevel": THINKING_LEVELS[effort],
                "includeThoughts": True,
            }
        else:
            config["thinkingConfig"] = {
                "thinkingBudget": THINKING_BUDGETS[effort],
                "includeThoughts": True,
            }
    details = {
        p.detail
        for m in conversation.messages
        for p in m.parts
        if isinstance(p, internal.Image) and p.detail in MEDIA_RESOLUTIONS
    }
    if details:
        config["mediaResolution"] = MEDIA_RESOLUTIONS["high" if "high" in details else "low"]
    if config:
        body["generationConfig"] = config
    method = "streamGenerateContent?alt=sse" if conversation.stream else "generateContent"
    return UpstreamRequest(path=path(model, method), body=body, stream=conversation.stream)


def usage_to_internal(usage: dict[str, Any] | None) -> internal.Usage:
    """Prompt = prompt + tool-use prompt tokens; completion = candidates + thoughts (docs/mappings.md,
    "To Gemini upstreams")."""
    usage = usage or {}
    prompt = (usage.get("promptTokenCount") or 0) + (usage.get("toolUsePromptTokenCount") or 0)
    cached = usage.get("cachedContentTokenCount") or 0
    thoughts = usage.get("thoughtsTokenCount") or 0
    return internal.Usage(
        input=prompt - cached,
        output=(usage.get("candidatesTokenCount") or 0) + thoughts,
        cache_read=cached,
        reasoning=thoughts,
    )


def _failed(reason: str | None) -> UpstreamUnavailableError | None:
    if reason not in _FAILED:
        return None
    return UpstreamUnavailableError(f"Gemini stopped with {reason}: {_FAILED[reason]}.")


def _stop(reason: str | None, called: bool) -> internal.Stop:
    failed = _failed(reason)
    if failed is not None:
        raise failed
    if called:
        return "tool_use"  # Gemini says STOP after a function call
    if reason in (None, "STOP", "FINISH_REASON_UNSPECIFIED"):
        return "end"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    log.warning("unknown Gemini finishReason %r, reported as 'stop'", reason)
    return "end"


def text_part(
    parts: list[internal.Part], text: str, signature: str | None, after_text: bool
) -> None:
    """A (non-thought) text part read onto ``parts``: consecutive text parts read as one, as a
    stream of increments does; a signature signs the text part it came on (Gemini 3), or, on an
    empty part right after text (how its streams end), the text before it."""
    last = parts[-1] if parts else None
    if isinstance(last, internal.Text) and not (signature and last.signature):
        if signature:
            last = attrs.evolve(last, signature=signature, source="gemini")
        parts[-1] = attrs.evolve(last, text=last.text + text)
    elif text or (signature and after_text and last is None):
        parts.append(
            internal.Text(text, signature=signature, source="gemini" if signature else None)
        )
    elif isinstance(last, internal.Reasoning) and not last.signature and signature:
        # on an empty part after a thought: it signs that thought, as a stream accumulates it
        parts[-1] = internal.Reasoning(text=last.text, signature=signature, source="gemini")
    elif signature:  # a signature on an empty part of its own: signed reasoning of its own
        parts.append(internal.Reasoning(text="", signature=signature, source="gemini"))


def _parts(content: dict[str, Any] | None, after_text: bool = False) -> list[internal.Part]:
    """A candidate's parts (``after_text``: a stream's chunk that follows text)."""
    parts: list[internal.Part] = []
    for part in (content or {}).get("parts") or ():
        signature = part.get("thoughtSignature") or None
        if "functionCall" in part:
            call = part["functionCall"]
            parts.append(
                internal.ToolCall(
                    id=call.get("id") or new_call_id(),
                    name=call.get("name", ""),
                    arguments=call.get("args") or {},
                    signature=signature,
                )
            )
            continue
        if not part.get("thought"):
            if isinstance(part.get("text"), str) or signature:
                text_part(parts, part.get("text") or "", signature, after_text)
            continue
        last = parts[-1] if parts else None
        if part.get("text"):
            # consecutive thought parts read as one, as a stream of increments does
            if isinstance(last, internal.Reasoning) and not last.signature:
                parts[-1] = internal.Reasoning(text=last.text + part["text"])
            else:
                parts.append(internal.Reasoning(text=part["text"]))
        if signature:  # a signature on a thought part signs the thought (before it)
            last = parts[-1] if parts else None
            if isinstance(last, internal.Reasoning) and not last.signature:
                parts[-1] = internal.Reasoning(text=last.text, signature=signature, source="gemini")
            else:
                parts.append(internal.Reasoning(text="", signature=signature, source="gemini"))
    return parts


def grounding_search(grounding: dict[str, Any], ident: str) -> list[internal.WebSearchCall]:
    """Google Search grounding (``groundingMetadata``) as the search it ran: its queries and the
    web pages of its ``groundingChunks``; nothing when it searched nothing."""
    queries = [q for q in grounding.get("webSearchQueries") or () if isinstance(q, str)]
    chunks = grounding.get("groundingChunks") or ()
    webs = [c.get("web") for c in chunks if isinstance(c, dict)]
    urls = [w["uri"] for w in webs if isinstance(w, dict) and isinstance(w.get("uri"), str)]
    if not queries and not urls:
        return []
    return [internal.WebSearchCall(id=f"gs_{ident}", queries=tuple(queries), sources=tuple(urls))]


def grounding_citations(grounding: dict[str, Any], text: str) -> tuple[internal.Citation, ...]:
    """``groundingSupports`` as citations of the spans of ``text`` they support. Their segments
    count bytes within a part, so a segment is placed by finding its text; one not found in
    ``text`` is left out."""
    chunks = grounding.get("groundingChunks") or []
    out: list[internal.Citation] = []
    for support in grounding.get("groundingSupports") or ():
        segment = support.get("segment") if isinstance(support, dict) else None
        cited = segment.get("text") if isinstance(segment, dict) else None
        if not isinstance(cited, str) or not cited or cited not in text:
            continue
        start = text.find(cited)
        for i in support.get("groundingChunkIndices") or ():
            web = chunks[i].get("web") if isinstance(i, int) and 0 <= i < len(chunks) else None
            if isinstance(web, dict) and isinstance(web.get("uri"), str):
                out.append(
                    internal.Citation(
                        url=web["uri"], title=web.get("title"), start=start, end=start + len(cited)
                    )
                )
    return tuple(out)


def response_to_internal(body: dict[str, Any]) -> list[internal.Reply]:
    """A ``GenerateContentResponse`` as one reply per candidate (a blocked prompt: one empty reply
    stopped by the content filter)."""
    ident = body.get("responseId") or secrets.token_hex(12)
    model = body.get("modelVersion", "")
    usage = usage_to_internal(body.get("usageMetadata"))
    candidates = body.get("candidates") or []
    if not candidates:
        return [internal.Reply(id=ident, model=model, parts=(), stop="content_filter", usage=usage)]
    replies = []
    for candidate in candidates:
        parts = _parts(candidate.get("content"))
        grounding = candidate.get("groundingMetadata")
        if isinstance(grounding, dict):
            last = parts[-1] if parts and isinstance(parts[-1], internal.Text) else None
            if last is not None:
                cited = grounding_citations(grounding, last.text)
                parts[-1] = attrs.evolve(last, citations=(*last.citations, *cited))
            parts.extend(grounding_search(grounding, ident))
        called = any(isinstance(p, internal.ToolCall) for p in parts)
        replies.append(
            internal.Reply(
                id=ident,
                model=model,
                parts=tuple(parts),
                stop=_stop(candidate.get("finishReason"), called),
                usage=usage,
            )
        )
    return replies


def stream_error(body: Any) -> UpstreamError:
    """An ``{"error": …}`` chunk inside a 200 stream, as the error its status implies."""
    info = error_info(body) or ErrorInfo(message="Gemini reported an error mid-stream.")
    return upstream_error("gemini", info, info.status or 500)


class StreamDecoder(sse.EventDecoder):
    """``streamGenerateContent?alt=sse`` chunks -> stream events (docs/mappings.md, "To Gemini upstreams").

    Each chunk is a whole response: text and thoughts are increments, each function call comes whole
    (one tool-call start and one argument delta, indexed across chunks), ``usageMetadata`` is
    cumulative. There is no end marker: the stream finishes at :meth:`end` if a finish reason came.
    """

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._tools = 0
        self._reason: str | None = None
        self._usage = internal.Usage()
        self._blocked = False
        self._ident = ""
        self._grounding: dict[str, Any] | None = None
        self._run: list[str] = []  # the text since the last part of another kind
        self._signed = False  # whether that text part has its signature
        self.finished = False

    def event(self, event: sse.Event) -> list[internal.StreamEvent]:
        events = self._event(event)
        for e in events:
            if isinstance(e, internal.TextDelta):
                self._run.append(e.text)
                self._signed = self._signed or e.signature is not None
            elif not isinstance(e, internal.Start):
                self._run.clear()
                self._signed = False
        return events

    def _event(self, event: sse.Event) -> list[internal.StreamEvent]:
        try:
            data = loads_event(event.data)
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        if "error" in data:
            self.finished = True
            return [internal.Failure(stream_error(data))]
        out: list[internal.StreamEvent] = []
        if not self._started:
            self._started = True
            ident = data.get("responseId") or secrets.token_hex(12)
            self._ident = ident
            out.append(internal.Start(id=ident, model=data.get("modelVersion", "")))
        if "usageMetadata" in data:
            self._usage = usage_to_internal(data["usageMetadata"])
        candidates = data.get("candidates") or []
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            self._blocked = True
        for candidate in candidates[:1]:
            for part in _parts(candidate.get("content"), bool(self._run) and not self._signed):
                if isinstance(part, internal.Text):
                    out.append(
                        internal.TextDelta(part.text, signature=part.signature, source=part.source)
                    )
                elif isinstance(part, internal.Reasoning):
                    out.append(
                        internal.ReasoningDelta(
                            text=part.text, signature=part.signature, source=part.source
                        )
                    )
                elif isinstance(part, internal.ToolCall):
                    index = self._tools
                    self._tools += 1
                    out.append(
                        internal.ToolCallStart(
                            index=index, id=part.id, name=part.name, signature=part.signature
                        )
                    )
                    out.append(
                        internal.ToolArgsDelta(index=index, fragment=json.dumps(part.arguments))
                    )
            if isinstance(candidate.get("groundingMetadata"), dict):
                self._grounding = candidate["groundingMetadata"]  # the last one is complete
            if candidate.get("finishReason"):
                self._reason = candidate["finishReason"]
        return out

    def _grounded(self) -> list[internal.StreamEvent]:
        """The grounding's citations of the text just streamed, then its search."""
        if self._grounding is None:
            return []
        cited = grounding_citations(self._grounding, "".join(self._run)) if self._run else ()
        return [*cited, *grounding_search(self._grounding, self._ident)]

    def end(self) -> list[internal.StreamEvent]:
        """The upstream closed the stream: it finished if a finish reason (or a block) came."""
        if self.finished or not self._started or (self._reason is None and not self._blocked):
            return []
        self.finished = True
        failed = _failed(self._reason)
        if failed is not None:
            return [internal.Failure(failed)]
        stop = "content_filter" if self._blocked else _stop(self._reason, self._tools > 0)
        return [*self._grounded(), internal.Finish(stop=stop, usage=self._usage)]
