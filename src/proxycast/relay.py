"""Relaying an upstream stream to the client: the response body object, and the OpenAI passthrough.

The body object owns the open upstream response. Quart closes it (``aclose``) when the client goes away
or the stream ends, and the request's resource stack (``app.request_resources``) closes it as a
backstop in every other case, so that an upstream connection never outlives its client.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Protocol

import trio

from proxycast import models, sse
from proxycast._json import parse_object, replace_value
from proxycast.errors import (
    ProxycastError,
    UpstreamUnavailableError,
    anthropic_error_body,
    openai_error_body,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

_DRAIN_SECONDS = 1.0


class Translator(Protocol):
    """Turns upstream body bytes into client frames; pure and synchronous."""

    def feed(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes:
        """The upstream body ended: the closing frames, or an error frame if it ended too soon."""
        ...

    def fail(self, error: ProxycastError) -> bytes:
        """The upstream failed mid-stream: an error frame in the client's dialect."""
        ...

    @property
    def finished(self) -> bool:
        """True once the client has been sent a complete stream (or an error) and nothing may follow."""
        ...


class Relay:
    """The streamed response body: upstream pieces in, translated frames out, one send per piece."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        translator: Translator,
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self._chunks = chunks
        self._translator = translator
        self._close = close
        self._done = False

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        while not self._done:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                out = self._translator.end()
                self._done = True
            except ProxycastError as error:
                out = self._translator.fail(error)
                self._done = True
            else:
                out = self._translator.feed(chunk)
                self._done = self._translator.finished
            if out:
                return out
        await self._drain()
        raise StopAsyncIteration

    async def _drain(self) -> None:
        """Read what the upstream still sends after the end (its chunked terminator, normally), so that
        its generators finish instead of being abandoned; an upstream that lingers is cut."""
        with trio.move_on_after(_DRAIN_SECONDS):
            try:
                async for _ in self._chunks:
                    pass
            except ProxycastError:
                pass
        await self.aclose()

    async def aclose(self) -> None:
        self._done = True
        await self._close()


def cut_off_error(provider: str, what: str) -> UpstreamUnavailableError:
    return UpstreamUnavailableError(
        f"Provider {provider!r} ended the stream before the {what} was finished."
    )


def openai_error_frame(error: ProxycastError) -> bytes:
    return sse.encode(json.dumps(openai_error_body(error)))


class _Passthrough:
    """Same format both ends: events forwarded one by one as they arrive, comments (keep-alives) too.

    Subclasses turn one event into its frame (:meth:`_event`, which sets :attr:`finished` at the
    format's end marker) and say how the format reports an error (:meth:`fail`).
    """

    def __init__(self, client_model: str, provider_name: str) -> None:
        self._model = client_model
        self._provider = provider_name
        self._parser = sse.SSEParser()
        self.finished = False

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for item in self._parser.feed(chunk):
            if self.finished:
                break
            if isinstance(item, sse.Comment):
                out += sse.encode_comment(item.text)
            else:
                out += self._event(item)
        return bytes(out)

    def _event(self, event: sse.Event) -> bytes:
        raise NotImplementedError

    def _cut_off(self, what: str) -> bytes:
        """The stream ended before the format's end marker: an error, never a clean end."""
        return self.fail(cut_off_error(self._provider, what))

    def fail(self, error: ProxycastError) -> bytes:
        raise NotImplementedError


class OpenAIPassthrough(_Passthrough):
    """OpenAI SSE in, OpenAI SSE out: each event forwarded as it arrives, ``model`` renamed.

    A stream that ends without ``[DONE]`` and without a finish reason was cut off: the client gets an
    error frame, not a clean end. One that ends after a finish reason but without ``[DONE]`` (some
    OpenAI-compatible servers) gets the ``[DONE]`` it expects.
    """

    def __init__(self, client_model: str, provider_name: str) -> None:
        super().__init__(client_model, provider_name)
        self._saw_finish = False

    def _event(self, event: sse.Event) -> bytes:
        data = event.data
        if data == "[DONE]":
            self.finished = True
            return b"data: [DONE]\n\n"
        try:
            chunk = json.loads(data)  # C speed; the span-recording parse only when renaming
        except ValueError:
            return sse.encode(data.replace("\n", "\ndata: "))
        if not isinstance(chunk, dict):
            return sse.encode(data)
        if "error" in chunk:
            self.finished = True
            return sse.encode(data)
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self._saw_finish = True
        if chunk.get("model", self._model) != self._model:
            _, spans = parse_object(data)
            data = replace_value(data, spans["model"], self._model)
        return sse.encode(data)

    def end(self) -> bytes:
        if self.finished:
            return b""
        self.finished = True
        if self._saw_finish:
            return b"data: [DONE]\n\n"
        return self._cut_off("completion")

    def fail(self, error: ProxycastError) -> bytes:
        self.finished = True
        return openai_error_frame(error)


class Decoder(Protocol):
    """An upstream format's SSE events -> stream events (``codecs.<format>.StreamDecoder``)."""

    def feed(self, event: sse.Event) -> list[models.StreamEvent]: ...

    def end(self) -> list[models.StreamEvent]:
        """The upstream body ended: the events that closes (a format without an end marker)."""
        ...


class Encoder(Protocol):
    """Stream events -> the client's frames (``codecs.<format>.StreamEncoder``)."""

    finished: bool

    def encode(self, event: models.StreamEvent) -> bytes: ...

    def fail(self, error: Exception) -> bytes: ...


class Converting:
    """Another format in, the client's format out: SSE parser -> upstream decoder -> client encoder."""

    def __init__(self, decoder: Decoder, encoder: Encoder, provider_name: str) -> None:
        self._parser = sse.SSEParser()
        self._decoder = decoder
        self._encoder = encoder
        self._provider = provider_name

    @property
    def finished(self) -> bool:
        return self._encoder.finished

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for item in self._parser.feed(chunk):
            if isinstance(item, sse.Comment):
                continue
            for event in self._decoder.feed(item):
                out += self._encoder.encode(event)
            if self._encoder.finished:
                break
        return bytes(out)

    def end(self) -> bytes:
        out = b"".join(self._encoder.encode(e) for e in self._decoder.end())
        if self._encoder.finished:
            return out
        return out + self.fail(cut_off_error(self._provider, "completion"))

    def fail(self, error: ProxycastError) -> bytes:
        return self._encoder.fail(error)


class AnthropicPassthrough(_Passthrough):
    """Anthropic SSE in, Anthropic SSE out: every event forwarded as it arrives with its ``event:`` line
    (so that events Anthropic adds later pass too), the model in ``message_start`` renamed.

    A stream that ends without ``message_stop`` (or an ``error`` event) was cut off: the client gets an
    ``event: error`` rather than a clean end.
    """

    def _event(self, event: sse.Event) -> bytes:
        data = self._renamed(event.data) if event.event == "message_start" else event.data
        if event.event in ("message_stop", "error"):
            self.finished = True
        return sse.encode(data.replace("\n", "\ndata: "), event.event)

    def _renamed(self, data: str) -> str:
        try:
            start = json.loads(data)
            start["message"]["model"] = self._model
        except (ValueError, KeyError, TypeError):
            return data
        return json.dumps(start, ensure_ascii=False)

    def end(self) -> bytes:
        return b"" if self.finished else self._cut_off("message")

    def fail(self, error: ProxycastError) -> bytes:
        self.finished = True
        return sse.encode(json.dumps(anthropic_error_body(error)), "error")
