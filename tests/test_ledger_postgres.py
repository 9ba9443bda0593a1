"""The ledger on a real Postgres (a throwaway cluster, tests/postgres.py): the same schema and
answers as SQLite, concurrent migrations, two gateways on one database, and a Postgres that stops
under load (rows spilled, replayed, none lost or doubled); never a password in a log or an error."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import openai
import psycopg
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxycast.home import data_dir
from proxycast.ledger import LedgerConfig, postgres
from proxycast.ledger import sqlite as ledger_sqlite
from proxycast.ledger.rows import COLUMNS, Row
from proxycast.ledger.spill import Spill
from proxycast.ledger.store import GROUPS, SERIES_GROUPS
from proxycast.ledger.writer import LedgerWriter
from tests.postgres import free_port
from tests.support import CLIENT_KEY, make_config, start_gateway

if TYPE_CHECKING:
    from pathlib import Path

    from proxycast.testing import FakeOpenAI
    from tests.postgres import Cluster

PASSWORD = "hunter2-correct-horse"


def _row(number: int, client: str = "alice") -> Row:
    return Row(time=time.time() + number, request_id=f"r{number}", client=client, api="openai",
               model="gpt-4o", provider="local", status=200, input_tokens=10, output_tokens=5,
               cost_usd=0.25, streamed=number % 2 == 0)  # fmt: skip


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT COUNT(*) FROM requests").fetchone()
    assert found is not None
    return int(found[0])


def test_migrations_make_the_columns_sqlite_has(postgres_url: str, tmp_path: Path) -> None:
    store = postgres.PostgresStore(postgres_url)
    store.insert([_row(1)])  # reaching the database migrates it
    store.close()
    db = ledger_sqlite.open_db(tmp_path / "usage.db")
    sqlite_columns = [r[1] for r in db.execute("PRAGMA table_info(requests)")]
    sqlite_indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()
    with psycopg.connect(postgres_url) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'requests' ORDER BY ordinal_position"
        ).fetchall()
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert [name for name, _ in columns] == sqlite_columns == ["id", *COLUMNS]
    types: dict[str, str] = dict(columns)
    assert types["cost_usd"] == types["time"] == types["ttft"] == "double precision"
    assert types["input_tokens"] == "bigint"
    assert {"requests_time", "requests_report"} <= indexes
    assert {"requests_time", "requests_report"} <= sqlite_indexes
    assert version == (str(ledger_sqlite.SCHEMA_VERSION),)
    assert postgres.SCHEMA_VERSION == ledger_sqlite.SCHEMA_VERSION


def test_gateways_migrating_at_once_migrate_once(postgres_url: str) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def migrate() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            start.wait()
            try:
                postgres.migrate(conn)
            except BaseException as exc:  # reported below, from the test's thread
                errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT key, value FROM meta").fetchall() == [
            ("schema_version", str(postgres.SCHEMA_VERSION))
        ]
        postgres.migrate(conn)  # a later start changes nothing


MIDNIGHT = 1_767_312_000.0  # 2026-01-02T00:00Z
rows = st.builds(
    Row,
    # near midnights (both engines cut days at the same millisecond), over four days
    time=st.one_of(
        st.floats(MIDNIGHT - 2 * 86400, MIDNIGHT + 2 * 86400),
        st.sampled_from([-86400.0, 0.0, 86400.0]).flatmap(
            lambda day: st.floats(-0.001, 0.001).map(lambda d: MIDNIGHT + day + d)
        ),
    ),
    request_id=st.text(max_size=8),
    # code points either side of ASCII: Postgres's collation must not decide the order
    client=st.sampled_from(["alice", "Bob", "bob", "é", "Z", "_", "-", "日本"]),
    api=st.sampled_from(["openai", "anthropic"]),
    # what a client sent: any text (NULs and lone surrogates are stored replaced, in both)
    model=st.sampled_from(["gpt-4o", "claude", "Gpt-4o", "a\x00", "\ud800"]) | st.text(max_size=3),
    provider=st.sampled_from(["local", "anthropic", ""]),
    status=st.sampled_from([0, 200, 399, 400, 429, 499, 500]),
    input_tokens=st.integers(0, 2**40),
    output_tokens=st.integers(0, 2**40),
    cache_read_tokens=st.integers(0, 10**6),
    cache_write_tokens=st.integers(0, 10**6),
    # multiples of 1/1024: the sums are exact in any order, as a float sum's last bits are not
    cost_usd=st.integers(0, 10**7).map(lambda n: n / 1024),
    ttft=st.none() | st.floats(0, 100),
    streamed=st.booleans(),
    disconnected=st.booleans(),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(rows, max_size=40),
    since=st.sampled_from([0.0, MIDNIGHT - 86400, MIDNIGHT, MIDNIGHT + 0.0004]),
)
def test_postgres_reports_what_sqlite_reports(
    postgres_url: str, tmp_path: Path, batch: list[Row], since: float
) -> None:
    store = postgres.PostgresStore(postgres_url, pool_size=1)
    lite = ledger_sqlite.SQLiteStore(tmp_path / "usage.db")
    try:
        store.prune(float("inf"))  # (each example starts empty)
        lite.prune(float("inf"))
        store.insert(batch)
        lite.insert(batch)
        for by in GROUPS:
            assert store.report(since, by) == lite.report(since, by), by
            assert store.report(since, by, "bob") == lite.report(since, by, "bob"), by
        for by in SERIES_GROUPS:  # the dashboard's charts
            for bucket in (60.0, 3600.0):
                assert store.series(since, bucket, by) == lite.series(since, bucket, by), by
                assert store.series(since, bucket, by, "é") == lite.series(since, bucket, by, "é")
    finally:
        store.close()
        lite.close()


async def test_rows_wait_in_the_spill_file_while_postgres_is_unreachable(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(postgres, "CONNECT_SECONDS", 0.5)
    caplog.set_level(logging.INFO, logger="proxycast")
    spill = tmp_path / "ledger-spill.db"
    nowhere = f"postgresql://proxycast:{PASSWORD}@127.0.0.1:{free_port()}/ledger"
    down = LedgerWriter(
        postgres.PostgresStore(nowhere), retention_days=1, buffer_rows=5, spill=spill
    )
    for number in range(8):
        down.record(_row(number))
    await down.flush()  # fails: 8 rows > 5 are spilled
    await down.flush()  # (nothing buffered: nothing tried)
    for number in range(8, 11):
        down.record(_row(number))
    await down.flush()  # fails again: kept in memory (3 <= 5)
    await down.aclose()  # fails again: spilled, not lost
    assert Spill(spill).pending() == 11
    messages = [r.getMessage() for r in caplog.records]
    assert sum("the ledger is unreachable" in m for m in messages) == 1, messages
    assert sum("still unreachable: 8 rows spilled" in m for m in messages) == 1, messages
    assert not any(PASSWORD in m for m in messages)
    assert "127.0.0.1" in messages[0]

    caplog.clear()
    up = LedgerWriter(postgres.PostgresStore(postgres_url), retention_days=1, spill=spill)
    up.record(_row(11))
    await up.flush()  # the spill first, then the new row
    await up.aclose()
    assert Spill(spill).pending() == 0
    with psycopg.connect(postgres_url) as conn:
        found = conn.execute("SELECT request_id, streamed FROM requests ORDER BY id").fetchall()
    assert found == [(f"r{n}", n % 2 == 0) for n in range(12)]
    assert any("11 ledger rows replayed" in r.getMessage() for r in caplog.records)


async def test_usage_names_an_unreachable_postgres_without_its_password(tmp_path: Path) -> None:
    config = tmp_path / "proxycast.toml"
    config.write_text(
        f'[ledger]\nurl = "postgresql://proxycast:{PASSWORD}@127.0.0.1:{free_port()}/x"\n'
    )
    done = await trio.run_process(
        [sys.executable, "-m", "proxycast", "usage", "--config", str(config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "cannot read the ledger: Postgres at postgresql://proxycast@127.0.0.1" in err
    assert PASSWORD not in err + done.stdout.decode()
    assert PASSWORD not in repr(LedgerConfig(url=f"postgresql://u:{PASSWORD}@h/db"))
    with pytest.raises(ValueError, match="not a Postgres URL") as caught:
        postgres.check_url(f"postgresql://u:{PASSWORD}@[h/db")
    assert PASSWORD not in str(caught.value)


async def _usage(config_file: Path, by: str) -> list[dict[str, Any]]:
    done = await trio.run_process(
        [sys.executable, "-m", "proxycast", "usage", "--config", str(config_file),
         "--json", "--by", by, "--since", "1d"],
        capture_stdout=True,
    )  # fmt: skip
    report: list[dict[str, Any]] = json.loads(done.stdout)
    return report


async def test_two_gateways_write_one_postgres_ledger(
    fake: FakeOpenAI, postgres_url: str, tmp_path: Path
) -> None:
    config = attrs.evolve(make_config(fake.base_url), ledger=LedgerConfig(url=postgres_url))
    counts = (5, 7)
    async with trio.open_nursery() as nursery:
        gateways = [await start_gateway(nursery, config) for _ in counts]
        for gateway, count in zip(gateways, counts, strict=True):
            async with openai.AsyncOpenAI(
                base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
            ) as client:
                for number in range(count):
                    if number % 2:
                        stream = await client.chat.completions.create(
                            model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                            stream=True,
                        )  # fmt: skip
                        _ = [chunk async for chunk in stream]
                    else:
                        await client.chat.completions.create(
                            model="fast", messages=[{"role": "user", "content": "hi"}]
                        )
        nursery.cancel_scope.cancel()  # both drain: their last rows are written
    assert _count(postgres_url) == sum(counts)

    config_file = tmp_path / "proxycast.toml"
    config_file.write_text(f'[ledger]\nurl = "{postgres_url}"\n')
    by_client = await _usage(config_file, "client")
    assert [(r["client"], r["requests"], r["errors"]) for r in by_client] == [("-", 12, 0)]
    by_model = await _usage(config_file, "model")
    assert {r["model"]: r["requests"] for r in by_model} == {"gpt-4o": 5, "fast": 7}
    # the same report as SQLite's for the same rows
    lite = ledger_sqlite.SQLiteStore(tmp_path / "copy.db")
    with psycopg.connect(postgres_url) as conn:
        copied = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM requests").fetchall()
    lite.insert([ledger_sqlite.row_of(values) for values in copied])
    for by in GROUPS:
        assert await _usage(config_file, by) == lite.report(time.time() - 86400, by)
    lite.close()
    # the dashboard reads the same database
    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
            overview = (await client.get(gateway.url + "/ui/api/overview?range=1h")).json()
            export = (await client.get(gateway.url + "/ui/api/usage?since=24h&by=model")).json()
        nursery.cancel_scope.cancel()
    assert overview["totals"]["requests"] == sum(counts)
    assert export == by_model


async def test_postgres_stopped_under_load_loses_and_doubles_no_row(
    fake: FakeOpenAI,
    postgres: Cluster,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="proxycast")
    ledger = LedgerConfig(url=postgres_url, buffer_rows=20)
    config = attrs.evolve(make_config(fake.base_url), ledger=ledger)
    sent: list[str] = []
    stopping = False

    async def load(client: openai.AsyncOpenAI, worker: int) -> None:
        number = 0
        while not stopping:  # (never cancelled mid-request: each request sent has its answer)
            request_id = f"w{worker}-{number}"
            number += 1
            reply = await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-request-id": request_id},
            )
            assert reply.choices[0].message.content
            sent.append(request_id)

    async with trio.open_nursery() as nursery:
        gateway = await start_gateway(nursery, config)
        async with openai.AsyncOpenAI(
            base_url=gateway.v1, api_key=CLIENT_KEY, max_retries=0
        ) as client:
            async with trio.open_nursery() as loaders:
                for worker in range(3):
                    loaders.start_soon(load, client, worker)
                await trio.sleep(1.5)
                await trio.to_thread.run_sync(postgres.stop)
                try:
                    await trio.sleep(10)
                    during = len(sent)
                finally:
                    await trio.to_thread.run_sync(postgres.start)
                await trio.sleep(2)
                stopping = True
            assert len(sent) > during > 40  # requests went on all along
            # the gateway is still running: its writer replays the spill and catches up
            with trio.fail_after(30):
                while True:  # (polling a database: there is no event to wait on)
                    if await trio.to_thread.run_sync(_count, postgres_url) >= len(sent):
                        break
                    await trio.sleep(0.2)
            assert Spill(data_dir() / "ledger-spill.db").pending() == 0
        nursery.cancel_scope.cancel()

    with psycopg.connect(postgres_url) as conn:
        counted: dict[str, int] = dict(
            conn.execute("SELECT request_id, COUNT(*) FROM requests GROUP BY request_id")
        )
    assert counted == dict.fromkeys(sent, 1)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("the ledger is unreachable" in m for m in messages) == 1, messages
    assert sum("the ledger is still unreachable" in m for m in messages) == 1, messages
    back = [m for m in messages if "the ledger is reachable again" in m]
    assert len(back) == 1, messages
    assert "from the spill file" in back[0]
    assert (data_dir() / "ledger-spill.db").exists()  # it was used
    db = sqlite3.connect(data_dir() / "ledger-spill.db")
    assert db.execute("SELECT COUNT(*) FROM requests").fetchone() == (0,)
    db.close()
