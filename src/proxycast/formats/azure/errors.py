"""Azure's error bodies: OpenAI's shape, ``code`` often a status as a string (``"401"``), and an
``innererror`` when the content filter refused the prompt (``code: "content_filter"``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from proxycast.formats.openai import errors as openai

if TYPE_CHECKING:
    from proxycast.errors import ErrorInfo


def filtered(result: Any) -> list[str]:
    """The categories a ``content_filter_result`` marks as filtered (``violence (medium)``)."""
    if not isinstance(result, dict):
        return []
    found = []
    for category, verdict in result.items():
        if isinstance(verdict, dict) and verdict.get("filtered") is True:
            severity = verdict.get("severity")
            found.append(f"{category} ({severity})" if isinstance(severity, str) else category)
    return found


def error_info(body: Any) -> ErrorInfo | None:
    """What an Azure error body says; a content filter's refusal names the categories at fault."""
    info = openai.error_info(body)
    if info is None:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    inner = error.get("innererror") if isinstance(error, dict) else None
    categories = filtered(inner.get("content_filter_result")) if isinstance(inner, dict) else []
    if categories:
        info = attrs.evolve(info, message=f"{info.message} (filtered: {', '.join(categories)})")
    return info
