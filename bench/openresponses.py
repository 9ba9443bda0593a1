"""The Open Responses compliance suite (``openresponses/openresponses``, ``bin/compliance-test.ts``: 17
tests) against proxycast in front of every upstream kind, each a rule-based fake
(``proxycast.testing.rules``): OpenAI Chat Completions (converted), Anthropic, Gemini, and an OpenAI
provider with ``responses = true`` (forwarded).

    python bench/openresponses.py [--suite ../shared/conformance/openresponses-suite.tgz] [KIND...]

The suite is not part of proxycast: it is read from ``--suite`` (a tarball of the public repository,
``../shared/conformance/`` by default), unpacked into a temporary folder; bun and zod, which it runs
on, come from npm once (``bench/openresponses/package.json`` pins them; kept in its
``node_modules``). Writes ``bench/results/openresponses.md`` and prints it; exits 1 when a kind
passes fewer than all the tests (``.ci/run`` runs it where the suite is present).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import trio

import proxycast
from proxycast.config import Config, ProviderConfig, ServerConfig
from proxycast.testing import FakeAnthropic, FakeGemini, FakeOpenAI, FakeUpstream, rules

HERE = Path(__file__).parent
ROOT = HERE.parent
PACKAGES = HERE / "openresponses"
DEFAULT_SUITE = ROOT.parent / "shared" / "conformance" / "openresponses-suite.tgz"
KEY = "openresponses-key"

KINDS = {
    "openai-chat": "OpenAI Chat Completions (converted)",
    "anthropic": "Anthropic Messages (converted)",
    "gemini": "Gemini (converted)",
    "openai-responses": "OpenAI Responses, `responses = true` (forwarded)",
}
"""Each kind's model name on the gateway (``rules-KIND``) and what it is."""


def bun() -> Path:
    """bun, installed with zod from npm into ``bench/openresponses/node_modules`` once."""
    path = PACKAGES / "node_modules" / ".bin" / "bun"
    if not path.exists():
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("openresponses: npm is needed (to install bun and zod)")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PACKAGES,
            check=True,
            timeout=600,
        )
    return path


def unpack(suite: Path, into: Path) -> Path:
    """The suite's folder, unpacked from its tarball, with the installed packages linked in."""
    with tarfile.open(suite) as tar:
        tar.extractall(into, filter="data")
    folder = next(p.parent for p in into.rglob("bin/compliance-test.ts"))
    folder = folder.parent
    (folder / "node_modules").symlink_to(PACKAGES / "node_modules")
    return folder


def config(urls: dict[str, str]) -> Config:
    """A gateway with one provider for each kind, each serving the model ``rules-KIND``."""

    def provider(kind: str, type_: str, url: str, **more: Any) -> ProviderConfig:
        return ProviderConfig(
            name=kind,
            type=type_,
            base_url=url,
            api_keys=("sk-fake",),
            models=(f"rules-{kind}",),
            **more,
        )

    return Config(
        server=ServerConfig(port=0, api_keys=(KEY,), access_log="off"),
        providers=(
            provider("openai-chat", "openai", urls["openai"]),
            provider("anthropic", "anthropic", urls["anthropic"]),
            provider("gemini", "gemini", urls["gemini"]),
            provider("openai-responses", "openai", urls["openai"], responses=True),
        ),
    )


async def run_suite(bun_path: Path, folder: Path, v1: str, kind: str) -> dict[str, Any]:
    command = [str(bun_path), "run", "bin/compliance-test.ts", "-u", v1, "-k", KEY]
    command += ["-m", f"rules-{kind}", "--json"]
    with trio.fail_after(300):
        done = await trio.run_process(
            command, cwd=folder, capture_stdout=True, capture_stderr=True, check=False
        )
    out = done.stdout.decode()
    try:
        result: dict[str, Any] = json.loads(out[out.index("{") :])
    except ValueError:
        sys.exit(
            f"openresponses: the suite did not answer JSON for {kind}:\n{out}\n{done.stderr.decode()}"
        )
    return result


async def measure(suite: Path, kinds: list[str]) -> dict[str, dict[str, Any]]:
    bun_path = bun()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="openresponses-") as tmp:
        os.environ["PROXYCAST_HOME"] = str(Path(tmp) / "home")  # the store and the ledger
        folder = unpack(suite, Path(tmp))
        async with trio.open_nursery() as nursery:
            fakes: dict[str, FakeUpstream[Any]] = {
                "openai": rules.follow(FakeOpenAI()),
                "anthropic": rules.follow(FakeAnthropic()),
                "gemini": rules.follow(FakeGemini()),
            }
            urls = {name: await nursery.start(fake.serve) for name, fake in fakes.items()}
            binds = await nursery.start(partial(proxycast.serve, config(urls)))
            for kind in kinds:
                results[kind] = await run_suite(bun_path, folder, binds[0] + "/v1", kind)
            nursery.cancel_scope.cancel()
    return results


def report(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Open Responses compliance",
        "",
        "The public Open Responses compliance suite (`bin/compliance-test.ts`) against proxycast in "
        "front of each upstream kind, a rule-based fake (`proxycast.testing.rules`). "
        "Run: `python bench/openresponses.py` (the suite at `openresponses/openresponses` commit "
        "92c12d9, as `../shared/conformance/` holds it).",
        "",
        "| upstream | passed | failed tests |",
        "|---|---|---|",
    ]
    for kind, result in results.items():
        summary = result["summary"]
        failed = [r["id"] for r in result["results"] if r["status"] == "failed"]
        lines.append(
            f"| {KINDS[kind]} | {summary['passed']}/{summary['total']} | "
            f"{', '.join(failed) or '-'} |"
        )
    details = []
    for kind, result in results.items():
        for r in result["results"]:
            if r["status"] == "failed":
                details.append(f"- {kind} / {r['id']}: " + "; ".join(r.get("errors") or ())[:600])
    if details:
        lines += ["", "## Failures", "", *details]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, default=DEFAULT_SUITE)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "openresponses.md")
    parser.add_argument("kinds", nargs="*", help=f"of {', '.join(KINDS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        sys.exit(f"openresponses: unknown kinds {sorted(unknown)}; the kinds: {', '.join(KINDS)}")
    if not args.suite.exists():
        sys.exit(f"openresponses: no suite at {args.suite}")
    results = trio.run(measure, args.suite, list(args.kinds or KINDS))
    text = report(results)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(text)
    print(text)
    short = [k for k, r in results.items() if r["summary"]["passed"] < r["summary"]["total"]]
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
