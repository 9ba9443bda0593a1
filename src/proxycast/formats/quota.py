"""What a provider's rate-limit headers say is left of a key's quota (pure functions).

Anthropic sends ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,
reset}``, the reset an RFC 3339 time; OpenAI (and Azure OpenAI) ``x-ratelimit-{limit,remaining,reset}-
{requests,tokens}``, the reset a Go duration (``6m0s``, ``1s``, ``20ms``) until the window is full
again. Each is read into one :class:`Quota`; a header that cannot be read (or a negative value, as
Azure sends for a limit it does not apply) is left out, never an error: the headers only inform.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


@attrs.frozen
class Allowance:
    """What is left of one limit of a key (requests or tokens)."""

    remaining: int
    limit: int | None = None
    reset: float | None = None
    """Seconds from when the headers were read until the window is full again (None: not said)."""


@attrs.frozen
class Quota:
    """What an upstream's answer says is left of the key's limits (None: it did not say)."""

    requests: Allowance | None = None
    tokens: Allowance | None = None


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_UNITS |= {"h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_PART.pattern})+")


def parse_duration(text: str) -> float | None:
    """Seconds of a Go duration (``6m0s``, ``1h2m3.5s``, ``20ms``) or a bare number of seconds
    (Azure); None when it is neither."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        if not _DURATION.fullmatch(text):
            return None
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?(?:([Zz])|([+-])(\d\d):(\d\d))"
)


def parse_rfc3339(text: str) -> float | None:
    """The Unix time of an RFC 3339 timestamp (``2025-08-21T12:40:59Z``, any fraction, any
    offset); None when it is not one (a time without an offset is not)."""
    found = _RFC3339.fullmatch(text.strip())
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, _, sign, oh, om = found.groups()
    offset = timedelta(hours=int(oh or 0), minutes=int(om or 0)) * (-1 if sign == "-" else 1)
    try:
        when = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),  # a leap second
            tzinfo=timezone(offset),
        )
    except ValueError:  # a 31st of February, an offset of 24 hours or more
        return None
    return when.timestamp() + (float(fraction) if fraction else 0.0)


def _count(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        count = int(value.strip())
    except ValueError:
        return None
    return count if count >= 0 else None


def _allowance(
    headers: Mapping[str, str], kind: str, names: str, reset: Callable[[str], float | None]
) -> Allowance | None:
    """One limit's headers (``names``: a pattern with ``{part}`` for ``remaining``, ``limit``,
    ``reset``); ``reset`` reads the reset's value as seconds from now. The remaining count is
    looked up first: an answer without one costs a lookup."""
    left = _count(headers, names.format(kind=kind, part="remaining"))
    if left is None:
        return None
    limit = _count(headers, names.format(kind=kind, part="limit"))
    value = headers.get(names.format(kind=kind, part="reset"))
    seconds = None if value is None else reset(value)
    return Allowance(left, limit, None if seconds is None else max(0.0, seconds))


def _mentions(headers: Mapping[str, str], prefix: str) -> bool:
    """Whether a header's name starts with ``prefix``: one pass over the names, so that an answer
    without rate-limit headers (a local server, most upstreams but OpenAI's and Anthropic's) costs
    that pass, not a lookup (a pass each, in httpx) for every header that could be there. On an
    answer's ``httpx.Headers``, the pass is over its raw names, joined (in C, not a Python step
    per name: it runs on every answer)."""
    raw: list[tuple[bytes, bytes]] | None = getattr(headers, "raw", None)
    if raw is not None:
        return b"\n" + prefix.encode() in b"\n" + b"\n".join(dict(raw)).lower()
    return any(name.lower().startswith(prefix) for name in headers)


def openai_quota(headers: Mapping[str, str]) -> Quota | None:
    """The ``x-ratelimit-*`` headers of OpenAI (and Azure OpenAI); None without any."""
    if not _mentions(headers, "x-ratelimit-"):
        return None
    names = "x-ratelimit-{part}-{kind}"
    requests = _allowance(headers, "requests", names, parse_duration)
    tokens = _allowance(headers, "tokens", names, parse_duration)
    return None if requests is None and tokens is None else Quota(requests, tokens)


def anthropic_quota(headers: Mapping[str, str], now: float | None = None) -> Quota | None:
    """The ``anthropic-ratelimit-*`` headers; None without any. Tokens are the tightest of the
    token limits (``tokens`` is already the most restrictive in effect; an input or output limit
    at zero leaves the key nothing either). ``now``: the Unix time the resets are counted from."""
    if not _mentions(headers, "anthropic-ratelimit-"):
        return None
    clock = time.time() if now is None else now

    def reset(value: str) -> float | None:
        when = parse_rfc3339(value)
        return None if when is None else when - clock

    names = "anthropic-ratelimit-{kind}-{part}"
    requests = _allowance(headers, "requests", names, reset)
    tokens = [
        found
        for kind in ("tokens", "input-tokens", "output-tokens")
        if (found := _allowance(headers, kind, names, reset)) is not None
    ]
    if requests is None and not tokens:
        return None
    return Quota(requests, min(tokens, key=lambda a: a.remaining, default=None))
