"""A ledger row: one request, with the fields the README's "Clients, limits and usage" lists. No bodies,
no keys."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Row:
    time: float
    """When the request arrived (Unix seconds)."""
    request_id: str
    client: str
    api: str
    """The inbound API (the dialect's name: ``openai``, ``anthropic``)."""
    model: str
    """The model the client asked for."""
    provider: str = ""
    upstream_model: str = ""
    key: str = ""
    """The provider key's label (``provider#N``), never the key."""
    status: int = 0
    error_type: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    duration: float = 0.0
    ttft: float | None = None
    """Seconds to the first byte of the answer's body (the first content, on streams)."""
    attempts: str = ""
    """``provider#N:outcome`` for each attempt, comma-separated."""
    streamed: bool = False
    disconnected: bool = False
    """The client went away before the whole answer was sent."""


COLUMNS = tuple(a.name for a in attrs.fields(Row))
