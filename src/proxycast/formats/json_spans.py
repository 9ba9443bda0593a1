"""JSON helpers for forwarding bodies without re-serialising them.

Same format in and out, the body goes upstream as the client wrote it, except for the ``model`` value.
:func:`parse_object` parses a top-level object once and records where each top-level value lies in the
text, so that :func:`replace_value` can swap one value and leave every other byte as it was.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any, cast

from proxycast.errors import NotAnObjectError, RejectedJSONError

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_DEPTH = 128
"""Deepest nesting of arrays and objects accepted in a body. LLM requests nest a few levels, plus their
JSON schemas (OpenAI's structured outputs allow 10 levels of them); Python's parser fails near 1,000."""


def _no_constants(name: str) -> Any:
    raise RejectedJSONError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise RejectedJSONError(f"the number {text[:40]} is too large for a double")
    return value


_decoder = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite)

_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined] # the C scanner


def loads_event(text: str) -> Any:
    """``json.loads(text)`` for a stream event's data: the C scanner called directly when the text is
    one JSON value with nothing around it, as providers write them (``json.loads`` is three Python
    calls around it, for every event of every stream); anything else goes to ``json.loads``."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(
            text
        )  # raises the parser's own error, or parses what has whitespace first
    if end != len(text):
        return json.loads(text)
    return value


dumps_text = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(value, ensure_ascii=False)`` with one encoder for every call (``json.dumps`` with
an argument builds an encoder each time: a measurable part of a converted stream's cost per chunk)."""
_WHITESPACE_RUN = cast("Callable[[str, int], re.Match[str]]", re.compile(r"[ \t\n\r]*").match)
"""The run of whitespace at an index (``*`` matches there always: never None)."""
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check(value: Any, text: str) -> None:
    """Nesting no deeper than :data:`MAX_DEPTH`; no lone surrogate (not encodable as UTF-8).

    Each walk runs only when the text could hold the problem: enough brackets, a surrogate escape.
    """
    deep = text.count("[") + text.count("{") > MAX_DEPTH
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    if not (deep or surrogates):
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RejectedJSONError(f"it is nested more than {MAX_DEPTH} levels deep")
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            if surrogates:
                for text_value in (key, child):
                    if isinstance(text_value, str) and not text_value.isascii():
                        try:
                            text_value.encode("utf-8")
                        except UnicodeEncodeError:
                            raise RejectedJSONError(
                                "it holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
                                "which no UTF-8 text can"
                            ) from None
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


def parse_object(text: str) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Parse a JSON object; also return the (start, end) span of each top-level value.

    Raises:
        json.JSONDecodeError: not valid JSON.
        NotAnObjectError: valid JSON, but not an object.
        RejectedJSONError: NaN or Infinity, a number too large, nesting deeper than
            :data:`MAX_DEPTH`, a lone surrogate, or a top-level key given twice.
    """
    try:
        result, spans = _parse_object(text)
    except RecursionError:
        raise RejectedJSONError(f"it is nested more than {MAX_DEPTH} levels deep") from None
    except (json.JSONDecodeError, NotAnObjectError, RejectedJSONError):
        raise
    except ValueError as exc:  # an integer of more than 4,300 digits (sys.set_int_max_str_digits)
        raise RejectedJSONError(f"it holds a number that is too long ({exc})") from None
    _check(result, text)
    return result, spans


def _parse_object(text: str) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    index = _WHITESPACE_RUN(text, 0).end()
    if not text.startswith("{", index):
        value = _decoder.decode(text)  # raises JSONDecodeError for invalid JSON
        raise NotAnObjectError(type(value).__name__)
    result: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    index = _WHITESPACE_RUN(text, index + 1).end()
    if text.startswith("}", index):
        _trailing(text, index + 1)
        return result, spans
    while True:
        if not text.startswith('"', index):
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, index
            )
        key, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
        index = _WHITESPACE_RUN(text, index).end()
        if not text.startswith(":", index):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
        start = _WHITESPACE_RUN(text, index + 1).end()
        value, end = _decoder.raw_decode(text, start)
        if key in result:
            # which one counts is a guess: routing would use one, an upstream perhaps the other
            raise RejectedJSONError(f"the key {key[:100]!r} appears twice")
        result[key] = value
        spans[key] = (start, end)
        index = _WHITESPACE_RUN(text, end).end()
        if text.startswith(",", index):
            index = _WHITESPACE_RUN(text, index + 1).end()
            continue
        if text.startswith("}", index):
            _trailing(text, index + 1)
            return result, spans
        raise json.JSONDecodeError("Expecting ',' delimiter", text, index)


def _trailing(text: str, index: int) -> None:
    index = _WHITESPACE_RUN(text, index).end()
    if index != len(text):
        raise json.JSONDecodeError("Extra data", text, index)


_MODEL_KEY = re.compile(r'"model"\s*:\s*')


def model_span(text: str) -> tuple[int, int]:
    """The span of the top-level ``model`` value of ``text``, a JSON object that has one.

    A scan (C speed) finds it when ``"model":`` occurs once in the text: an unescaped quote cannot
    occur inside a JSON string, so the one occurrence is the top-level key. Otherwise (a nested
    object with a ``model`` key too, say) :func:`parse_object` tells.
    """
    found = _MODEL_KEY.finditer(text)
    first = next(found, None)
    if first is not None and next(found, None) is None:
        start = first.end()
        return start, _decoder.raw_decode(text, start)[1]
    return parse_object(text)[1]["model"]


def parse_answer(text: str) -> dict[str, Any]:
    """An upstream's JSON object, parsed at C speed, with :func:`parse_object`'s checks but the
    one on repeated top-level keys (which matters for a request routed by its ``model``, not for
    an answer).

    Raises:
        json.JSONDecodeError: not valid JSON.
        NotAnObjectError: valid JSON, but not an object.
        RejectedJSONError: NaN or Infinity, a number too large, nesting deeper than
            :data:`MAX_DEPTH`, or a lone surrogate.
    """
    try:
        value = _decoder.decode(text)
    except RecursionError:
        raise RejectedJSONError(f"it is nested more than {MAX_DEPTH} levels deep") from None
    except (json.JSONDecodeError, RejectedJSONError):
        raise
    except ValueError as exc:  # an integer of more than 4,300 digits (sys.set_int_max_str_digits)
        raise RejectedJSONError(f"it holds a number that is too long ({exc})") from None
    if not isinstance(value, dict):
        raise NotAnObjectError(type(value).__name__)
    _check(value, text)
    return value


def replace_value(text: str, span: tuple[int, int], value: Any) -> str:
    """``text`` with the value at ``span`` replaced by ``value`` serialised."""
    start, end = span
    return text[:start] + dumps_text(value) + text[end:]
