"""The internal (hub) model: every wire format converts to and from these classes, never to each other.

Block-based, close to the richest of the formats, so that nothing a format can say is lost on the way
(docs/architecture.md, "The hub"). Tool results travel as parts of a user turn.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable


@attrs.frozen
class Text:
    text: str
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Image:
    media_type: str | None = None
    data: str | None = None
    """Base64, when the image is inline."""
    url: str | None = None
    """An http(s) URL, when it is not."""


@attrs.frozen(kw_only=True)
class Document:
    media_type: str
    data: str | None = None
    url: str | None = None
    filename: str | None = None


@attrs.frozen(kw_only=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@attrs.frozen(kw_only=True)
class ToolResult:
    call_id: str
    content: tuple[Part, ...]
    name: str | None = None
    """The called tool's name, looked up from the call (Gemini needs it)."""
    is_error: bool = False


@attrs.frozen(kw_only=True)
class Reasoning:
    text: str
    signature: str | None = None


Part = Text | Image | Document | ToolCall | ToolResult | Reasoning


@attrs.frozen
class Message:
    role: Literal["user", "assistant"]
    parts: tuple[Part, ...]


@attrs.frozen(kw_only=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})


@attrs.frozen
class NamedTool:
    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedTool


@attrs.frozen(kw_only=True)
class Params:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    n: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    reasoning_effort: str | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None


@attrs.frozen(kw_only=True)
class Conversation:
    system: tuple[Part, ...] = ()
    messages: tuple[Message, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    params: Params = Params()
    stream: bool = False
    include_usage: bool = False


Stop = Literal["end", "length", "tool_use", "content_filter", "stop_sequence"]


@attrs.frozen(kw_only=True)
class Usage:
    input: int = 0
    """Prompt tokens that were neither read from nor written to a cache."""
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    """Of ``output``, how many were reasoning."""


@attrs.frozen(kw_only=True)
class Reply:
    id: str
    model: str
    parts: tuple[Part, ...]
    stop: Stop
    usage: Usage = Usage()


# Stream events: what a decoder makes of an upstream stream, and an encoder turns into client frames.


@attrs.frozen(kw_only=True)
class Start:
    id: str
    model: str
    usage: Usage = Usage()


@attrs.frozen
class TextDelta:
    text: str


@attrs.frozen(kw_only=True)
class ReasoningDelta:
    text: str = ""
    signature: str | None = None


@attrs.frozen(kw_only=True)
class ToolCallStart:
    index: int
    """Counts tool calls from 0 in the reply, whatever the upstream numbers its blocks."""
    id: str
    name: str


@attrs.frozen(kw_only=True)
class ToolArgsDelta:
    index: int
    fragment: str


@attrs.frozen(kw_only=True)
class Finish:
    stop: Stop
    usage: Usage


@attrs.frozen
class Failure:
    error: Exception


StreamEvent = Start | TextDelta | ReasoningDelta | ToolCallStart | ToolArgsDelta | Finish | Failure


def accumulate(events: Iterable[StreamEvent]) -> Reply:
    """The reply a stream of events describes (what a non-streaming call would have returned).

    Raises:
        Exception: the error of a ``Failure`` event.
        ValueError: the stream never started or never finished.
    """
    start: Start | None = None
    finish: Finish | None = None
    parts: list[Part] = []
    text: list[str] = []
    reasoning: list[str] = []
    signature: str | None = None
    tools: dict[int, tuple[int, ToolCallStart, list[str]]] = {}  # index -> (position, start, args)

    def flush() -> None:
        nonlocal signature
        if reasoning or signature:
            parts.append(Reasoning(text="".join(reasoning), signature=signature))
        if text:
            parts.append(Text("".join(text)))
        reasoning.clear()
        text.clear()
        signature = None

    for event in events:
        if isinstance(event, Start):
            start = event
        elif isinstance(event, TextDelta):
            if reasoning or signature:
                flush()
            text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            if text:
                flush()
            reasoning.append(event.text)
            if event.signature:  # the signature is the last delta of a thinking block
                signature = event.signature
                flush()
        elif isinstance(event, ToolCallStart):
            flush()
            tools[event.index] = (len(parts), event, [])
            parts.append(ToolCall(id=event.id, name=event.name, arguments={}))
        elif isinstance(event, ToolArgsDelta):
            tools[event.index][2].append(event.fragment)
        elif isinstance(event, Finish):
            finish = event
        elif isinstance(event, Failure):
            raise event.error
    flush()
    if start is None or finish is None:
        raise ValueError("the stream ended before it finished")
    for position, call, fragments in tools.values():
        arguments = json.loads("".join(fragments).strip() or "{}")
        parts[position] = ToolCall(id=call.id, name=call.name, arguments=arguments)
    return Reply(
        id=start.id, model=start.model, parts=tuple(parts), stop=finish.stop, usage=finish.usage
    )
