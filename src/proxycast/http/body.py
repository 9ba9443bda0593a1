"""What the inbound routes share: reading a request body."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from proxycast.errors import InvalidRequestError, NotAnObjectError, RejectedJSONError
from proxycast.formats.json_spans import parse_object

if TYPE_CHECKING:
    from collections.abc import Callable


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
    return await trio.to_thread.run_sync(work)
