"""The OpenAI Responses API wire format (``POST /v1/responses``), as openai-python's
``ResponseCreateParams`` declares it.

Only what proxycast reads is declared, and unknown top-level keys are accepted (Codex sends
``prompt_cache_key``, ``client_metadata``, ...): a same-format route forwards the raw body. Input items
and tools stay JSON objects here; ``inbound`` reads them one by one, so that a 400 names the item
(``input[3].content[0]``) and item types added later pass through the tolerant paths.
"""

from __future__ import annotations

from typing import Any, Union

import attrs

from proxycast.formats.converters import make_strict_converter


@attrs.frozen(kw_only=True)
class Reasoning:
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


@attrs.frozen(kw_only=True)
class TextConfig:
    format: dict[str, Any] | None = None
    verbosity: str | None = None


@attrs.frozen(kw_only=True)
class ResponseCreateRequest:
    model: str
    input: Union[str, list[dict[str, Any]]] = attrs.field(factory=list)
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Union[str, dict[str, Any], None] = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    stream: bool | None = None
    include: list[str] | None = None
    previous_response_id: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    truncation: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    background: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    generate: bool | None = None
    """WebSocket mode's warm-up (Codex's prewarm): ``false`` answers an empty response at once."""


converter = make_strict_converter(forbid_extra_keys=False)
