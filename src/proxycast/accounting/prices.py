"""``[prices]``: USD per million tokens, by upstream model (exact names or globs), and what a request
cost."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.formats import internal


@attrs.frozen(kw_only=True)
class Price:
    """USD per million tokens of each kind."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float | None = None
    """Default: the input price."""
    cache_write: float | None = None
    """Default: the input price."""


def price_of(prices: Mapping[str, Price], upstream_model: str) -> Price | None:
    """The price of ``upstream_model``: its exact entry, else the first glob (in file order) that
    matches; None when none does (the request then costs 0 and says so nowhere else)."""
    if upstream_model in prices:
        return prices[upstream_model]
    for pattern, price in prices.items():
        if fnmatch.fnmatchcase(upstream_model, pattern):
            return price
    return None


def cost(price: Price | None, usage: internal.Usage) -> float:
    """USD for ``usage`` (``Usage.input`` excludes cache reads and writes; reasoning is output)."""
    if price is None:
        return 0.0
    read = price.input if price.cache_read is None else price.cache_read
    write = price.input if price.cache_write is None else price.cache_write
    total = (
        usage.input * price.input
        + usage.output * price.output
        + usage.cache_read * read
        + usage.cache_write * write
    )
    return total / 1_000_000
