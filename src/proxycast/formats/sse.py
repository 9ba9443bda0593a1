"""Server-sent events: an incremental parser (bytes in, events out) and an encoder.

The parser follows the WHATWG event-stream rules that matter to LLM APIs: lines end in CRLF, LF or CR;
``data`` lines of one event are joined with LF; ``event`` names the event; lines starting with ``:`` are
comments; a blank line ends the event. Input may be split at any byte, including inside a UTF-8
sequence or between CR and LF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from proxycast.formats import internal


@attrs.frozen
class Event:
    data: str
    event: str = "message"
    id: str | None = None


@attrs.frozen
class Comment:
    """A comment line (``: keep-alive``): relayed so that clients see the upstream is alive."""

    text: str


class SSEParser:
    """Feed bytes with :meth:`feed`, get the events they complete."""

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # pieces of a line whose end has not arrived yet
        self._pending_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[Event | Comment]:
        """The events ``chunk`` completes (see :meth:`feed_raw`)."""
        return self.feed_raw(chunk, raw=False)  # type: ignore[return-value]

    def feed_raw(self, chunk: bytes, raw: bool = True) -> list[Event | Comment | bytes]:
        """The events ``chunk`` completes; with ``raw``, a one-line ``data:`` event is given as the
        bytes of its data (undecoded: a relay that forwards it as it came need not decode it).

        Complete events in the usual shapes (``data: X`` or
        ``event: E`` then ``data: X``, LF line ends) are found by splitting the bytes on blank
        lines; the event in progress at either end of the chunk, and any other shape, go through
        the line parser (:meth:`lines`). The same events either way (a property test feeds both),
        the split at a fraction of the line parser's cost."""
        if self._pending_cr or b"\r" in chunk:
            return self.lines(chunk)  # type: ignore[return-value]
        out: list[Event | Comment | bytes] = []
        start = 0
        if self.has_partial_event:  # finish the event in progress, line by line
            if not self._partial and chunk.startswith(b"\n"):
                start = 1  # its last line is complete: this LF is the blank line that ends it
            else:
                blank = chunk.find(b"\n\n")
                if blank == -1:
                    return self.lines(chunk)  # type: ignore[return-value]
                start = blank + 2
            out += self.lines(chunk[:start])
            if self.has_partial_event:
                return out + self.lines(chunk[start:])
        last = chunk.rfind(b"\n\n", start)
        if last != -1:
            end = last + 2
            for block in chunk[start : end - 2].split(b"\n\n"):
                if block.startswith(b"data: ") and b"\n" not in block:
                    if raw:
                        out.append(block[6:])
                    else:
                        out.append(Event(block[6:].decode("utf-8", "replace"), "message", self._id))
                elif block.startswith(b"event: ") and block.count(b"\n") == 1:
                    name, _, data = block.partition(b"\n")
                    if data.startswith(b"data: ") and name[7:]:
                        out.append(
                            Event(
                                data[6:].decode("utf-8", "replace"),
                                name[7:].decode("utf-8", "replace"),
                                self._id,
                            )
                        )
                    else:
                        out += self.lines(block + b"\n\n")
                elif block:
                    out += self.lines(block + b"\n\n")
            start = end
        if start < len(chunk):
            out += self.lines(chunk[start:])
        return out

    def lines(self, chunk: bytes) -> list[Event | Comment]:
        """The events ``chunk`` completes, parsed line by line. Linear in the bytes fed: a line
        that arrives in many pieces is kept as a list of them and joined once, when its end
        arrives."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across two chunks
        self._pending_cr = False
        out: list[Event | Comment] = []
        start = 0
        length = len(chunk)
        while start < length:
            lf = chunk.find(b"\n", start)
            cr = chunk.find(b"\r", start, lf if lf != -1 else length)
            if cr != -1:
                end, next_start = cr, cr + 1
                if next_start < length:
                    if chunk[next_start] == 0x0A:
                        next_start += 1
                else:
                    self._pending_cr = True
            elif lf != -1:
                end, next_start = lf, lf + 1
            else:
                break
            line = chunk[start:end]
            if self._partial:
                line = b"".join([*self._partial, line])
                self._partial = []
            self._line(line.decode("utf-8", "replace"), out)
            start = next_start
        if start < length:
            self._partial.append(chunk[start:])
        return out

    @property
    def has_partial_event(self) -> bool:
        """True when bytes of an event that was never completed have been received."""
        return bool(self._partial or self._data or self._event)

    def _line(self, line: str, out: list[Event | Comment]) -> None:
        if not line:
            if self._data or self._event:
                out.append(Event("\n".join(self._data), self._event or "message", self._id))
            self._data = []
            self._event = ""
            return
        if line.startswith(":"):
            out.append(Comment(line[1:].lstrip(" ")))
            return
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            self._id = value
        # `retry` and unknown fields are ignored, as the spec says


def encode(data: str, event: str | None = None) -> bytes:
    """One SSE frame. ``data`` must not contain a newline (JSON from ``json.dumps`` never does)."""
    if event is None:
        return b"data: " + data.encode() + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data.encode() + b"\n\n"


def encode_comment(text: str) -> bytes:
    return b": " + text.encode() + b"\n\n"


class EventDecoder:
    """Base of the stream decoders of SSE formats: bytes in (as they arrive), parsed into events, each
    handed to :meth:`event`; comments (keep-alives) carry nothing to decode."""

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[internal.StreamEvent]:
        out: list[internal.StreamEvent] = []
        for item in self._parser.feed(chunk):
            if isinstance(item, Event):
                out += self.event(item)
        return out

    def event(self, event: Event) -> list[internal.StreamEvent]:
        raise NotImplementedError

    def end(self) -> list[internal.StreamEvent]:
        return []


class EventSizes:
    """Tracks the size of the SSE event being received, across chunks, in constant work per byte
    (the framing's size limit, ``server.max_event_bytes``, for every SSE upstream format).

    An event ends at a blank line: two line ends in a row (``\n\n``, ``\r\n\r\n``, ``\r\r``).
    """

    _BLANK_LINES = (b"\n\n", b"\r\r", b"\r\n\r\n")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._tail = b""  # the last bytes of the previous chunk: a blank line may straddle two

    def fits(self, chunk: bytes) -> bool:
        """Account for ``chunk``; False once the event being received is larger than the limit."""
        window = self._tail + chunk
        end = -1  # where the last complete event ends in the window
        for blank in self._BLANK_LINES:
            found = window.rfind(blank)
            if found != -1:
                end = max(end, found + len(blank))
        self._size = len(window) - end if end != -1 else self._size + len(chunk)
        self._tail = window[-3:]
        return self._size <= self._limit
