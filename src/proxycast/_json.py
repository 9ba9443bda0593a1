"""JSON helpers for forwarding bodies without re-serialising them.

Same format in and out, the body goes upstream as the client wrote it, except for the ``model`` value.
:func:`parse_object` parses a top-level object once and records where each top-level value lies in the
text, so that :func:`replace_value` can swap one value and leave every other byte as it was.
"""

from __future__ import annotations

import json
from typing import Any

_decoder = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


class NotAnObjectError(ValueError):
    pass


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def parse_object(text: str) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Parse a JSON object; also return the (start, end) span of each top-level value.

    Raises:
        json.JSONDecodeError: not valid JSON.
        NotAnObjectError: valid JSON, but not an object.
    """
    index = _skip(text, 0)
    if not text.startswith("{", index):
        value = json.loads(text)  # raises JSONDecodeError for invalid JSON
        raise NotAnObjectError(type(value).__name__)
    result: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    index = _skip(text, index + 1)
    if text.startswith("}", index):
        _trailing(text, index + 1)
        return result, spans
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, index
            )
        key, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
        index = _skip(text, index)
        if not text.startswith(":", index):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
        start = _skip(text, index + 1)
        value, end = _decoder.raw_decode(text, start)
        result[key] = value
        spans[key] = (start, end)
        index = _skip(text, end)
        if text.startswith(",", index):
            index = _skip(text, index + 1)
            continue
        if text.startswith("}", index):
            _trailing(text, index + 1)
            return result, spans
        raise json.JSONDecodeError("Expecting ',' delimiter", text, index)


def _trailing(text: str, index: int) -> None:
    index = _skip(text, index)
    if index != len(text):
        raise json.JSONDecodeError("Extra data", text, index)


def replace_value(text: str, span: tuple[int, int], value: Any) -> str:
    """``text`` with the value at ``span`` replaced by ``value`` serialised."""
    start, end = span
    return text[:start] + json.dumps(value, ensure_ascii=False) + text[end:]
