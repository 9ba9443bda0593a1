"""AWS's binary event stream (``application/vnd.amazon.eventstream``): the framing of Bedrock's
ConverseStream and InvokeModelWithResponseStream answers.

A frame (a "message") is a 12-byte prelude (its total length, the length of its headers, both
big-endian 32-bit, and the CRC32 of those 8 bytes), its headers (each: a 1-byte name length, the
name, a 1-byte value type, the value), its payload (JSON for Bedrock), and the CRC32 of everything
before it. Frames arrive cut anywhere by the network, so :class:`FrameDecoder` keeps what it has
not yet framed; a frame whose CRC does not match is a corrupt stream, reported, never a crash.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Mapping
from types import MappingProxyType

import attrs

PRELUDE = 12
"""Bytes before the headers: total length, headers length, prelude CRC."""
MIN_FRAME = PRELUDE + 4
"""An empty frame: the prelude and the message CRC."""
MAX_FRAME = 16 * 1024 * 1024
"""The largest frame AWS's own decoders accept (botocore's ``_MAX_PAYLOAD_LENGTH`` is 16 MiB)."""

_STRING = 7
_BYTES = 6
# fixed-size value types: bool true, bool false, byte, short, int, long, timestamp, uuid
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class FrameError(ValueError):
    """The stream is not a valid event stream (a CRC mismatch, an impossible length)."""


@attrs.frozen
class Frame:
    """One event-stream message: its string headers and its payload."""

    headers: Mapping[str, str]
    payload: bytes

    @property
    def message_type(self) -> str:
        """``event``, ``exception`` (a modelled error: throttling...) or ``error``."""
        return self.headers.get(":message-type", "event")

    @property
    def event_type(self) -> str:
        """The event's name (``contentBlockDelta``, ``chunk``), or the exception's
        (``throttlingException``) or error code of a failure frame."""
        return (
            self.headers.get(":event-type")
            or self.headers.get(":exception-type")
            or self.headers.get(":error-code")
            or ""
        )


def _crc(data: bytes | bytearray, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


def encode_frame(headers: dict[str, str], payload: bytes, *, corrupt: bool = False) -> bytes:
    """A frame with string headers (what Bedrock sends); ``corrupt`` spoils its message CRC."""
    encoded = b"".join(
        struct.pack(">B", len(name.encode()))
        + name.encode()
        + struct.pack(">BH", _STRING, len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    total = PRELUDE + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", _crc(prelude))
    body = prelude + encoded + payload
    crc = _crc(body) ^ (0xFFFFFFFF if corrupt else 0)
    return body + struct.pack(">I", crc)


@functools.lru_cache(maxsize=256)
def _headers(data: bytes) -> Mapping[str, str]:
    """A frame's string headers. Cached: a stream's frames repeat a handful of header sets (one per
    event type), and reading them byte by byte was the decoder's largest cost (profiled)."""
    headers: dict[str, str] = {}
    at = 0
    while at < len(data):
        size = data[at]
        name = data[at + 1 : at + 1 + size].decode("utf-8", "replace")
        at += 1 + size
        if at >= len(data):
            raise FrameError("a header without a value type")
        kind = data[at]
        at += 1
        if kind in (_STRING, _BYTES):
            (length,) = struct.unpack_from(">H", data, at)
            value = data[at + 2 : at + 2 + length]
            at += 2 + length
            if kind == _STRING:
                headers[name] = value.decode("utf-8", "replace")
        elif kind in _FIXED:
            at += _FIXED[kind]
        else:
            raise FrameError(f"unknown header value type {kind}")
        if at > len(data):
            raise FrameError("a header longer than the headers")
    return MappingProxyType(headers)


class FrameDecoder:
    """Bytes in as they arrive, whole frames out.

    A corrupt stream sets :attr:`error` (the frames before it are returned); the stream is over
    then: nothing that follows can be framed with confidence.
    """

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._need = PRELUDE  # bytes the next frame needs before it can be read
        self.error: FrameError | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a frame (a stream that ends with some was cut)."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[Frame]:
        if self.error is not None:
            return []
        self._buffer += chunk
        frames: list[Frame] = []
        if len(self._buffer) < self._need:  # the frame still arriving: nothing to read again
            return frames
        try:
            self._frames(frames)
        except FrameError as exc:
            self.error = exc
            self._buffer.clear()
        return frames

    def _frames(self, frames: list[Frame]) -> None:
        buffer = self._buffer
        at = 0  # frames are read from the buffer in place, and dropped from it once, at the end
        try:
            while len(buffer) - at >= PRELUDE:
                total, header_size, prelude_crc = struct.unpack_from(">III", buffer, at)
                if _crc(buffer[at : at + 8]) != prelude_crc:
                    raise FrameError("an event-stream frame whose prelude CRC does not match")
                if total < MIN_FRAME or total > self._limit or header_size > total - MIN_FRAME:
                    raise FrameError(f"an event-stream frame of impossible length {total}")
                if len(buffer) - at < total:
                    self._need = total
                    return
                frame = bytes(buffer[at : at + total])
                at += total
                (message_crc,) = struct.unpack_from(">I", frame, total - 4)
                if _crc(frame[: total - 4]) != message_crc:
                    raise FrameError("an event-stream frame whose message CRC does not match")
                headers = _headers(frame[PRELUDE : PRELUDE + header_size])
                frames.append(Frame(headers, frame[PRELUDE + header_size : total - 4]))
            self._need = PRELUDE
        finally:
            del buffer[:at]


class FrameSizes:
    """The size limit of one frame (``server.max_event_bytes``), checked from each prelude as the
    bytes go by, without keeping them: the relay's guard against an endless event."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._left = 0  # bytes of the current frame still to come
        self._prelude = bytearray()  # the first bytes of a frame whose length is not known yet

    def fits(self, chunk: bytes) -> bool:
        view = memoryview(chunk)
        while view:
            if self._left:
                step = min(self._left, len(view))
                self._left -= step
                view = view[step:]
                continue
            need = 4 - len(self._prelude)
            self._prelude += view[:need]
            view = view[need:]
            if len(self._prelude) < 4:
                break
            (total,) = struct.unpack(">I", self._prelude)
            self._prelude.clear()
            if total > self._limit:
                return False
            self._left = max(0, total - 4)
        return True
