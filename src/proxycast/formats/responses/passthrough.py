"""Responses in, Responses out (a provider with ``responses = true``): the stream relayed event by
event, the model renamed in the lifecycle events."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from proxycast.errors import ErrorInfo, upstream_error
from proxycast.formats import internal, sse
from proxycast.formats.json_spans import dumps_text
from proxycast.formats.openai.errors import error_info
from proxycast.formats.passthrough import Passthrough
from proxycast.formats.responses.errors import stream_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from proxycast.errors import ProxycastError

_FINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
"""Events after which a Responses stream has nothing more to say."""
_KEPT = frozenset({"response.completed", "response.incomplete"})
"""Events whose response is kept (the store, a WebSocket connection's recent responses)."""
_OPENING = frozenset({"response.created", "response.in_progress"})
"""Events that only open the answer: held back until content comes (so an early failure is retried)."""


def usage_to_internal(usage: Any) -> internal.Usage:
    """A Responses ``usage`` object as the hub's (cached input apart from the rest)."""
    if not isinstance(usage, dict):
        return internal.Usage()
    details = internal.section(usage, "input_tokens_details")
    cached = internal.count(details.get("cached_tokens"))
    written = internal.count(details.get("cache_write_tokens"))
    return internal.Usage(
        input=max(0, internal.count(usage.get("input_tokens")) - cached - written),
        output=internal.count(usage.get("output_tokens")),
        cache_read=cached,
        cache_write=written,
        reasoning=internal.count(
            internal.section(usage, "output_tokens_details").get("reasoning_tokens")
        ),
    )


def _error(parsed: Any) -> ProxycastError:
    """The error a failed stream reports (an ``error`` event, or ``response.failed``'s)."""
    body = (
        parsed.get("response", {}).get("error")
        if parsed.get("type") == "response.failed"
        else parsed
    )
    info = error_info({"error": body}) if isinstance(body, dict) else None
    info = info or ErrorInfo(message="The upstream reported an error.")
    return upstream_error(
        "openai", info, info.status if info.status and info.status >= 400 else 500
    )


class ResponsesPassthrough(Passthrough):
    """Every event forwarded as it arrives, with its ``event:`` line; ``response.model`` renamed in
    the events that carry the response. A stream that ends before a final event was cut off: the
    client gets a ``response.failed`` rather than a clean end."""

    _sequence = 0
    record: Callable[[dict[str, Any]], None] | None = None
    """Called with the final response (completed or incomplete), as a converted stream's encoder
    calls it: a WebSocket connection remembers it for the next ``previous_response_id``."""

    def _event(self, event: sse.Event) -> bytes:
        data = event.data
        kind: Any = event.event
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            kind = kind or parsed.get("type")
            if isinstance(parsed.get("sequence_number"), int):
                self._sequence = parsed["sequence_number"] + 1
            response = parsed.get("response")
            if isinstance(response, dict) and "model" in response:
                response["model"] = self._model
                data = dumps_text(parsed)
            if isinstance(response, dict) and response.get("usage"):
                self.usage = usage_to_internal(response["usage"])
            if kind in _KEPT and isinstance(response, dict) and self.record is not None:
                self.record(response)
        if kind in _FINAL:
            self.finished = True
        if kind in ("error", "response.failed"):
            data = self._redact(data)
            if isinstance(parsed, dict):
                self.error = _error(parsed)
                self.error.message = self._redact(self.error.message)
        elif kind not in _OPENING:
            self.started = True
        return sse.encode(data.replace("\n", "\ndata: "), event.event)

    def end(self) -> bytes:
        return b"" if self.finished else self._cut_off("response")

    def fail(self, error: ProxycastError) -> bytes:
        self.finished = True
        self.error = self.error or error
        event = {
            "type": "error",
            **stream_error(error),
            "param": error.param,
            "sequence_number": self._sequence,
        }
        return sse.encode(dumps_text(event), "error")
