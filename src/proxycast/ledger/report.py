"""``proxycast usage``: what the ledger says, grouped by client, model, provider or day, as a table for
people or JSON for scripts."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from proxycast.ledger import is_postgres, ledger_path

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.ledger import LedgerConfig
    from proxycast.ledger.store import Store

_SINCE = re.compile(r"(\d+)([hdm])")
_UNITS = {"m": 60, "h": 3600, "d": 86400}
_COLUMNS = ("requests", "errors", "input_tokens", "output_tokens", "cost_usd", "estimated")


def parse_since(text: str, now: float | None = None) -> float:
    """``24h``, ``7d``, ``90m`` (before now) or ``YYYY-MM-DD`` (from that UTC midnight) as Unix seconds.

    Raises:
        ValueError: anything else.
    """
    now = time.time() if now is None else now
    match = _SINCE.fullmatch(text.strip())
    if match:
        try:
            return now - int(match.group(1)) * _UNITS[match.group(2)]
        except (ValueError, OverflowError):  # more digits than an int or a float takes
            raise ValueError(f"--since: {text!r} is further back than any ledger") from None
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(f"--since: expected 24h, 7d or YYYY-MM-DD, not {text!r}") from None
    return day.timestamp()


def usage(
    config: LedgerConfig, since: float, by: str, env: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The report's rows, from either engine (empty when there is no ledger yet). Nothing is
    created or migrated: a SQLite file is opened read-only.

    Raises:
        LedgerUnavailableError: Postgres cannot be reached.
        ValueError: the ledger is off.
    """
    store: Store
    path = ledger_path(config, env)
    if path is not None:
        from proxycast.ledger.sqlite import SQLiteStore

        store = SQLiteStore(path, create=False)
    elif is_postgres(config.url):
        from proxycast.ledger.postgres import PostgresStore

        store = PostgresStore(config.url, pool_size=1)
    else:
        raise ValueError("the ledger is off (ledger.url = 'off')")
    try:
        return store.report(since, by)
    finally:
        store.close()


def render(rows: list[dict[str, Any]], by: str) -> str:
    """The rows as a table, with a total line; an ``estimated`` column (requests whose tokens
    proxycast estimated, their upstream having reported none) when there are any."""
    estimates = any(row.get("estimated") for row in rows)
    header: tuple[str, ...] = (by, "requests", "errors", "input", "output", "cost (USD)")
    if estimates:
        header += ("estimated",)

    def cells_of(name: str, row: Mapping[str, Any]) -> tuple[str, ...]:
        cells = (
            name,
            f"{row['requests']:,}",
            f"{row['errors']:,}",
            f"{row['input_tokens']:,}",
            f"{row['output_tokens']:,}",
            f"{row['cost_usd']:.4f}",
        )
        return (*cells, f"{row.get('estimated', 0):,}") if estimates else cells

    body = [cells_of(str(row[by]), row) for row in rows]
    body.append(cells_of("total", {c: sum(row.get(c, 0) for row in rows) for c in _COLUMNS}))
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in body[:-1]), rule, fmt(body[-1])])


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2)
