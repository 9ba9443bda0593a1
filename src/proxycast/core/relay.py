"""Relaying an upstream stream to the client: the response body object, and the two kinds of
translator it runs (a passthrough, or a decoder and an encoder composed).

The body object owns the open upstream response. Quart closes it (``aclose``) when the client goes away
or the stream ends, and the request's resource stack (``exchange.request_resources``) closes it as a
backstop in every other case, so that an upstream connection never outlives its client.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from proxycast.errors import NotAnObjectError, ProxycastError, UpstreamUnavailableError
from proxycast.formats import internal, sse
from proxycast.formats.json_spans import model_span, parse_answer, replace_value

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

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
                out = self._translator.feed(chunk)
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


def read_forwarded(data: bytes, model: str, provider: str) -> tuple[bytes, dict[str, Any]]:
    """A forwarded answer with ``model`` set to the name the client asked for, and the answer as
    parsed (read once, for its usage too).

    Raises:
        UpstreamUnavailableError: the answer is not a JSON object (a proxy's HTML page, say), which
            no client of a JSON API can read: a 502 naming the provider, as on converted routes.
    """
    try:
        text = data.decode("utf-8")
        answer = parse_answer(text)
        if "model" not in answer or answer["model"] == model:
            return data, answer
        span = model_span(text)  # a repeated "model" key: the span parser refuses it
    except (ValueError, NotAnObjectError):
        raise UpstreamUnavailableError(
            f"Provider {provider!r} answered with a body that is not a JSON object."
        ) from None
    return replace_value(text, span, model).encode(), answer


def cut_off_error(provider: str, what: str) -> UpstreamUnavailableError:
    return UpstreamUnavailableError(
        f"Provider {provider!r} ended the stream before the {what} was finished."
    )


class Passthrough:
    """Same format both ends: events forwarded one by one as they arrive, comments (keep-alives) too.

    Subclasses turn one event into its frame (:meth:`_event`, which sets :attr:`finished` at the
    format's end marker) and say how the format reports an error (:meth:`fail`).
    """

    def __init__(
        self, client_model: str, provider_name: str, redact: Callable[[str], str] = str
    ) -> None:
        self._model = client_model
        self._provider = provider_name
        self._redact = redact
        """Applied to the upstream's error events, which may echo the request's credentials."""
        self._parser = sse.SSEParser()
        self.finished = False
        self.started = False
        """True once an event beyond the opening ones (content, a tool call, the finish) was seen."""
        self.error: ProxycastError | None = None
        """The upstream's error, when it reported one (or the stream was cut off)."""
        self.usage: internal.Usage | None = None
        """The usage the stream reported so far (subclasses read it from their events)."""

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for item in self._parser.feed_raw(chunk):
            if self.finished:
                break
            if isinstance(item, bytes):
                out += self._data(item)
            elif isinstance(item, sse.Comment):
                out += sse.encode_comment(item.text)
            else:
                out += self._event(item)
        return bytes(out)

    def _data(self, data: bytes) -> bytes:
        """The frame of a one-line ``data:`` event (its data undecoded); formats whose events can be
        told apart by a scan of the bytes forward most of them without a parse."""
        return self._event(sse.Event(data.decode("utf-8", "replace")))

    def _event(self, event: sse.Event) -> bytes:
        raise NotImplementedError

    def _cut_off(self, what: str) -> bytes:
        """The stream ended before the format's end marker: an error, never a clean end."""
        self.error = cut_off_error(self._provider, what)
        return self.fail(self.error)

    def fail(self, error: ProxycastError) -> bytes:
        raise NotImplementedError


class Converting:
    """Another format in, the client's format out: the upstream's decoder, then the client's encoder."""

    def __init__(
        self,
        decoder: StreamDecoder,
        encoder: StreamEncoder,
        provider_name: str,
        redact: Callable[[str], str] = str,
    ) -> None:
        self._decoder = decoder
        self._encoder = encoder
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
