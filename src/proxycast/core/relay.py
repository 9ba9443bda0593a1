"""Relaying an upstream stream to the client: the response body object, and the translator that
converts (a decoder and an encoder composed); a passthrough translator is its format's
(``formats/passthrough.py`` and each format's ``passthrough.py``).

The body object owns the open upstream response. Quart closes it (``aclose``) when the client goes away
or the stream ends, and the request's resource stack (``exchange.request_resources``) closes it as a
backstop in every other case, so that an upstream connection never outlives its client.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from proxycast.errors import ProxycastError
from proxycast.formats import internal
from proxycast.formats.passthrough import cut_off_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from proxycast.core.signatures import StreamedText
    from proxycast.formats.contracts import StreamDecoder, StreamEncoder, Translator

_DRAIN_SECONDS = 1.0
log = logging.getLogger("proxycast")


class Relay:
    """The streamed response body: upstream pieces in, translated frames out, one send per piece."""

    __slots__ = ("_chunks", "_close", "_done", "_first", "_on_end", "_translator")

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        translator: Translator,
        close: Callable[[], Awaitable[None]],
        first: bytes = b"",
        on_end: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._chunks = chunks
        self._translator = translator
        self._close = close
        self._first = first
        """Frames translated before the answer was committed to (held back until content came)."""
        self._done = translator.finished
        self._on_end = on_end
        """Awaited once the stream's end is known, before its last frames go out (the accounting
        settles the request's usage then, so a client's next request sees it)."""

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            if self._done:
                await self._ended()
            return first
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
                try:
                    out = self._translator.feed(chunk)
                except Exception:  # a bug met by an upstream's odd bytes: an error frame
                    log.exception("translating an upstream stream failed")
                    failure = ProxycastError("Internal error in proxycast; see its log.")
                    out = self._translator.fail(failure)
                    self._done = True
                else:
                    self._done = self._translator.finished
            if self._done:
                await self._ended()
            if out:
                return out
        await self._ended()
        await self._drain()
        raise StopAsyncIteration

    async def _ended(self) -> None:
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            try:
                await on_end()
            except Exception:  # accounting must never cut a client's stream; the end retries it
                log.exception("settling a stream's usage failed")

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


class Converting:
    """Another format in, the client's format out: the upstream's decoder, then the client's encoder."""

    def __init__(
        self,
        decoder: StreamDecoder,
        encoder: StreamEncoder,
        provider_name: str,
        redact: Callable[[str], str] = str,
        texts: StreamedText | None = None,
    ) -> None:
        self._decoder = decoder
        self._encoder = encoder
        self._texts = texts
        """Remembers the signed text parts going by (``core.signatures``)."""
        self.content_type: str = getattr(encoder, "content_type", "text/event-stream")
        """The framing of the client's stream (SSE; Google's JSON array is JSON)."""
        self._provider = provider_name
        self._redact = redact
        self.started = False
        """True once an event beyond the start (content, a tool call, the finish) was seen."""
        self.error: ProxycastError | None = None
        """The upstream's error, when it reported one (or the stream was cut off)."""
        self.usage: internal.Usage | None = None
        """The usage of the last ``Start`` or ``Finish`` decoded (for the accounting); for a
        stream that failed before its finish, the output streamed, estimated."""
        self._written = 0
        """Characters of output streamed, and in how many deltas (for that estimate)."""
        self._deltas = 0
        self._finish = False

    @property
    def finished(self) -> bool:
        return self._encoder.finished

    def _count(self, event: internal.StreamEvent) -> None:
        if self._texts is not None:
            self._texts.see(event)
        if isinstance(event, (internal.Start, internal.Finish)):
            self.usage = event.usage
            self._finish = self._finish or isinstance(event, internal.Finish)
        elif isinstance(event, (internal.TextDelta, internal.ReasoningDelta)):
            self._written += len(event.text)
            self._deltas += 1
        elif isinstance(event, internal.ToolArgsDelta):
            self._written += len(event.fragment)
            self._deltas += 1

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for event in self._decoder.feed(chunk):
            self._count(event)
            if isinstance(event, internal.Failure):
                if isinstance(event.error, ProxycastError):
                    event.error.message = self._redact(event.error.message)  # upstream text
                    self.error = event.error
            elif not isinstance(event, internal.Start):
                self.started = True
            out += self._encoder.encode(event)
            if self._encoder.finished:
                break
        return bytes(out)

    def end(self) -> bytes:
        events = self._decoder.end()
        for event in events:
            self._count(event)
        self.started = self.started or bool(events)
        out = b"".join(self._encoder.encode(e) for e in events)
        if self._encoder.finished:
            return out
        self.error = cut_off_error(self._provider, "completion")
        return out + self.fail(self.error)

    def fail(self, error: ProxycastError) -> bytes:
        self.error = self.error or error  # what the client is told: the accounting records it
        if not self._finish and self._deltas:  # no usage will come: the output streamed, estimated
            output = internal.estimated_tokens(self._written, self._deltas)
            self.usage = internal.Usage(output=output, estimated=True)
        return self._encoder.fail(error)
