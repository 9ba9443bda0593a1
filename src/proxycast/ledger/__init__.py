"""The usage ledger: one row per request (who, which model, what it used and cost, how it went),
written off the request path in batches. ``[ledger] url``: ``sqlite`` (``usage.db`` in the data
directory), ``sqlite:///PATH``, ``postgresql://USER@HOST:PORT/DB`` (several gateways, one ledger),
or ``off``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from proxycast.core.redact import without_password
from proxycast.home import data_dir

if TYPE_CHECKING:
    from collections.abc import Mapping

    from proxycast.ledger.store import Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@attrs.frozen(kw_only=True)
class LedgerConfig:
    """``[ledger]``."""

    url: str = attrs.field(default="sqlite", repr=lambda url: repr(without_password(url)))
    """A Postgres URL may hold a password: it is never shown (reprs, logs, errors)."""
    retention_days: float = 90.0
    """Rows older than this are pruned."""
    buffer_rows: int = 100_000
    """Rows kept in memory while the ledger cannot be written; on Postgres, more are spilled to
    ``ledger-spill.db`` in the data directory (and replayed once Postgres is back)."""


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def ledger_path(config: LedgerConfig, env: Mapping[str, str] | None = None) -> Path | None:
    """The SQLite file of the ledger; None when it is off or on Postgres (:func:`is_postgres`).

    Raises:
        ValueError: a URL proxycast does not support, with what it supports (or, for Postgres,
            what to install).
    """
    url = config.url
    if url == "off":
        return None
    if url == "sqlite":
        return data_dir(env) / "usage.db"
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return Path(url[len("sqlite:///") :])  # as SQLAlchemy: sqlite:////abs/path, sqlite:///rel
    if is_postgres(url):
        try:
            from proxycast.ledger.postgres import check_url
        except ImportError:
            raise ValueError("Postgres needs psycopg: pip install 'proxycast[postgres]'") from None
        check_url(url)
        return None
    raise ValueError("expected 'sqlite', 'sqlite:///PATH', 'postgresql://USER@HOST/DB' or 'off'")


def spill_path(env: Mapping[str, str] | None = None) -> Path:
    """Where a Postgres ledger's rows wait while Postgres is unreachable."""
    return data_dir(env) / "ledger-spill.db"


def open_store(config: LedgerConfig, env: Mapping[str, str] | None = None) -> Store | None:
    """The configured ledger (None when it is off). A SQLite file is created and migrated now; a
    Postgres database when it is first reached (it may be down as the gateway starts).

    Raises:
        ValueError: an unsupported URL (the configuration check says so first).
    """
    path = ledger_path(config, env)
    if path is not None:
        from proxycast.ledger.sqlite import SQLiteStore

        return SQLiteStore(path)
    if is_postgres(config.url):
        from proxycast.ledger.postgres import PostgresStore

        return PostgresStore(config.url)
    return None
