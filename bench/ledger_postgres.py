"""Rows per second the ledger's writer puts into Postgres and into SQLite, in the same run: batches
of 500 rows (a busy worker's flush), each flushed by ``LedgerWriter.flush`` (a thread, one
transaction), interleaved engine by engine (the first alternating); and, for the ``insert`` comment in
src/proxycast/ledger/postgres.py, ``COPY`` against ``executemany`` for one 500-row batch.

    .venv/bin/python bench/ledger_postgres.py [--rows 50000] [--rounds 4]

Postgres: a throwaway local cluster (tests/postgres.py) with its default durability (fsync and
synchronous commit on), over TCP on 127.0.0.1. SQLite: WAL, synchronous=NORMAL, as the ledger runs
it. Writes bench/results/ledger_postgres.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import psycopg
import trio

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
import run
from tests.postgres import running_cluster

from proxycast.ledger import postgres
from proxycast.ledger.rows import COLUMNS, Row
from proxycast.ledger.sqlite import SQLiteStore
from proxycast.ledger.writer import LedgerWriter

RESULTS = Path(__file__).parent / "results"
BATCH = 500
# Postgres's defaults (durable): only where it listens is set
DURABLE = {"listen_addresses": "127.0.0.1"}


def rows(count: int) -> list[Row]:
    now = time.time()
    return [
        Row(time=now + i / 1000, request_id=f"{i:032x}", client=f"client-{i % 7}", api="openai",
            model="gpt-4o-mini", provider="openai", upstream_model="gpt-4o-mini-2024-07-18",
            key="openai#1", status=200 if i % 50 else 429, input_tokens=1200 + i % 300,
            output_tokens=300 + i % 90, cache_read_tokens=1024, cost_usd=0.00042, duration=1.7,
            ttft=0.35, attempts="openai#1:200", streamed=i % 2 == 0)
        for i in range(count)
    ]  # fmt: skip


async def writer_rate(writer: LedgerWriter, batch: list[Row], count: int) -> float:
    """Rows/s: ``count`` rows recorded and flushed ``BATCH`` at a time."""
    await writer.flush()  # the first flush prunes (and on Postgres, connects and migrates)
    started = time.perf_counter()
    for _ in range(count // BATCH):
        for row in batch:
            writer.record(row)
        await writer.flush()
    return count / (time.perf_counter() - started)


def insert_rates(url: str, batch: list[Row], batches: int, copy_first: bool) -> dict[str, float]:
    """Rows/s of one connection writing ``batches`` transactions of ``BATCH`` rows, each way (in
    the order given: rounds alternate it, as the table grows)."""
    statement = (
        f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('%s' for _ in COLUMNS)})"
    )
    values = [attrs.astuple(row) for row in batch]

    def by_copy(conn: postgres.Connection) -> None:
        postgres.insert(conn, batch)

    def by_executemany(conn: postgres.Connection) -> None:
        with conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(statement, values)

    ways = [("copy", by_copy), ("executemany", by_executemany)]
    out: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, way in ways if copy_first else ways[::-1]:
            started = time.perf_counter()
            for _ in range(batches):
                way(conn)
            out[name] = batches * BATCH / (time.perf_counter() - started)
    return out


async def measure(args: argparse.Namespace, folder: Path, url: str) -> dict[str, Any]:
    batch = rows(BATCH)
    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        lite = LedgerWriter(SQLiteStore(folder / f"usage-{round_}.db"), retention_days=90)
        pg = LedgerWriter(postgres.PostgresStore(url), retention_days=90)
        measured = {"round": round_}
        engines = [("sqlite", lite), ("postgres", pg)]
        for name, writer in engines if round_ % 2 == 0 else engines[::-1]:
            measured[name] = round(await writer_rate(writer, batch, args.rows))
            await writer.aclose()
        rates = await trio.to_thread.run_sync(insert_rates, url, batch, 100, round_ % 2 == 0)
        measured |= {f"insert_500_{k}": round(v) for k, v in rates.items()}
        print(measured, flush=True)
        runs.append(measured)
    keys = [k for k in runs[0] if k != "round"]
    median = {k: round(statistics.median(r[k] for r in runs)) for k in keys}
    return {
        "runs": runs,
        "median_rows_per_s": median,
        "postgres_over_sqlite": round(median["postgres"] / median["sqlite"], 3),
        "copy_over_executemany": round(
            median["insert_500_copy"] / median["insert_500_executemany"], 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="per engine and round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="proxycast-ledger-bench-"))
    with running_cluster(DURABLE) as cluster:
        url = cluster.create_database()
        with psycopg.connect(url) as conn:
            found = conn.execute("SHOW server_version").fetchone()
        result: dict[str, Any] = {
            "machine": run.machine(),
            "postgres": found[0] if found else "",
            "sqlite": sqlite3.sqlite_version,
            "psycopg": psycopg.__version__,
            "load_before": os.getloadavg(),
            "rows_per_round": args.rows,
            "batch": BATCH,
        }
        result |= trio.run(measure, args, folder, url)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result["median_rows_per_s"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ledger_postgres.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
