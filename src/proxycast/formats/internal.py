"""The internal (hub) model: every wire format converts to and from these classes, never to each other.

Block-based, close to the richest of the formats, so that nothing a format can say is lost on the way
(docs/architecture.md, "The hub"). Tool results travel as parts of a user turn.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable


@attrs.frozen(kw_only=True)
class Citation:
    """A source the upstream's own web search found, cited by a span of an answer's text."""

    url: str
    title: str | None = None
    start: int = 0
    end: int = 0
    """Character offsets of the cited span in the ``Text`` part that carries the citation."""


@attrs.frozen
class Text:
    text: str
    cache_control: dict[str, Any] | None = None
    citations: tuple[Citation, ...] = ()
    """In answers only: the web search results the text cites (never sent upstream)."""
    signature: str | None = attrs.field(default=None, kw_only=True)
    """An upstream's signature on this text part (Gemini 3 signs text parts with a
    ``thoughtSignature``): only :attr:`source` takes it back, on this part. A client is given it
    where its format keeps it without moving anything it shows (docs/mappings.md, "Carriers")."""
    source: str | None = attrs.field(default=None, kw_only=True)
    """The upstream format (its ``type``) whose signature :attr:`signature` is."""


@attrs.frozen(kw_only=True)
class Image:
    media_type: str | None = None
    data: str | None = None
    """Base64, when the image is inline."""
    url: str | None = None
    """An http(s) URL, when it is not."""
    detail: str | None = None
    """OpenAI's ``image_url.detail`` (``auto``, ``low``, ``high``, ``original``)."""
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Document:
    media_type: str
    data: str | None = None
    url: str | None = None
    filename: str | None = None
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Audio:
    media_type: str
    """``audio/wav``, ``audio/mp3``..."""
    data: str
    """Base64."""


