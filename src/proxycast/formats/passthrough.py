"""What every format's same-format passthrough shares: a forwarded answer read for its model and usage,
and the base of the stream relays that forward an upstream's events one by one (each format's
``passthrough.py`` subclasses it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxycast.errors import NotAnObjectError, ProxycastError, UpstreamUnavailableError
from proxycast.formats import internal, sse
from proxycast.formats.json_spans import model_span, parse_answer, replace_value

if TYPE_CHECKING:
    from collections.abc import Callable


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
        self.content_type = "text/event-stream"
        """The framing of the client's stream (a subclass may relay in another)."""
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
