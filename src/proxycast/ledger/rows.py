"""A ledger row: one request, with the fields ``docs/limits-and-usage.md`` lists. No bodies,
no keys."""

from __future__ import annotations

import operator

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
    estimated: bool = False
    """The upstream reported no usage: the token counts are proxycast's estimate."""
    route: str = ""
    """The ``[[routes]]`` rule that routed the request (empty: none did)."""
    session: str = ""
    """The session the request belongs to (Claude Code's session id, ``prompt_cache_key``, the
    user): hashed when it looks like an e-mail address or a phone number."""


COLUMNS = tuple(a.name for a in attrs.fields(Row))
_VALUES = operator.attrgetter(*COLUMNS)

_TEXT = tuple(a.name for a in attrs.fields(Row) if a.type in ("str", str))
_COUNTS = tuple(name for name in COLUMNS if name.endswith("_tokens"))
_INT64 = (-(2**53), 2**53)
"""Token counts are kept within this (far above any real count, and a sum of a thousand of them
still fits SQLite's 64-bit ``SUM``)."""


def storable(row: Row) -> Row:
    """``row`` as every engine stores it: text without NUL characters (Postgres refuses them) or
    lone surrogates (not UTF-8: neither engine can encode them), token counts within :data:`_INT64`.
    What a client sent (its model's name) or an upstream reported must never make a batch fail
    for good: it would be retried, and spilled, forever."""
    changes: dict[str, object] = {}
    for name in _TEXT:
        value: str = getattr(row, name)
        if not value.isascii() or "\x00" in value:
            clean = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
            if clean != value:
                changes[name] = clean
    for name in _COUNTS:
        count: int = getattr(row, name)
        if not _INT64[0] <= count <= _INT64[1]:
            changes[name] = min(max(count, _INT64[0]), _INT64[1])
    return attrs.evolve(row, **changes) if changes else row  # type: ignore[arg-type]


def stored_values(row: Row) -> tuple[object, ...]:
    """The values an engine stores for ``row`` (:func:`storable`), in :data:`COLUMNS` order (one
    C call: ``attrs.astuple`` walked every field in Python, for every row)."""
    values: tuple[object, ...] = _VALUES(storable(row))
    return values


@attrs.frozen(kw_only=True)
class CaptureRow:
    """A captured request (``[capture]``): who and what, for listing, and the bodies (``data``: a
    JSON object, redacted and capped before it is made)."""

    time: float
    request_id: str
    client: str
    api: str
    model: str
    status: int
    data: str
    """JSON: the request, the answer, each upstream attempt (``proxycast requests show``)."""


CAPTURE_COLUMNS = tuple(a.name for a in attrs.fields(CaptureRow))
_CAPTURE_VALUES = operator.attrgetter(*CAPTURE_COLUMNS)


def capture_values(row: CaptureRow) -> tuple[object, ...]:
    """The values an engine stores for ``row``, in :data:`CAPTURE_COLUMNS` order: text without NUL
    characters or lone surrogates (neither engine can store them)."""
    values: tuple[object, ...] = tuple(
        _clean(v) if isinstance(v, str) else v for v in _CAPTURE_VALUES(row)
    )
    return values


def _clean(value: str) -> str:
    if value.isascii() and "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
