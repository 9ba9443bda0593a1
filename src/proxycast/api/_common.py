"""What the inbound routes share: reading a request body."""

from __future__ import annotations

import json
from typing import Any

from proxycast._json import NotAnObjectError, parse_object
from proxycast.errors import InvalidRequestError


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
    return text, body, spans
