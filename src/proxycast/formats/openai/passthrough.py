"""OpenAI in, OpenAI out: the client's stream relayed event by event, the model renamed."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from proxycast.errors import ErrorInfo, upstream_error
from proxycast.formats import internal, sse
from proxycast.formats.json_spans import dumps_text, model_span, replace_value
from proxycast.formats.openai.errors import error_body, error_info
from proxycast.formats.openai.outbound import usage_to_internal
from proxycast.formats.passthrough import Passthrough

if TYPE_CHECKING:
    from collections.abc import Callable

    from proxycast.errors import ProxycastError


_NULL_USAGE = re.compile(r',\s*"usage"\s*:\s*null(?=\s*}\s*\Z)')
_MODEL = re.compile(rb'"model"\s*:\s*("(?:[^"\\]|\\.)*")')
_NULL_USAGE_BYTES = re.compile(_NULL_USAGE.pattern.encode())


def error_frame(error: ProxycastError) -> bytes:
    """An OpenAI error frame (``data: {"error": …}``), which the SDKs raise; nothing follows it."""
    return sse.encode(json.dumps(error_body(error)))


def _opening(chunk: dict[str, Any]) -> bool:
    """A chunk that only opens the answer: the role, with no content, tool call or finish yet."""
    if chunk.get("usage"):
        return False
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("finish_reason"):
            return False
        delta = choice.get("delta") or {}
        if any(v for k, v in delta.items() if k != "role"):
            return False
    return True


class OpenAIPassthrough(Passthrough):
    """OpenAI SSE in, OpenAI SSE out: each event forwarded as it arrives, ``model`` renamed.

    A stream that ends without a finish reason was cut off, ``[DONE]`` or not (llama.cpp's server ends
    a stream that a newer request interrupts with ``[DONE]`` alone): the client gets an error frame,
    not a clean end. One that ends after a finish reason but without ``[DONE]`` (some
    OpenAI-compatible servers) gets the ``[DONE]`` it expects.

    A server that reports no usage (llama-cpp-python ignores ``stream_options.include_usage``)
    leaves :attr:`usage` an estimate of the output streamed (``Usage.estimated``; the accounting
    adds the input's), never zero. The client's stream is not changed for it.
    """

    def __init__(
        self,
        client_model: str,
        provider_name: str,
        redact: Callable[[str], str] = str,
        *,
        hide_usage: bool = False,
    ) -> None:
        super().__init__(client_model, provider_name, redact)
        self._saw_finish = False
        self._model_json = dumps_text(client_model).encode()
        self._hide_usage = hide_usage
        """The client did not ask for usage (proxycast did, for its accounting): the usage chunk
        is read, not forwarded."""
        self._written = 0
        """Characters of output streamed (for an estimate, if the usage never comes)."""
        self._deltas = 0
        self._frame = 0
        """The size of a content chunk without its content (measured on the first one parsed): a
        chunk forwarded unparsed counts as its size less this."""

    def _data(self, data: bytes) -> bytes:
        if self.started:
            frame = self._plain(data)
            if frame is not None:
                self._deltas += 1
                self._written += max(0, len(data) - self._frame)
                return frame
        return self._event(sse.Event(data.decode("utf-8", "replace")))

    def _event(self, event: sse.Event) -> bytes:
        data = event.data
        if data == "[DONE]":
            if not self._saw_finish:  # interrupted (llama.cpp): an error, not a clean end
                return self._cut_off("completion")
            self.finished = True
            self.started = True
            self._estimate()
            return b"data: [DONE]\n\n"
        try:
            chunk = json.loads(data)  # C speed; the span-recording parse only when renaming
        except ValueError:
            return sse.encode(data.replace("\n", "\ndata: "))
        if not isinstance(chunk, dict):
            return sse.encode(data)
        if "error" in chunk:
            self.finished = True
            info = error_info(chunk) or ErrorInfo(message="The upstream reported an error.")
            status = info.status if info.status and 400 <= info.status < 600 else 500
            self.error = upstream_error("openai", info, status)
            self.error.message = self._redact(self.error.message)
            return sse.encode(self._redact(data))
        if chunk.get("usage"):
            self.usage = usage_to_internal(chunk["usage"])
            if self._hide_usage and chunk.get("choices") == []:
                return b""
        elif self._hide_usage and "usage" in chunk:
            # include_usage adds '"usage": null' to every chunk: gone again, so the client gets
            # the bytes it would have had without it (a JSON string cannot hold '," unescaped)
            data = _NULL_USAGE.sub("", data, count=1)
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self._saw_finish = True
        written = _written(chunk)
        if written:
            self._deltas += 1
            self._written += written
            if not self._frame:
                self._frame = max(0, len(data) - written)
        if not self.started and not _opening(chunk):
            self.started = True
        if chunk.get("model", self._model) != self._model:
            data = replace_value(data, model_span(data), self._model)
        return sse.encode(data)

    def _plain(self, data: bytes) -> bytes | None:
        """The frame of a chunk in the middle of the answer (content or a piece of a tool call: no
        usage, error or finish), found by a scan of its bytes instead of a parse; None when the
        chunk may be anything else (then :meth:`_event` parses it). An unescaped quote cannot
        occur inside a JSON string, so the keys the scan finds are keys; ``model`` is the
        object's own when no bracket but the object's opening one comes before it (OpenAI's
        chunks name the model before their choices)."""
        if self._hide_usage and b'"usage"' in data:
            data = _NULL_USAGE_BYTES.sub(b"", data, count=1)
        if not data.startswith(b"{") or b'"usage"' in data or b'"error"' in data:
            return None
        # every finish_reason null (substring counts: a regex search costs more than the parse)
        if data.count(b'"finish_reason"') != data.count(b'"finish_reason":null') + data.count(
            b'"finish_reason": null'
        ):
            return None
        at = data.find(b'"model"')
        if at == -1 or data.find(b'"model"', at + 7) != -1:
            return None
        if data.count(b"{", 0, at) != 1 or b"[" in data[:at]:
            return None  # perhaps not the top-level key: only the object's own brace before it
        model = _MODEL.match(data, at)
        if model is None:
            return None
        if not data.isascii():
            try:
                data.decode("utf-8")  # forwarded as it came only when it is valid UTF-8
            except UnicodeDecodeError:
                return None
        value = model.group(1)
        try:
            same = value == self._model_json or json.loads(value) == self._model
        except ValueError:  # not a JSON string after all: the parse path says what to do
            return None
        if not same:
            start, end = model.span(1)
            data = data[:start] + self._model_json + data[end:]
        return b"data: " + data + b"\n\n"

    def end(self) -> bytes:
        if self.finished:
            return b""
        self.finished = True
        self._estimate()
        if self._saw_finish:
            return b"data: [DONE]\n\n"
        return self._cut_off("completion")

    def fail(self, error: ProxycastError) -> bytes:
        self.finished = True
        self.error = self.error or error
        self._estimate()
        return error_frame(error)

    def _estimate(self) -> None:
        """No usage came: the output streamed, estimated (the accounting adds the input)."""
        if self.usage is None and self._deltas:
            output = internal.estimated_tokens(self._written, self._deltas)
            self.usage = internal.Usage(output=output, estimated=True)


def _written(chunk: dict[str, Any]) -> int:
    """Characters of output a chunk carries (text, reasoning, a tool call's name and arguments)."""
    choices = chunk.get("choices")
    if not choices or not isinstance(choices[0], dict):
        return 0
    delta = choices[0].get("delta")
    if not isinstance(delta, dict):
        return 0
    written = 0
    for key in ("content", "reasoning_content", "reasoning"):
        if isinstance(delta.get(key), str):
            written += len(delta[key])
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            written += len(str(function.get("name") or "")) + len(
                str(function.get("arguments") or "")
            )
    return written
