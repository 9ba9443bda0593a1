"""The Anthropic Messages wire format (requests), as anthropic-sdk-python's params declare it.

Only what proxycast reads is declared; requests for an Anthropic upstream are forwarded as the client
wrote them. Unknown content blocks are kept as ``raw``.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import attrs

from proxycast.formats.converters import make_strict_converter, register_tagged_union


@attrs.frozen(kw_only=True)
class Source:
    type: str
    """``base64``, ``url`` (or ``text``/``file`` for documents)."""
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


@attrs.frozen(kw_only=True)
class TextBlock:
    text: str
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ImageBlock:
    source: Source
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class DocumentBlock:
    source: Source
    title: str | None = None
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ToolUseBlock:
    id: str
    name: str
    input: dict[str, Any]


@attrs.frozen(kw_only=True)
class ToolResultBlock:
    tool_use_id: str
    content: str | list[Block] | None = None
    is_error: bool | None = None


@attrs.frozen(kw_only=True)
class ThinkingBlock:
    thinking: str
    signature: str | None = None


@attrs.frozen(kw_only=True)
class RedactedThinkingBlock:
    data: str


@attrs.frozen
class UnknownBlock:
    raw: dict[str, Any]


Block = Union[
    TextBlock,
    ImageBlock,
    DocumentBlock,
    ToolUseBlock,
    ToolResultBlock,
    ThinkingBlock,
    RedactedThinkingBlock,
    UnknownBlock,
]


@attrs.frozen(kw_only=True)
class Message:
    role: Literal["user", "assistant", "system"]
    """``system``: instructions given mid-conversation (a beta Claude Code uses)."""
    content: str | list[Block]


@attrs.frozen(kw_only=True)
class Tool:
    name: str
    input_schema: dict[str, Any] = attrs.field(factory=lambda: {"type": "object"})
    description: str | None = None
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ToolChoice:
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


@attrs.frozen(kw_only=True)
class Thinking:
    type: str
    """``enabled``, ``disabled``, ``adaptive``."""
    budget_tokens: int | None = None


@attrs.frozen(kw_only=True)
class OutputConfig:
    effort: str | None = None
    """``low``, ``medium``, ``high``, ``xhigh``, ``max``."""
    format: dict[str, Any] | None = None
    """``{"type": "json_schema", "schema": {...}}``: structured output."""


@attrs.frozen(kw_only=True)
class Metadata:
    user_id: str | None = None


@attrs.frozen(kw_only=True)
class MessagesRequest:
    model: str
    messages: list[Message]
    max_tokens: int
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: Metadata | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    stream: bool | None = None


@attrs.frozen(kw_only=True)
class CountTokensRequest:
    """``/v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model: str
    messages: list[Message]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


converter = make_strict_converter(forbid_extra_keys=False)
register_tagged_union(
    converter,
    Block,
    "type",
    {
        "text": TextBlock,
        "image": ImageBlock,
        "document": DocumentBlock,
        "tool_use": ToolUseBlock,
        "tool_result": ToolResultBlock,
        "thinking": ThinkingBlock,
        "redacted_thinking": RedactedThinkingBlock,
    },
    unknown=UnknownBlock,
)
