"""Prompt-cache hits with session affinity against round robin: 20 sessions of 10 turns each (the
conversation growing turn by turn, as an agent's does) through the gateway to one provider with 4 keys,
whose fake upstream caches prompt prefixes per key (``FakeOpenAI(prompt_cache=True)``: a turn's
earlier messages are a hit only on a key that saw them). Both runs in one process, one after the other,
each on a fresh fake and gateway; each turn's sessions come in a shuffled order (the same in
both runs), as concurrent agents' do.

    python bench/affinity.py            # writes bench/results/affinity.{json,md}
"""

from __future__ import annotations

import random
import sys
from functools import partial
from pathlib import Path
from typing import Any

import openai
import trio

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, write_results

import proxycast
from proxycast.config import Config, ProviderConfig, RoutingConfig, ServerConfig
from proxycast.ledger import LedgerConfig
from proxycast.testing import FakeOpenAI, Script

SESSIONS = 20
TURNS = 10
KEYS = tuple(f"sk-bench-{n}" for n in range(4))


async def run(affinity: str) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        fake = FakeOpenAI(Script(text="Noted; go on."), prompt_cache=True)
        await nursery.start(fake.serve)
        config = Config(
            server=ServerConfig(port=0, api_keys=("bench",), access_log="off"),
            providers=(
                ProviderConfig(
                    name="local",
                    type="openai",
                    base_url=fake.base_url,
                    api_keys=KEYS,
                    models=("m",),
                ),
            ),
            routing=RoutingConfig(affinity=affinity),  # type: ignore[arg-type]
            ledger=LedgerConfig(url="off"),
        )
        binds = await nursery.start(partial(proxycast.serve, config))
        client = openai.AsyncOpenAI(base_url=binds[0] + "/v1", api_key="bench", max_retries=0)
        prompt = cached = 0
        histories: list[list[Any]] = [[] for _ in range(SESSIONS)]
        order = random.Random(7)  # the same interleaving for both runs
        for turn in range(TURNS):
            sessions = list(enumerate(histories))
            order.shuffle(sessions)  # concurrent agents' turns come in no fixed order
            for session, history in sessions:
                history.append(
                    {"role": "user", "content": f"Session {session}, turn {turn}: " + "ctx " * 200}
                )
                answer = await client.chat.completions.create(
                    model="m",
                    messages=history,
                    extra_headers={"x-claude-code-session-id": f"session-{session}"},
                )
                history.append({"role": "assistant", "content": answer.choices[0].message.content})
                usage = answer.usage
                assert usage is not None
                assert usage.prompt_tokens_details is not None
                prompt += usage.prompt_tokens
                cached += usage.prompt_tokens_details.cached_tokens or 0
        await client.close()
        nursery.cancel_scope.cancel()
    return {"prompt_tokens": prompt, "cached_tokens": cached, "hit_ratio": cached / prompt}


async def main() -> None:
    rounds = {name: await run(name) for name in ("none", "session")}
    none, session = rounds["none"], rounds["session"]
    report = "\n".join(
        [
            "# Prompt-cache hits: session affinity against round robin",
            "",
            f"{SESSIONS} sessions x {TURNS} turns, one provider with {len(KEYS)} keys, the fake's",
            "prompt cache per key (a turn's earlier messages hit only on a key that saw them).",
            f"Machine: {machine()}.",
            "",
            "| affinity | prompt tokens | cached tokens | cached share |",
            "|---|---|---|---|",
            *(
                f"| {name} | {r['prompt_tokens']:,} | {r['cached_tokens']:,} | {r['hit_ratio']:.1%} |"
                for name, r in rounds.items()
            ),
            "",
            f"Affinity caches {session['hit_ratio'] / max(none['hit_ratio'], 1e-9):.1f}x the share "
            "round robin does.",
        ]
    )
    write_results("affinity", rounds, report + "\n")


if __name__ == "__main__":
    trio.run(main)
