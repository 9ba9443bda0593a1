"""What a route answers: a status, headers and a body, whole or streamed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxycast.core.relay import Relay


class Answer:
    """What a route answers: a status, headers (names in lower case) and a body, whole or
    streamed (a :class:`~proxycast.core.relay.Relay`).

    Not Quart's ``Response``: the router's routes are sent from the ASGI call
    (``proxycast.http.serving``), and building a ``Response`` (its header object, its content type,
    its body wrapper) was a measurable part of a request's cost. A route that Quart serves converts
    it (``proxycast.http.quart.to_quart``).
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: bytes | Relay,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.body = body
        self.status = status
        self.headers = {"content-type": content_type}
        if headers:
            self.headers.update(headers)


def json_answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer(json.dumps(body).encode(), status, headers)
