"""Gemini in, Gemini out: a ``streamGenerateContent`` stream relayed chunk by chunk, as SSE
(``?alt=sse``) or as Google's streamed JSON array, whichever the client asked for.

The upstream is always asked for SSE (one chunk an event); a client that asked for the JSON array
gets the same chunks as its elements (``[``, then ``,`` between chunks, ``]`` at the end).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from proxycast.formats import sse
from proxycast.formats.gemini.errors import error_body
from proxycast.formats.gemini.outbound import stream_error, usage_to_internal
from proxycast.formats.passthrough import Passthrough

if TYPE_CHECKING:
    from collections.abc import Callable

    from proxycast.errors import ProxycastError
    from proxycast.formats.sse import Event


def frame(data: bytes, sse: bool, first: bool) -> bytes:
    """One chunk (its JSON) as the client's framing: an SSE event, or an element of the array."""
    if sse:
        return b"data: " + data + b"\r\n\r\n"
    return (b"[" if first else b"\r\n,") + data


class GeminiPassthrough(Passthrough):
    """Chunks forwarded as they arrive, each read for what the gateway needs: whether content has
    started (a retry is still possible before), the usage, an error object, the finish reason.

    Gemini has no end marker: a stream that ends without a finish reason was cut off, and ends
    with Google's error object, never a clean end.
    """

    def __init__(
        self,
        client_model: str,
        provider_name: str,
        redact: Callable[[str], str] = str,
        *,
        sse: bool = True,
    ) -> None:
        super().__init__(client_model, provider_name, redact)
        self._sse = sse
        if not sse:
            self.content_type = "application/json"  # Google's streamed JSON array
        self._first = True
        self._saw_finish = False

    def _frame(self, data: bytes) -> bytes:
        out = frame(data, self._sse, self._first)
        self._first = False
        return out

    def _event(self, event: Event) -> bytes:
        data = event.data
        try:
            chunk = json.loads(data)
        except ValueError:
            return b""  # not a chunk: nothing a client could read
        if not isinstance(chunk, dict):
            return b""
        if "error" in chunk:
            self.error = stream_error(chunk)
            self.error.message = self._redact(self.error.message)
            return self.fail(self.error)
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict):
            self.usage = usage_to_internal(usage)
        candidates = chunk.get("candidates")
        for candidate in candidates if isinstance(candidates, list) else ():
            if not isinstance(candidate, dict):
                continue
            if candidate.get("finishReason"):
                self._saw_finish = True
                self.started = True
            content = candidate.get("content")
            if isinstance(content, dict) and content.get("parts"):
                self.started = True
        feedback = chunk.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self._saw_finish = True
            self.started = True
        return self._frame(data.encode())

    def feed(self, chunk: bytes) -> bytes:
        if self._sse:
            return super().feed(chunk)
        # Google's JSON array has no place for an SSE comment (a keep-alive): left out
        out = bytearray()
        for item in self._parser.feed_raw(chunk):
            if self.finished:
                break
            if isinstance(item, bytes):
                out += self._data(item)
            elif isinstance(item, sse.Event):
                out += self._event(item)
        return bytes(out)

    def end(self) -> bytes:
        if self.finished:
            return b""
        if not self._saw_finish:
            return self._cut_off("answer")
        self.finished = True
        return b"" if self._sse else (b"[]" if self._first else b"]")

    def fail(self, error: ProxycastError) -> bytes:
        self.finished = True
        self.error = self.error or error  # what the client is told: the accounting records it
        out = self._frame(json.dumps(error_body(error)).encode())
        return out if self._sse else out + b"]"
