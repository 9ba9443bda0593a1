"""``python -m proxycast.testing [--port N]``: the three fake upstreams, for trying a client or an app
against proxycast without any provider account.

Each fake answers every request with its default script (a short text), or with ``--rules`` as the
rule-based model of :mod:`proxycast.testing.rules` (a tool call when tools are offered, text that
quotes a tool's result, ...), lists the models given with
``--models`` on its models endpoint, answers embeddings, and prints every request it receives.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import TYPE_CHECKING

import trio

from proxycast.testing import FakeAnthropic, FakeGemini, FakeOpenAI, rules

if TYPE_CHECKING:
    from collections.abc import Sequence

    from proxycast.testing._server import FakeUpstream


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxycast.testing",
        description="Serve proxycast's fake OpenAI, Anthropic and Gemini upstreams on loopback.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="OpenAI's fake on PORT, Anthropic's on PORT+1, Gemini's on PORT+2 (default 0: free ports)",
    )
    parser.add_argument(
        "--models",
        default="fake-model",
        help="comma-separated model ids each fake's models endpoint lists (default: fake-model)",
    )
    parser.add_argument(
        "--rules",
        action="store_true",
        help="answer by rule (proxycast.testing.rules: call the first tool offered, answer a tool "
        "result with text) instead of with a fixed text",
    )
    return parser


async def _log_requests(name: str, fake: FakeUpstream[object]) -> None:
    seen = 0
    while True:
        requests = await fake.wait_for_requests(seen + 1)
        for request in requests[seen:]:
            print(f"{name}: {request.method} {request.path}", flush=True)
        seen = len(requests)


async def run(port: int, models: tuple[str, ...], by_rule: bool = False) -> None:
    fakes: list[tuple[str, FakeUpstream[object]]] = [
        ("openai", FakeOpenAI()),  # type: ignore[list-item]
        ("anthropic", FakeAnthropic()),  # type: ignore[list-item]
        ("gemini", FakeGemini()),  # type: ignore[list-item]
    ]
    async with trio.open_nursery() as nursery:
        for offset, (name, fake) in enumerate(fakes):
            fake.models = models
            if by_rule:
                rules.follow(fake)
            url = await nursery.start(partial(fake.serve, port=port + offset if port else 0))
            print(f"{name}\t{url}", flush=True)
            nursery.start_soon(_log_requests, name, fake)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    try:
        trio.run(run, args.port, models, args.rules)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"python -m proxycast.testing: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
