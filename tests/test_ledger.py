"""The ledger's file: migrations from an older schema, retention pruning, and the configuration of
clients, prices, the ledger and shared state."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio

from proxycast.config import load_config
from proxycast.errors import ConfigError
from proxycast.ledger import LedgerConfig
from proxycast.ledger import sqlite as ledger_sqlite
from proxycast.ledger.report import parse_since, render
from proxycast.ledger.report import usage as report_usage
from proxycast.ledger.rows import COLUMNS, Row, stored_values
from proxycast.ledger.writer import LedgerWriter

if TYPE_CHECKING:
    from pathlib import Path


def usage(path: Path, since: float, by: str) -> list[dict[str, Any]]:
    return report_usage(LedgerConfig(url=f"sqlite:///{path}"), since, by)


def _row(at: float, client: str = "alice", status: int = 200) -> Row:
    return Row(
        time=at,
        request_id="r",
        client=client,
        api="openai",
        model="gpt-4o",
        provider="local",
        status=status,
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.25,
    )


def test_an_older_ledger_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.executescript(ledger_sqlite.MIGRATIONS[0])
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    old = COLUMNS[: COLUMNS.index("estimated")]  # the columns of schema 1
    db.execute(
        f"INSERT INTO requests ({', '.join(old)}) VALUES ({', '.join('?' for _ in old)})",
        stored_values(_row(time.time()))[: len(old)],
    )
    db.close()
    db = ledger_sqlite.open_db(path)
    assert ledger_sqlite.schema_version(db) == ledger_sqlite.SCHEMA_VERSION == 5
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"requests_report", "captures_time", "captures_request"} <= indexes
    assert db.execute("SELECT COUNT(*), SUM(estimated) FROM requests").fetchone() == (1, 0)
    assert db.execute("SELECT route, session FROM requests").fetchone() == ("", "")
    ledger_sqlite.migrate(db)  # a second start changes nothing
    db.close()


async def test_rows_past_retention_are_pruned_and_the_rest_written(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    writer = LedgerWriter(ledger_sqlite.SQLiteStore(path), retention_days=1)
    now = time.time()
    writer.record(_row(now - 3 * 86400, client="old"))
    writer.record(_row(now - 3600, client="bob", status=429))
    writer.record(_row(now))
    await writer.flush()  # inserts, then prunes (the first flush always does)
    assert [r["client"] for r in usage(path, now - 10 * 86400, "client")] == ["alice", "bob"]
    writer.record(_row(now))
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer.aclose()  # shielded: written even when cancelled
    report = usage(path, now - 86400, "client")
    assert report == [
        {"client": "alice", "requests": 2, "errors": 0, "input_tokens": 20,
         "output_tokens": 10, "cost_usd": 0.5, "estimated": 0},
        {"client": "bob", "requests": 1, "errors": 1, "input_tokens": 10,
         "output_tokens": 5, "cost_usd": 0.25, "estimated": 0},
    ]  # fmt: skip
    table = render(report, "client").splitlines()
    assert table[-1].split() == ["total", "3", "1", "30", "15", "0.7500"]


def test_since() -> None:
    assert parse_since("24h", now=100_000.0) == 100_000.0 - 86400
    assert parse_since("7d", now=1e6) == 1e6 - 7 * 86400
    assert parse_since("2026-01-02") == 1767312000.0
    with pytest.raises(ValueError, match="24h, 7d or YYYY-MM-DD"):
        parse_since("yesterday")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            '[ledger]\nurl = "postgresql://u@h/db?bogus=1"', "not a Postgres URL", id="pg"
        ),
        pytest.param("[ledger]\nbuffer_rows = 0", "buffer_rows: must be 1 or more", id="buffer"),
        pytest.param('[ledger]\nurl = "mysql://x"', "expected 'sqlite'", id="url"),
        pytest.param("[ledger]\nretention_days = 0", "retention_days: must be positive", id="days"),
        pytest.param('[state]\nredis_url = "http://h"', "expected redis://", id="redis"),
        pytest.param('[state]\nscope = "galaxy"', "expected 'machine' or 'process'", id="scope"),
        pytest.param('[state]\nredis_prefix = "a b"', "redis_prefix: may hold", id="prefix"),
        pytest.param(
            '[server]\nworkers = 2\n[state]\nscope = "process"', "each worker would", id="scope2"
        ),
        pytest.param('[server]\naccess_log = "xml"', "access_log: expected", id="log"),
        pytest.param('[[clients]]\nname = "a"', "exactly one of api_key", id="nokey"),
        pytest.param('[[clients]]\nname = "a"\napi_key_sha256 = "abc"', "64 hexadecimal", id="sha"),
        pytest.param(
            '[[clients]]\nname = "a"\napi_key = "k1"\n[[clients]]\nname = "a"\napi_key = "k2"',
            "used by another client",
            id="dup",
        ),
        pytest.param('[[clients]]\nname = "-"\napi_key = "k"', "'-' is reserved", id="unnamed"),
        pytest.param('[[clients]]\nname = "a"\napi_key = "k"\nrpm = -1', "rpm: must be", id="rpm"),
        pytest.param('[prices]\n"m" = { input = -1.0 }', "prices.m.input", id="price"),
        pytest.param('[[clients]]\nname = "a"\napi_key = "k"\nrps = 1', "rps", id="typo"),
    ],
)
def test_accounting_configuration_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "proxycast.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


def test_clients_without_server_keys_need_no_generated_key(tmp_path: Path) -> None:
    path = tmp_path / "proxycast.toml"
    path.write_text('[[clients]]\nname = "a"\napi_key = "k"\n')
    config = load_config(path)
    assert config.server.api_keys == ()
    assert config.generated_key_file is None
