"""The OpenAI Chat Completions wire format (requests), as the official openai-python types declare it.

Only what proxycast reads is declared; a same-format route forwards the client's raw body, so fields not
declared here still reach the upstream. Unknown content parts and message roles are kept as ``raw``.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import attrs

from proxycast.formats.converters import make_strict_converter, register_tagged_union


@attrs.frozen(kw_only=True)
class TextPart:
    text: str
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ImageURL:
    url: str
    detail: str | None = None


@attrs.frozen(kw_only=True)
class ImagePart:
    image_url: ImageURL
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class InputAudio:
    data: str
    format: str


@attrs.frozen(kw_only=True)
class AudioPart:
    input_audio: InputAudio


@attrs.frozen(kw_only=True)
class File:
    file_data: str | None = None
    """A data URL (``data:application/pdf;base64,...``) or bare base64."""
    file_id: str | None = None
    filename: str | None = None


@attrs.frozen(kw_only=True)
class FilePart:
    file: File
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class RefusalPart:
    refusal: str


@attrs.frozen
class UnknownPart:
    raw: dict[str, Any]


Part = Union[TextPart, ImagePart, AudioPart, FilePart, RefusalPart, UnknownPart]


@attrs.frozen(kw_only=True)
class FunctionCall:
    name: str
    arguments: str
    """JSON text of the arguments, as the model wrote it."""


@attrs.frozen(kw_only=True)
class ToolCall:
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


@attrs.frozen(kw_only=True)
class SystemMessage:
    content: str | list[Part]
    name: str | None = None
    cache_control: dict[str, Any] | None = None
    """LiteLLM's message-level marker: applies to the message's last content block."""


@attrs.frozen(kw_only=True)
class DeveloperMessage:
    content: str | list[Part]
    name: str | None = None
    cache_control: dict[str, Any] | None = None
    """LiteLLM's message-level marker: applies to the message's last content block."""


@attrs.frozen(kw_only=True)
class UserMessage:
    content: str | list[Part]
    name: str | None = None
    cache_control: dict[str, Any] | None = None
    """LiteLLM's message-level marker: applies to the message's last content block."""


@attrs.frozen(kw_only=True)
class AssistantMessage:
    content: str | list[Part] | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    """Not in OpenAI's API; DeepSeek's and vLLM's reasoning text, echoed back by some clients."""
    thinking_blocks: list[dict[str, Any]] | None = None
    """LiteLLM's: Claude's ``thinking`` / ``redacted_thinking`` blocks, as the answer gave them."""
    reasoning_details: list[dict[str, Any]] | None = None
    """OpenRouter's: ``reasoning.text`` (with ``signature``) and ``reasoning.encrypted`` entries."""
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ToolMessage:
    content: str | list[Part]
    tool_call_id: str
    cache_control: dict[str, Any] | None = None


@attrs.frozen
class UnknownMessage:
    raw: dict[str, Any]


Message = Union[
    SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage, UnknownMessage
]


@attrs.frozen(kw_only=True)
class FunctionDefinition:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Tool:
    function: FunctionDefinition
    type: Literal["function"] = "function"
    cache_control: dict[str, Any] | None = None
    """LiteLLM's prompt-caching marker for Claude (also accepted inside ``function``)."""


@attrs.frozen(kw_only=True)
class NamedFunction:
    name: str


@attrs.frozen(kw_only=True)
class NamedToolChoice:
    function: NamedFunction
    type: Literal["function"] = "function"


@attrs.frozen(kw_only=True)
class StreamOptions:
    include_usage: bool | None = None


@attrs.frozen(kw_only=True)
class ResponseFormat:
    type: str
    json_schema: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ChatCompletionRequest:
    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    reasoning_effort: str | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    web_search_options: dict[str, Any] | None = None


converter = make_strict_converter(forbid_extra_keys=False)
register_tagged_union(
    converter,
    Part,
    "type",
    {
        "text": TextPart,
        "image_url": ImagePart,
        "input_audio": AudioPart,
        "file": FilePart,
        "refusal": RefusalPart,
    },
    unknown=UnknownPart,
)
register_tagged_union(
    converter,
    Message,
    "role",
    {
        "system": SystemMessage,
        "developer": DeveloperMessage,
        "user": UserMessage,
        "assistant": AssistantMessage,
        "tool": ToolMessage,
    },
    unknown=UnknownMessage,
)
