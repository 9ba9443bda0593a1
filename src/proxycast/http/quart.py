"""Answers for the routes Quart serves (the dashboard, ``/health``, ``/metrics``, errors there)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response

from proxycast.core.answer import json_answer

if TYPE_CHECKING:
    from proxycast.core.answer import Answer


def to_quart(answer: Answer) -> Response:
    """``answer`` as Quart's response."""
    response = Response(answer.body, status=answer.status, headers=answer.headers)
    if not isinstance(answer.body, bytes):
        response.timeout = None  # a stream lasts as long as the model writes
    return response


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer for a route Quart serves."""
    return to_quart(json_answer(body, status, headers))
