"""The internal model -> Bedrock's Converse API (``/model/{modelId}/converse``), and its answers back:
the JSON reply and ConverseStream's events (decoded from the event stream's frames).

The mapping choices are in ``docs/mappings.md`` ("To Bedrock upstreams").
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any
from urllib.parse import quote, unquote

from proxycast.errors import InvalidRequestError
from proxycast.formats import internal
from proxycast.formats.anthropic.outbound import (
    ADAPTIVE_EFFORTS,
    ADAPTIVE_ONLY,
    THINKING_BUDGETS,
    clean_tool_id,
)
from proxycast.formats.bedrock import errors
from proxycast.formats.bedrock.eventstream import Frame, FrameDecoder
from proxycast.formats.contracts import UpstreamRequest
from proxycast.formats.json_spans import loads_event

log = logging.getLogger("proxycast")

DEFAULT_MAX_TOKENS = 4096
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
_STOP: dict[str, internal.Stop] = {
    "end_turn": "end",
    "tool_use": "tool_use",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
EMPTY_RESULT = "(no output)"
"""The text of a tool result that has none: Converse refuses an empty text block, even there."""
_NAME_BAD = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")
_GEO = re.compile(r"^(?:us|eu|apac|global|jp|au|ca|us-gov)\.")


def model_path(model: str, action: str) -> str:
    """``/model/{modelId}/{action}``, the id percent-encoded as AWS's SDKs do (an ARN's ``:`` and
    ``/``, a version's ``:0``)."""
    return f"/model/{quote(model, safe='')}/{action}"


def path_model(path: str) -> str:
    """The model id of a :func:`model_path`."""
    return unquote(path.split("/")[2]) if path.count("/") >= 3 else ""


def is_claude(model: str) -> bool:
    """An Anthropic model on Bedrock, by id, inference profile (``us.anthropic.…``) or ARN."""
    return "anthropic." in model or "claude" in model


def base_model(model: str) -> str:
    """The foundation model of a cross-region inference profile id (``us.anthropic.x`` ->
    ``anthropic.x``): what CountTokens takes."""
    return _GEO.sub("", model)


