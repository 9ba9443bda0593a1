"""What the dashboard's tests share: a team's configuration (the unnamed key, two named clients, a
provider with two keys, prices, a ledger file) and a ledger seeded with a day of history."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from proxycast.accounting.clients import ClientConfig
from proxycast.accounting.prices import Price
from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.ledger import LedgerConfig
from proxycast.ledger import sqlite as ledger_sqlite
from proxycast.ledger.rows import Row
from tests.support import CLIENT_KEY, UPSTREAM_KEY

if TYPE_CHECKING:
    from pathlib import Path

ALICE_KEY = "alice-key-5b7c9d1e3f"
BOB_KEY = "bob-key-2d8e4f6a0c"
SECOND_UPSTREAM_KEY = "sk-upstream-second-secret"
SECRETS = (CLIENT_KEY, ALICE_KEY, BOB_KEY, UPSTREAM_KEY, SECOND_UPSTREAM_KEY)


def team_config(upstream_url: str, ledger: Path, **server: object) -> Config:
    return Config(
        server=ServerConfig(port=0, api_keys=(CLIENT_KEY,), **server),  # type: ignore[arg-type]
        providers=(
            ProviderConfig(
                name="local",
                type="openai",
                base_url=upstream_url,
                api_keys=(UPSTREAM_KEY, SECOND_UPSTREAM_KEY),
                models=("llama3.2", "qwen*"),
            ),
        ),
        aliases={"gpt-4o": "llama3.2"},
        fallbacks={"llama3.2": ("local/qwen2.5-coder",)},
        clients=(
            ClientConfig(name="alice", api_key=ALICE_KEY, rpm=600),
            ClientConfig(name="bob", api_key=BOB_KEY, models=("qwen*",)),
        ),
        prices={"llama3.2": Price(input=0.5, output=1.5), "qwen*": Price(input=0.2, output=0.6)},
        ledger=LedgerConfig(url=f"sqlite:///{ledger}"),
    )


def seed_ledger(path: Path, hours: int = 23) -> list[Row]:
    """A day of made-up traffic (fixed seed) in the ledger at ``path``: the rows written."""
    rng = random.Random(18)
    now = time.time()
    rows = []
    for hour in range(hours, 0, -1):
        for n in range(rng.randint(2, 9)):
            client = rng.choice(["-", "alice", "alice", "bob"])
            model = (
                "qwen2.5-coder" if client == "bob" else rng.choice(["llama3.2", "qwen2.5-coder"])
            )
            status = rng.choice([200] * 12 + [429, 502])
            tokens_in, tokens_out = rng.randint(200, 4000), rng.randint(50, 1500)
            rows.append(
                Row(
                    time=now - hour * 3600 + n * 60,
                    request_id=f"seed-{hour}-{n}",
                    client=client,
                    api="openai",
                    model=model,
                    provider="local",
                    upstream_model=model,
                    key=f"local#{1 + n % 2}",
                    status=status,
                    input_tokens=tokens_in if status == 200 else 0,
                    output_tokens=tokens_out if status == 200 else 0,
                    cost_usd=round((tokens_in * 0.5 + tokens_out * 1.5) / 1e6, 6)
                    if status == 200
                    else 0.0,
                    duration=0.8,
                    attempts=f"local#{1 + n % 2}:{status}",
                )
            )
    db = ledger_sqlite.open_db(path)
    try:
        ledger_sqlite.insert(db, rows)
    finally:
        db.close()
    return rows
