"""Azure's answers: OpenAI's chat completions with its content filter's results added.

Azure adds ``prompt_filter_results`` (top level) and ``content_filter_results`` (per choice) to
answers and stream chunks, may end a choice with ``finish_reason: "content_filter"`` (the
internal ``content_filter`` stop, which every dialect renders as its own), and opens a stream with
a chunk that has no choices, no id and no model, only the prompt's filter results. OpenAI's
reading (``formats/openai/outbound.py``) ignores the added fields; this decoder leaves out that
first chunk, so that the stream starts with the answer's own id and model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxycast.formats.json_spans import loads_event
from proxycast.formats.openai import outbound as openai

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.formats import internal, sse


def prompt_filter_chunk(data: str) -> bool:
    """Whether an event is Azure's opening chunk: the prompt's filter results and no choices."""
    if '"prompt_filter_results"' not in data:
        return False
    try:
        chunk = loads_event(data)
    except ValueError:
        return False
    return isinstance(chunk, dict) and not chunk.get("choices") and not chunk.get("usage")


class StreamDecoder(openai.StreamDecoder):
    """OpenAI's chunk decoder, past Azure's opening chunk (see the module docstring)."""

    def __init__(
        self, tool_names: dict[str, str] | None = None, prompt: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(tool_names, prompt)
        self._opened = False

    def event(self, event: sse.Event) -> list[internal.StreamEvent]:
        if not self._opened:
            if prompt_filter_chunk(event.data):
                return []
            self._opened = True
        return super().event(event)