def _cache_point(cache_control: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The ``cachePoint`` block that follows a block the client marked for caching."""
    if cache_control is None:
        return []
    point: dict[str, Any] = {"type": "default"}
    if cache_control.get("ttl") in ("5m", "1h"):
        point["ttl"] = cache_control["ttl"]
    return [{"cachePoint": point}]


def _image(part: internal.Image, where: str) -> dict[str, Any]:
    if part.data is None:
        if part.url and part.url.startswith("s3://"):
            media = part.media_type or _guess_image(part.url)
            return {
                "image": {
                    "format": _image_format(media, where),
                    "source": {"s3Location": {"uri": part.url}},
                }
            }
        raise InvalidRequestError(
            f"{where}: Bedrock takes images inline (base64 data) or from s3:// locations, "
            "not from http(s) URLs; send the image's data instead.",
            param=where,
        )
    return {
        "image": {"format": _image_format(part.media_type, where), "source": {"bytes": part.data}}
    }


def _guess_image(url: str) -> str:
    ending = url.rsplit(".", 1)[-1].lower()
    return f"image/{'jpeg' if ending == 'jpg' else ending}"


def _image_format(media: str | None, where: str) -> str:
    found = IMAGE_FORMATS.get(media or "")
    if found is None:
        raise InvalidRequestError(
            f"{where}: image type {media!r} is not accepted by Bedrock (png, jpeg, gif and webp are).",
            param=where,
        )
    return found


def document_name(filename: str | None, index: int) -> str:
    """A document's ``name``: Bedrock allows only letters, digits, single spaces, hyphens,
    parentheses and brackets (a file name's dot is refused)."""
    name = " ".join(_NAME_BAD.sub("-", filename or "").split())
    return name[:200] or f"document-{index}"


def _document(part: internal.Document, where: str, index: int) -> dict[str, Any]:
    media = part.media_type.split(";")[0].strip()
    if media.startswith("image/"):
        return _image(internal.Image(media_type=media, data=part.data, url=part.url), where)
    fmt = DOCUMENT_FORMATS.get(media)
    if fmt is None:
        raise InvalidRequestError(
            f"{where}: Bedrock reads {', '.join(sorted(set(DOCUMENT_FORMATS.values())))} "
            f"documents, not {media!r}.",
            param=where,
        )
    if part.data is not None:
        source: dict[str, Any] = {"bytes": part.data}
    elif part.url and part.url.startswith("s3://"):
        source = {"s3Location": {"uri": part.url}}
    else:
        raise InvalidRequestError(
            f"{where}: Bedrock takes documents inline (base64 data) or from s3:// locations.",
            param=where,
        )
    return {
        "document": {"format": fmt, "name": document_name(part.filename, index), "source": source}
    }


class _Blocks:
    """Content blocks of one request, numbering its documents (their names must differ)."""

    def __init__(self) -> None:
        self.documents = 0

    def blocks(self, part: internal.Part, where: str, thinking: bool) -> list[dict[str, Any]]:
        if isinstance(part, internal.Text):
            if not part.text.strip():  # Converse refuses a blank text block
                return []
            return [{"text": part.text}, *_cache_point(part.cache_control)]
        if isinstance(part, internal.Image):
            return [_image(part, where), *_cache_point(part.cache_control)]
        if isinstance(part, internal.Document):
            self.documents += 1
            return [_document(part, where, self.documents), *_cache_point(part.cache_control)]
        if isinstance(part, internal.Audio):
            raise InvalidRequestError(
                f"{where}: Bedrock's Converse API takes no audio input.", param=where
            )
        if isinstance(part, internal.ToolCall):
            arguments = part.arguments if isinstance(part.arguments, dict) else {}
            return [
                {
                    "toolUse": {
                        "toolUseId": clean_tool_id(part.id),
                        "name": part.name,
                        "input": arguments,
                    }
                }
            ]
        if isinstance(part, internal.ToolResult):
            content: list[dict[str, Any]] = []
            for inner in part.content:
                content += [b for b in self.blocks(inner, where, thinking) if "cachePoint" not in b]
            result: dict[str, Any] = {
                "toolUseId": clean_tool_id(part.call_id),
                "content": content or [{"text": EMPTY_RESULT}],
            }
            if part.is_error:
                result["status"] = "error"
            return [{"toolResult": result}]
        if isinstance(part, internal.WebSearchCall):
            return []
        # Reasoning: Claude takes back only the thinking it signed, and only with thinking on
        if not thinking or part.source is not None or not part.signature:
            return []
        if part.redacted:
            return [{"reasoningContent": {"redactedContent": part.signature}}]
        return [
            {
                "reasoningContent": {
                    "reasoningText": {"text": part.text, "signature": part.signature}
                }
            }
        ]


_ORDER = {"reasoningContent": 0, "toolResult": 0, "toolUse": 2}


def _messages(
    conversation: internal.Conversation, thinking: bool, blocks: _Blocks
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(conversation.messages):
        content = [b for p in message.parts for b in blocks.blocks(p, f"messages[{i}]", thinking)]
        if not [b for b in content if "cachePoint" not in b]:
            continue
        if messages and messages[-1]["role"] == message.role:
            messages[-1]["content"] += content
        else:
            messages.append({"role": message.role, "content": content})
    for entry in messages:
        # assistant: reasoning, text, tool use; user: tool results first. A cachePoint follows a
        # text, image or document only, ranked alike: the stable sort keeps it right after it
        entry["content"].sort(key=lambda b: _ORDER.get(next(iter(b)), 1))
    if messages and messages[-1]["role"] == "assistant":
        # a prefill: a final assistant text may not end in white space
        content = messages[-1]["content"]
        if "text" in content[-1]:
            content[-1]["text"] = content[-1]["text"].rstrip()
            if not content[-1]["text"]:
                content.pop()
        if not [b for b in content if "cachePoint" not in b]:
            messages.pop()
    return messages


def _loop_without_thinking(conversation: internal.Conversation) -> bool:
    """Whether the current tool loop's assistant turn uses tools without its signed thinking
    (Claude refuses that with thinking on; the client did not keep the thinking blocks)."""
    for message in reversed(conversation.messages):
        if message.role == "assistant":
            uses = any(isinstance(p, internal.ToolCall) for p in message.parts)
            signed = any(
                isinstance(p, internal.Reasoning) and p.signature and p.source is None
                for p in message.parts
            )
            return uses and not signed
        if not all(isinstance(p, internal.ToolResult) for p in message.parts):
            return False
    return False


def _thinking(conversation: internal.Conversation, model: str) -> dict[str, Any] | None:
    """Claude's ``thinking`` (in ``additionalModelRequestFields``) for a reasoning effort; other
    families have no common setting for it, and answer without."""
    effort = conversation.params.reasoning_effort
    if effort is None or effort == "none" or not is_claude(model):
        return None
    if effort not in THINKING_BUDGETS:
        raise InvalidRequestError(
            f"reasoning_effort {effort!r} is not one of none, {', '.join(THINKING_BUDGETS)}.",
            param="reasoning_effort",
        )
    if _loop_without_thinking(conversation):
        log.info("thinking dropped: the tool-using assistant turn came without its thinking blocks")
        return None
    if model.split("anthropic.", 1)[-1].startswith(ADAPTIVE_ONLY):
        return {"type": "adaptive"}
    return {"type": "enabled", "budget_tokens": THINKING_BUDGETS[effort]}


def _tool_choice(choice: internal.ToolChoice | None, thinking: bool) -> dict[str, Any] | None:
    if choice is None or choice in ("auto", "none") or thinking:
        return None  # Converse has no "none" (the tools stay declared); thinking allows only auto
    if choice == "required":
        return {"any": {}}
    assert isinstance(choice, internal.NamedTool)
    return {"tool": {"name": choice.name}}


def _tool_config(conversation: internal.Conversation, thinking: bool) -> dict[str, Any] | None:
    tools: list[dict[str, Any]] = []
    for tool in conversation.tools:
        spec: dict[str, Any] = {"name": tool.name}
        if tool.description:
            spec["description"] = tool.description
        spec["inputSchema"] = {"json": tool.parameters}
        if tool.strict is not None:
            spec["strict"] = tool.strict
        tools += [{"toolSpec": spec}, *_cache_point(tool.cache_control)]
    used = sorted(
        {p.name for m in conversation.messages for p in m.parts if isinstance(p, internal.ToolCall)}
    )
    if not tools and used:
        # Bedrock wants toolConfig whenever the messages hold tool blocks: declare what was used
        tools = [
            {"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}} for n in used
        ]
    elif conversation.tool_choice == "none" and not used:
        return None  # no call in the history: the tools can simply go unsent
    if not tools:
        return None
    config: dict[str, Any] = {"tools": tools}
    choice = _tool_choice(conversation.tool_choice, thinking)
    if choice is not None and conversation.tools:
        config["toolChoice"] = choice
    return config


def _refuse_unsupported(params: internal.Params) -> None:
    if params.n is not None and params.n > 1:
        raise InvalidRequestError(
            "n > 1 is not supported by Bedrock's Converse API; send n = 1.", param="n"
        )
    if params.logprobs:
        raise InvalidRequestError(
            "logprobs is not supported by Bedrock's Converse API.", param="logprobs"
        )
    if params.web_search is not None and params.web_search.tool is None:
        raise InvalidRequestError(
            "web search is not available through Bedrock's Converse API.",
            param="web_search_options",
        )


def body_from_internal(conversation: internal.Conversation, model: str) -> dict[str, Any]:
    """The Converse request body (the model is in the path)."""
    params = conversation.params
    _refuse_unsupported(params)
    thinking = _thinking(conversation, model)
    blocks = _Blocks()
    body: dict[str, Any] = {}
    system: list[dict[str, Any]] = []
    for part in conversation.system:
        if not isinstance(part, internal.Text):
            raise InvalidRequestError("System messages may hold only text for Bedrock models.")
        system += blocks.blocks(part, "system", False)
    if system:
        body["system"] = system
    body["messages"] = _messages(conversation, thinking is not None, blocks)
    inference: dict[str, Any] = {"maxTokens": params.max_tokens or DEFAULT_MAX_TOKENS}
    if thinking is not None and "budget_tokens" in thinking:
        inference["maxTokens"] = max(inference["maxTokens"], thinking["budget_tokens"] + 1024)
    if thinking is None:  # Claude refuses sampling settings with thinking on
        if params.temperature is not None:
            inference["temperature"] = (
                min(params.temperature, 1.0) if is_claude(model) else params.temperature
            )
        if params.top_p is not None:
            inference["topP"] = params.top_p
    stops = [s for s in params.stop if s.strip()]
    if stops:
        inference["stopSequences"] = stops
    body["inferenceConfig"] = inference
    tool_config = _tool_config(conversation, thinking is not None)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    if thinking is not None:
        body["additionalModelRequestFields"] = {"thinking": thinking}
        if thinking["type"] == "adaptive":
            body["outputConfig"] = {"effort": ADAPTIVE_EFFORTS[params.reasoning_effort or "high"]}
    response_format = params.response_format or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        structure = {"jsonSchema": {"schema": json.dumps(schema)}}
        text_format = {"type": "json_schema", "structure": structure}
        body["outputConfig"] = {**body.get("outputConfig", {}), "textFormat": text_format}
    return body


def request_from_internal(conversation: internal.Conversation, model: str) -> UpstreamRequest:
    """The Converse (or ConverseStream) request for ``model``.

    Raises:
        InvalidRequestError: what Converse cannot carry (``n`` > 1, an image by http URL, audio).
    """
    action = "converse-stream" if conversation.stream else "converse"
    return UpstreamRequest(
        path=model_path(model, action),
        body=body_from_internal(conversation, model),
        stream=conversation.stream,
    )


def stop_to_internal(reason: Any) -> internal.Stop:
    if reason in _STOP:
        return _STOP[reason]
    log.warning("unknown Bedrock stopReason %r, reported as 'stop'", reason)
    return "end"


def usage_to_internal(usage: Any) -> internal.Usage:
    usage = usage if isinstance(usage, dict) else {}
    return internal.Usage(
        input=internal.count(usage.get("inputTokens")),
        output=internal.count(usage.get("outputTokens")),
        cache_read=internal.count(usage.get("cacheReadInputTokens")),
        cache_write=internal.count(usage.get("cacheWriteInputTokens")),
    )


def reply_id() -> str:
    """Converse answers carry no id (the request id is a header): one of ours."""
    return f"msg_bdrk_{uuid.uuid4().hex[:24]}"


def _part(block: dict[str, Any]) -> internal.Part | None:
    if isinstance(block.get("text"), str):
        return internal.Text(block["text"]) if block["text"] else None
    tool = block.get("toolUse")
    if isinstance(tool, dict):
        arguments = tool.get("input")
        return internal.ToolCall(
            id=str(tool.get("toolUseId", "")),
            name=str(tool.get("name", "")),
            arguments=arguments if isinstance(arguments, dict) else {},
        )
    reasoning = block.get("reasoningContent")
    if isinstance(reasoning, dict):
        if isinstance(reasoning.get("redactedContent"), str):
            return internal.Reasoning(
                text="", signature=reasoning["redactedContent"], redacted=True
            )
        text = internal.section(reasoning, "reasoningText")
        return internal.Reasoning(
            text=str(text.get("text", "")), signature=text.get("signature") or None
        )
    return None  # citations, guard content...: nothing a client reads


def response_to_internal(body: dict[str, Any], request: UpstreamRequest) -> internal.Reply:
    """A Converse answer as a reply."""
    message = internal.section(internal.section(body, "output"), "message")
    parts: list[internal.Part] = []
    for block in message.get("content") or ():
        part = _part(block) if isinstance(block, dict) else None
        if part is None:
            continue
        before = parts[-1] if parts else None
        if isinstance(part, internal.Text) and isinstance(before, internal.Text):
            parts[-1] = internal.Text(before.text + part.text)  # adjacent texts read as one
        else:
            parts.append(part)
    return internal.Reply(
        id=reply_id(),
        model=path_model(request.path),
        parts=tuple(parts),
        stop=stop_to_internal(body.get("stopReason")),
        usage=usage_to_internal(body.get("usage")),
    )


class FrameStream:
    """Base of the event-stream decoders: frames in, the exception frames and a corrupt stream
    turned into a ``Failure`` (after which the stream is over), the events handed to :meth:`frame`."""

    def __init__(self) -> None:
        self._frames = FrameDecoder()
        self.finished = False

    def feed(self, chunk: bytes) -> list[internal.StreamEvent]:
        if self.finished:
            return []
        out: list[internal.StreamEvent] = []
        for frame in self._frames.feed(chunk):
            if frame.message_type != "event":
                self.finished = True
                out.append(
                    internal.Failure(errors.stream_exception(frame.event_type, frame.payload))
                )
                return out
            out += self.frame(frame)
            if self.finished:
                return out
        if self._frames.error is not None:
            self.finished = True
            out.append(internal.Failure(errors.corrupt(str(self._frames.error))))
        return out

    def frame(self, frame: Frame) -> list[internal.StreamEvent]:
        raise NotImplementedError

    def end(self) -> list[internal.StreamEvent]:
        return []


class StreamDecoder(FrameStream):
    """ConverseStream's events -> stream events: ``messageStart``, per block ``contentBlockStart``
    (tool uses only) / ``contentBlockDelta`` / ``contentBlockStop``, ``messageStop`` (the stop
    reason), then ``metadata`` (the usage), which finishes the stream."""

    def __init__(self, request: UpstreamRequest) -> None:
        super().__init__()
        self._model = path_model(request.path)
        self._tools: dict[int, list[Any]] = {}  # block index -> [tool ordinal, got arguments]
        self._count = 0
        self._stop: internal.Stop | None = None

    def frame(self, frame: Frame) -> list[internal.StreamEvent]:
        try:
            data = loads_event(frame.payload.decode("utf-8", "replace"))
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        kind = frame.event_type
        index = data.get("contentBlockIndex", -1)
        if kind == "contentBlockDelta":
            return self._delta(index, internal.section(data, "delta"))
        if kind == "messageStart":
            return [internal.Start(id=reply_id(), model=self._model)]
        if kind == "contentBlockStart":
            tool = internal.section(internal.section(data, "start"), "toolUse")
            if not tool:
                return []
            self._tools[index] = [self._count, False]
            self._count += 1
            return [
                internal.ToolCallStart(
                    index=self._count - 1,
                    id=str(tool.get("toolUseId", "")),
                    name=str(tool.get("name", "")),
                )
            ]
        if kind == "contentBlockStop":
            tool_state = self._tools.get(index)
            if tool_state is not None and not tool_state[1]:
                tool_state[1] = True
                return [internal.ToolArgsDelta(index=tool_state[0], fragment="{}")]
            return []
        if kind == "messageStop":
            self._stop = stop_to_internal(data.get("stopReason"))
            return []
        if kind == "metadata":
            return self._finish(usage_to_internal(data.get("usage")))
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[internal.StreamEvent]:
        if isinstance(delta.get("text"), str):
            return [internal.TextDelta(delta["text"])] if delta["text"] else []
        tool = delta.get("toolUse")
        if isinstance(tool, dict):
            state = self._tools.get(index)
            fragment = tool.get("input")
            if state is None or not isinstance(fragment, str) or not fragment:
                return []
            state[1] = True
            return [internal.ToolArgsDelta(index=state[0], fragment=fragment)]
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict):
            if isinstance(reasoning.get("text"), str) and reasoning["text"]:
                return [internal.ReasoningDelta(text=reasoning["text"])]
            if isinstance(reasoning.get("signature"), str) and reasoning["signature"]:
                return [internal.ReasoningDelta(signature=reasoning["signature"])]
            if isinstance(reasoning.get("redactedContent"), str):
                return [
                    internal.ReasoningDelta(signature=reasoning["redactedContent"], redacted=True)
                ]
        return []

    def _finish(self, usage: internal.Usage) -> list[internal.StreamEvent]:
        if self._stop is None:
            return []  # metadata before messageStop: not the end yet
        self.finished = True
        return [internal.Finish(stop=self._stop, usage=usage)]

    def end(self) -> list[internal.StreamEvent]:
        """A stream that stopped and then ended without its ``metadata`` event: finished, with no
        usage; one that never stopped was cut (the relay reports it)."""
        if self.finished or self._stop is None or self._frames.pending:
            return []
        return self._finish(internal.Usage())
