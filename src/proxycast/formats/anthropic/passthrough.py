"""Anthropic in, Anthropic out: the client's stream relayed event by event, the model renamed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from proxycast.errors import ErrorInfo, upstream_error
from proxycast.formats import sse
from proxycast.formats.anthropic.errors import error_body, error_info
from proxycast.formats.anthropic.outbound import usage_to_internal
from proxycast.formats.json_spans import dumps_text
from proxycast.formats.passthrough import Passthrough

if TYPE_CHECKING:
    from proxycast.errors import ProxycastError


class AnthropicPassthrough(Passthrough):
    """Anthropic SSE in, Anthropic SSE out: every event forwarded as it arrives with its ``event:`` line
    (so that events Anthropic adds later pass too), the model in ``message_start`` renamed.

    A stream that ends without ``message_stop`` (or an ``error`` event) was cut off: the client gets an
    ``event: error`` rather than a clean end.
    """

    _reported: dict[str, Any] | None = None
    """The usage fields reported so far (``message_start``, then ``message_delta``'s updates)."""

    def _event(self, event: sse.Event) -> bytes:
        data = self._renamed(event.data) if event.event == "message_start" else event.data
        if event.event == "message_delta":
            self._read_usage(data, None)
        if event.event in ("message_stop", "error"):
            self.finished = True
        if event.event == "error":
            data = self._redact(data)
            try:
                body = json.loads(data)
            except ValueError:
                body = None
            info = error_info(body) or ErrorInfo(message="Anthropic reported an error mid-stream.")
            self.error = upstream_error("anthropic", info, info.status or 500)
        elif event.event not in ("message_start", "ping"):
            self.started = True
        return sse.encode(data.replace("\n", "\ndata: "), event.event)

    def _renamed(self, data: str) -> str:
        try:
            start = json.loads(data)
            self._read_usage(None, start["message"].get("usage"))
            start["message"]["model"] = self._model
        except (ValueError, KeyError, TypeError, AttributeError):
            return data
        return dumps_text(start)

    def _read_usage(self, data: str | None, usage: Any) -> None:
        """Keep the usage an event reports (``data``: a ``message_delta`` to parse)."""
        if data is not None:
            try:
                delta = json.loads(data)
            except ValueError:
                return
            usage = delta.get("usage") if isinstance(delta, dict) else None
        if isinstance(usage, dict):
            self._reported = {**(self._reported or {}), **usage}
            self.usage = usage_to_internal(self._reported)

    def end(self) -> bytes:
        return b"" if self.finished else self._cut_off("message")

    def fail(self, error: ProxycastError) -> bytes:
        self.finished = True
        self.error = self.error or error
        return sse.encode(json.dumps(error_body(error)), "error")
