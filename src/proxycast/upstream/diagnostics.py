"""What ``proxycast check`` and the ``serve`` banner say about a configuration that parses but cannot
work as meant: aliases that lead nowhere, no providers at all (with the variables that would add
some), and with ``--online``, what each provider's models endpoint answers to each of its keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from proxycast import formats
from proxycast.core import routing
from proxycast.errors import ModelNotFoundError
from proxycast.upstream.discovery import Probe, probe
from proxycast.upstream.provider import make_client

if TYPE_CHECKING:
    from proxycast.config import Config

PROBE_TIMEOUT = 30.0


def no_providers_hint() -> str:
    """How to add a provider, from the registry's env-only variables."""
    ways = (
        " or ".join(u.env.key_variables) or " and ".join(u.env.chain_variables)
        for u in formats.UPSTREAMS.values()
    )
    keys = ", ".join(way for way in ways if way)
    return (
        f"no providers configured: set {keys} (each adds a provider; "
        "the README's 'Using it'), or write a proxycast.toml with [[providers]]"
    )


def problems(config: Config) -> list[str]:
    """What stops the configuration from working as written, one line each (empty: none)."""
    found: list[str] = []
    if not config.providers:
        found.append(f"{config.source}: {no_providers_hint()}")
    for alias, target in config.aliases.items():
        try:
            routing.resolve(target, config)
        except ModelNotFoundError:
            found.append(
                f"{config.source}: aliases.{alias}: its target {target!r} is served by no "
                "provider (no provider/ prefix, exact name or glob matches it)"
            )
    for model, targets in config.fallbacks.items():
        for index, target in enumerate(targets):
            try:
                routing.resolve(target, config)
            except ModelNotFoundError:
                found.append(
                    f"{config.source}: fallbacks.{model}[{index}]: {target!r} is served by no "
                    "provider (no provider/ prefix, exact name or glob matches it)"
                )
        if model != "*":
            try:
                routing.resolve(model, config)
            except ModelNotFoundError:
                found.append(
                    f"{config.source}: fallbacks.{model}: the model itself is served by no "
                    "provider, so its fallbacks are never used"
                )
    return found


async def probe_all(config: Config) -> list[Probe]:
    """Every provider's models endpoint, with each of its keys (``provider#N``), concurrently."""
    results: dict[tuple[int, int], Probe] = {}

    async def one(p_index: int, k_index: int) -> None:
        provider = config.providers[p_index]
        with trio.move_on_after(PROBE_TIMEOUT) as scope:
            results[p_index, k_index] = await probe(client, provider, config.server, k_index)
        if scope.cancelled_caught:
            results[p_index, k_index] = Probe(
                provider.name, k_index, "unreachable", f"no answer within {PROBE_TIMEOUT:g} s"
            )

    async with make_client(config.server) as client, trio.open_nursery() as nursery:
        for p_index, provider in enumerate(config.providers):
            for k_index in range(max(1, len(provider.api_keys))):
                nursery.start_soon(one, p_index, k_index)
    return [results[k] for k in sorted(results)]
