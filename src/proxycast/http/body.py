"""What the inbound routes share: reading a request body."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from proxycast.errors import InvalidRequestError, NotAnObjectError, RejectedJSONError
from proxycast.formats.contracts import LET_GO
from proxycast.formats.json_spans import parse_object

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from proxycast.formats.contracts import InboundRequest


def parse_body(raw: bytes) -> tuple[str, dict[str, Any], dict[str, tuple[int, int]]]:
    """The body's text, its top-level object and value spans; 400 when it is not a JSON object."""
    try:
        text = raw.decode("utf-8")
        body, spans = parse_object(text)
    except UnicodeDecodeError:
        raise InvalidRequestError("The request body is not valid UTF-8.") from None
    except NotAnObjectError as exc:
        raise InvalidRequestError(
            f"The request body must be a JSON object, not a JSON {exc}."
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"The request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})."
        ) from None
    except RejectedJSONError as exc:
        raise InvalidRequestError(f"The request body is refused: {exc}.") from None
    return text, body, spans


OFF_LOOP_BYTES = 256 * 1024
"""Bodies larger than this are parsed and validated in a worker thread, not on the event loop."""

T = TypeVar("T")


async def parse_and_validate(
    raw: bytes, validate: Callable[[str, dict[str, Any], dict[str, tuple[int, int]]], T]
) -> T:
    """:func:`parse_body`, then ``validate(text, body, spans)``: in a worker thread for a large body,
    so that a costly one (a million invalid items) does not stall every other client."""

    def work() -> T:
        text, body, spans = parse_body(raw)
        return validate(text, body, spans)

    if len(raw) <= OFF_LOOP_BYTES:
        return work()
    # one at a time: a parse holds a body's text and objects beside its bytes (twice the body, or
    # more), and threads do not parse faster side by side (the parser holds the GIL)
    return await trio.to_thread.run_sync(work, limiter=_PARSING)


_PARSING = trio.CapacityLimiter(1)

HOLD_ONCE_BYTES = 1024 * 1024
"""Bodies at least this large are held once, as their bytes (:func:`held_once`)."""


def held_once(
    request: InboundRequest, raw: bytes, reread: Callable[[], Any] | None = None
) -> InboundRequest:
    """``request`` holding its body as the ``raw`` bytes received, not also as text or objects,
    when it is large: its dialect forwards slices of the bytes (spans made byte offsets), and
    nothing keeps a decoded copy of the body for as long as the upstream takes.

    Args:
        request: as its dialect read it.
        raw: the body it was read from.
        reread: reads ``raw`` into the request's ``parsed`` again, for a request converted after
            all (a fallback to another format); without it the parsed request is kept.
    """
    if len(raw) < HOLD_ONCE_BYTES or not request.text:
        return request
    spans = request.spans if raw.isascii() else _byte_spans(request.text, request.spans)
    parsed = request.parsed
    if reread is not None and parsed is not None:  # one that failed validation stays as it is
        parsed = LET_GO
    return attrs.evolve(request, text="", raw=raw, spans=spans, parsed=parsed, reread=reread)


def _byte_spans(text: str, spans: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """``spans`` (offsets into ``text``) as offsets into its UTF-8 bytes, each stretch between two
    offsets encoded once (not the whole text at once)."""
    offsets = {0: 0}
    chars = size = 0
    for index in sorted({i for span in spans.values() for i in span}):
        size += len(text[chars:index].encode("utf-8"))
        chars = index
        offsets[index] = size
    return {key: (offsets[start], offsets[end]) for key, (start, end) in spans.items()}