@attrs.frozen(kw_only=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    signature: str | None = None
    """Gemini's ``thoughtSignature`` of the part the call came in (Gemini 3 wants it back)."""
    raw_arguments: str | None = attrs.field(default=None, eq=False)
    """The arguments' text as the upstream wrote it, when it was not a JSON object (then
    :attr:`arguments` holds it under ``arguments``): a client that takes text gets it back as is."""


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
    """Opaque; for a redacted block, its encrypted ``data``."""
    redacted: bool = False
    """Claude's ``redacted_thinking``: no text, the ``signature`` is the block's data."""
    source: str | None = None
    """The upstream format (its ``type``) whose signature this is, when only that format accepts it
    back and a client must be given it marked (:func:`carried_signature`); None: a signature that
    travels unmarked (the default of thinking blocks in clients' histories)."""


@attrs.frozen(kw_only=True)
class WebSearchCall:
    """A web search the upstream ran itself while answering (Claude's ``server_tool_use`` and its
    result, Gemini's grounding): a part of a reply, and a stream event. Never sent upstream."""

    id: str
    queries: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    """The URLs it found."""


Part = Text | Image | Document | Audio | ToolCall | ToolResult | Reasoning | WebSearchCall


@attrs.frozen
class Message:
    role: Literal["user", "assistant"]
    parts: tuple[Part, ...]


@attrs.frozen(kw_only=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = attrs.field(factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None


@attrs.frozen
class NamedTool:
    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedTool


LOCATION_FIELDS = ("city", "region", "country", "timezone")
"""The fields of an approximate user location, the same in every format that has one."""


def location(value: Any) -> dict[str, str] | None:
    """The known string fields of a location object (None if it has none)."""
    if not isinstance(value, dict):
        return None
    out = {k: value[k] for k in LOCATION_FIELDS if isinstance(value.get(k), str)}
    return out or None


@attrs.frozen(kw_only=True)
class WebSearch:
    """A web search for the upstream to run itself: OpenAI's ``web_search_options``, or the
    Responses API's built-in ``web_search`` tool."""

    context_size: str | None = None
    """OpenAI's ``search_context_size``: ``low``, ``medium``, ``high``."""
    location: dict[str, str] | None = None
    """The user's approximate location: ``city``, ``region``, ``country``, ``timezone``."""
    allowed_domains: tuple[str, ...] = ()
    tool: str | None = None
    """The Responses API tool type that offered it (``web_search``, ``web_search_preview``). An
    offered search is the model's to use or not: an upstream that cannot run it leaves it out (the
    client is told which) instead of refusing the request, as it does a demanded one (None)."""


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
    logprobs: bool | None = None
    logit_bias: dict[str, float] | None = None
    top_logprobs: int | None = None
    service_tier: str | None = None
    web_search: WebSearch | None = None


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


def count(value: Any) -> int:
    """A token count as an upstream reported it, or 0 when it is not a count (a string, a negative,
    a missing field): usage is read from every answer, and must never make a good answer fail."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def section(value: Any, key: str) -> dict[str, Any]:
    """``value[key]`` when both are JSON objects, else an empty object."""
    inner = value.get(key) if isinstance(value, dict) else None
    return inner if isinstance(inner, dict) else {}


@attrs.frozen(kw_only=True)
class Usage:
    input: int = 0
    """Prompt tokens that were neither read from nor written to a cache."""
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    """Of ``output``, how many were reasoning."""
    estimated: bool = False
    """The upstream reported no usage: proxycast estimated these counts (:func:`estimated_tokens`:
    the request's input, the answer's output), and says so in the ledger."""


def joined(texts: Iterable[str]) -> str:
    """The texts of separate parts (or turns) as one text, their boundaries kept: a newline
    between two parts unless one side of the boundary is already whitespace. Gluing them
    ("...saved number." + "The number" -> "number.The number") made one word of two."""
    out = ""
    for text in texts:
        if not text:
            continue
        if out and not out[-1].isspace() and not text[0].isspace():
            out += "\n"
        out += text
    return out


def estimated_tokens(chars: int, pieces: int = 0) -> int:
    """Tokens estimated for ``chars`` characters of text that came in ``pieces`` stream deltas: a
    token a delta when the deltas are token-sized (six characters or fewer on average: a local
    server streams one token a delta), else about four characters a token (OpenAI's rule of thumb
    for English), never fewer than the deltas."""
    if pieces and chars <= 6 * pieces:
        return pieces
    return max(pieces, -(-chars // 4))


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
    signature: str | None = attrs.field(default=None, kw_only=True)
    """Signs the text part in progress (:attr:`Text.signature`): Gemini 3 puts it on a text chunk,
    often a last one with no text. Text it comes with belongs to the same part."""
    source: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen(kw_only=True)
class ReasoningDelta:
    text: str = ""
    signature: str | None = None
    redacted: bool = False
    """A whole redacted block: ``signature`` holds its data."""
    source: str | None = None


@attrs.frozen(kw_only=True)
class ToolCallStart:
    index: int
    """Counts tool calls from 0 in the reply, whatever the upstream numbers its blocks."""
    id: str
    name: str
    signature: str | None = None


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


StreamEvent = (
    Start
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolArgsDelta
    | Citation
    | WebSearchCall
    | Finish
    | Failure
)
"""A ``Citation`` annotates the text streamed since the last part of another kind (its offsets
count from there); a ``WebSearchCall`` comes whole."""


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
    citations: list[Citation] = []
    reasoning: list[str] = []
    signature: str | None = None
    source: str | None = None
    signed: tuple[str, str | None] | None = None  # the text part's own signature, and its source
    tools: dict[int, tuple[int, ToolCallStart, list[str]]] = {}  # index -> (position, start, args)

    def flush() -> None:
        nonlocal signature, source, signed
        if reasoning or signature:
            parts.append(Reasoning(text="".join(reasoning), signature=signature, source=source))
        if text or signed:
            mark = signed or (None, None)
            parts.append(
                Text(
                    "".join(text),
                    citations=tuple(citations),
                    signature=mark[0],
                    source=mark[1],
                )
            )
        reasoning.clear()
        text.clear()
        citations.clear()
        signature = None
        source = None
        signed = None

    for event in events:
        if isinstance(event, Start):
            start = event
        elif isinstance(event, TextDelta):
            if reasoning or signature or (event.signature and signed):
                flush()  # one signature a text part: a second one starts the next part
            text.append(event.text)
            if event.signature:
                signed = (event.signature, event.source)
        elif isinstance(event, ReasoningDelta):
            if text or signed:
                flush()
            if event.redacted:
                flush()
                parts.append(
                    Reasoning(
                        text="", signature=event.signature, redacted=True, source=event.source
                    )
                )
                continue
            reasoning.append(event.text)
            if event.signature:  # the signature is the last delta of a thinking block
                signature = event.signature
                source = event.source
                flush()
        elif isinstance(event, ToolCallStart):
            flush()
            tools[event.index] = (len(parts), event, [])
            parts.append(
                ToolCall(id=event.id, name=event.name, arguments={}, signature=event.signature)
            )
        elif isinstance(event, ToolArgsDelta):
            tools[event.index][2].append(event.fragment)
        elif isinstance(event, Citation):
            if text or signed:
                citations.append(event)
        elif isinstance(event, WebSearchCall):
            flush()
            parts.append(event)
        elif isinstance(event, Finish):
            finish = event
        elif isinstance(event, Failure):
            raise event.error
    flush()
    if start is None or finish is None:
        raise ValueError("the stream ended before it finished")
    for position, call, fragments in tools.values():
        arguments = json.loads("".join(fragments).strip() or "{}")
        parts[position] = ToolCall(
            id=call.id, name=call.name, arguments=arguments, signature=call.signature
        )
    return Reply(
        id=start.id, model=start.model, parts=tuple(parts), stop=finish.stop, usage=finish.usage
    )


def regrouped(events: list[StreamEvent]) -> list[StreamEvent]:
    """``events`` with each tool call's argument fragments right after its start, everything else
    in order (what it accumulates to is unchanged): a stream's held-back events, replayed one block
    or item after another by an encoder whose blocks must not interleave."""
    groups: list[list[StreamEvent]] = []
    calls: dict[int, list[StreamEvent]] = {}
    for event in events:
        if isinstance(event, ToolCallStart):
            calls[event.index] = [event]
            groups.append(calls[event.index])
        elif isinstance(event, ToolArgsDelta):
            if event.index in calls:
                calls[event.index].append(event)
        else:
            groups.append([event])
    return [event for group in groups for event in group]


# Carriers: how a client keeps what only the upstream understands (docs/mappings.md, "Carriers").

SIGNED_ID_MARK = "__ts"
"""Between a tool call id and its base64url-encoded Gemini thought signature."""
SIGNATURE_MARK = "-ts:"
"""After an upstream format's ``type``, prefixes a signature only that format accepts, carried in a
client's thinking block (``gemini-ts:...``)."""
_MARKED = re.compile(r"([a-z][a-z0-9_]*)-ts:")


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def signed_id(call_id: str, signature: str | None) -> str:
    """A tool call id carrying a thought signature, losslessly, in ``[A-Za-z0-9_-]``: base64url
    without padding after :data:`SIGNED_ID_MARK`."""
    return f"{call_id}{SIGNED_ID_MARK}{_b64url(signature)}" if signature else call_id


def split_id(call_id: str) -> tuple[str, str | None]:
    """The id and signature :func:`signed_id` joined; an id without the mark has no signature."""
    head, mark, encoded = call_id.partition(SIGNED_ID_MARK)
    if not mark or not encoded or not head:
        return call_id, None
    if encoded.startswith("_"):
        # the raw signature after ``__ts_``, as proxycast wrote ids before base64url; an encoded UTF-8
        # signature never starts with ``_`` (that would be a first byte of 0xFC or more)
        return head, encoded[1:] or None
    try:
        signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return call_id, None
    return head, signature


def carried_signature(part: Reasoning) -> str:
    """The signature a client is given for a reasoning part: marked with its source, if it has one."""
    signature = part.signature or ""
    return f"{part.source}{SIGNATURE_MARK}{signature}" if part.source else signature


def marked_source(signature: str) -> str | None:
    """The source a carried signature is marked with (None: unmarked)."""
    found = _MARKED.match(signature)
    return found.group(1) if found else None


def reasoning_from_client(text: str, signature: str | None, redacted: bool = False) -> Reasoning:
    """A reasoning part from a signature a client sent back (see :func:`carried_signature`)."""
    source = marked_source(signature) if signature else None
    if signature and source:
        signature = signature[len(source) + len(SIGNATURE_MARK) :]
        return Reasoning(text=text, signature=signature, redacted=redacted, source=source)
    return Reasoning(text=text, signature=signature, redacted=redacted)
