"""Responses in, Responses out (a provider with ``responses = true``): the stream relayed event by
event, the model renamed in the lifecycle events."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from proxycast import sse
from proxycast.formats.responses.errors import stream_error
from proxycast.relay import Passthrough

if TYPE_CHECKING:
    from proxycast.errors import ProxycastError

_FINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
"""Events after which a Responses stream has nothing more to say."""


class ResponsesPassthrough(Passthrough):
    """Every event forwarded as it arrives, with its ``event:`` line; ``response.model`` renamed in
    the events that carry the response. A stream that ends before a final event was cut off: the
    client gets a ``response.failed`` rather than a clean end."""

    _sequence = 0

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
                data = json.dumps(parsed, ensure_ascii=False)
        if kind in _FINAL:
            self.finished = True
        if kind in ("error", "response.failed"):
            data = self._redact(data)
        return sse.encode(data.replace("\n", "\ndata: "), event.event)

    def end(self) -> bytes:
        return b"" if self.finished else self._cut_off("response")

    def fail(self, error: ProxycastError) -> bytes:
        self.finished = True
        event = {
            "type": "error",
            **stream_error(error),
            "param": error.param,
            "sequence_number": self._sequence,
        }
        return sse.encode(json.dumps(event, ensure_ascii=False), "error")
