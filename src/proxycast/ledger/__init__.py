"""The usage ledger: one row per request (who, which model, what it used and cost, how it went),
written off the request path in batches. ``[ledger] url``: ``sqlite`` (``usage.db`` in the data
directory), ``sqlite:///PATH``, or ``off``; Postgres is a later issue."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping


@attrs.frozen(kw_only=True)
class LedgerConfig:
    """``[ledger]``."""

    url: str = "sqlite"
    retention_days: float = 90.0
    """Rows older than this are pruned."""


def ledger_path(config: LedgerConfig, env: Mapping[str, str] | None = None) -> Path | None:
    """The SQLite file of the ledger, None when it is off.

    Raises:
        ValueError: a URL proxycast does not support (yet), with what it supports.
    """
    from proxycast.config import data_dir

    url = config.url
    if url == "off":
        return None
    if url == "sqlite":
        return data_dir(env) / "usage.db"
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return Path(url[len("sqlite:///") :])  # as SQLAlchemy: sqlite:////abs/path, sqlite:///rel
    if url.startswith(("postgresql://", "postgres://")):
        raise ValueError("Postgres is not supported yet; use 'sqlite', 'sqlite:///PATH' or 'off'")
    raise ValueError("expected 'sqlite', 'sqlite:///PATH' or 'off'")
