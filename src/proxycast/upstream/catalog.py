"""The model catalog: what ``/v1/models`` and ``proxycast models`` list.

Exact model names and aliases come from the configuration, as always. A provider that serves globs
(``claude-*``: every provider of env-only mode) also lists what its own models endpoint returns,
filtered by its globs (``discovery.py``). Those lists are fetched in the background, by a task that
lives as long as the server, and cached for :data:`TTL` seconds: a ``/v1/models`` request that finds
them stale asks for a refresh and waits for it at most :data:`WAIT` seconds, then answers with what it
has, so that a slow upstream never slows ``/v1/models`` by more than that.
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import trio

from proxycast.core import routing
from proxycast.errors import ModelsEndpointError
from proxycast.upstream.discovery import fetch_models

if TYPE_CHECKING:
    import httpx

    from proxycast.config import Config, ProviderConfig

log = logging.getLogger("proxycast")

TTL = 300.0
"""Seconds a provider's fetched model list is served before it is fetched again."""
RETRY = 30.0
"""Seconds before a failed fetch is tried again."""
WAIT = 0.5
"""Seconds a ``/v1/models`` request waits for a refresh it asked for."""
FETCH_TIMEOUT = 30.0
"""Seconds one provider's fetch may take (all its pages)."""


def globbing(config: Config) -> list[ProviderConfig]:
    """The providers whose model lists come from their upstream (those that serve a glob)."""
    return [p for p in config.providers if any(routing.is_glob(m) for m in p.models)]


def listed(config: Config, fetched: dict[str, tuple[str, ...]]) -> list[tuple[str, ProviderConfig]]:
    """The configuration's models and aliases, then each provider's fetched models that its globs
    match. A fetched model that another provider would serve under its bare name (an earlier glob
    matches it) is listed as ``provider/model``, the name that reaches this provider."""
    out = routing.listed_models(config)
    seen = {name for name, _ in out}
    for provider in config.providers:
        globs = [m for m in provider.models if routing.is_glob(m)]
        for model in fetched.get(provider.name, ()):
            if not any(fnmatchcase(model, g) for g in globs):
                continue
            name = model
            if routing.resolve(model, config).provider.name != provider.name:
                name = f"{provider.name}/{model}"
            if name not in seen:
                seen.add(name)
                out.append((name, provider))
    return out


async def fetch_all(
    client: httpx.AsyncClient, config: Config, providers: list[ProviderConfig]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Each provider's model list (with its first key), concurrently; and the failures."""
    fetched: dict[str, tuple[str, ...]] = {}
    failures: dict[str, str] = {}

    async def one(provider: ProviderConfig) -> None:
        with trio.move_on_after(FETCH_TIMEOUT) as scope:
            try:
                fetched[provider.name] = await fetch_models(client, provider, config.server)
            except ModelsEndpointError as exc:
                failures[provider.name] = exc.detail
        if scope.cancelled_caught:
            failures[provider.name] = f"no answer within {FETCH_TIMEOUT:g} s"

    async with trio.open_nursery() as nursery:
        for provider in providers:
            nursery.start_soon(one, provider)
    return fetched, failures


class Catalog:
    """The fetched model lists of one worker, and the task that refreshes them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.fetched: dict[str, tuple[str, ...]] = {}
        self._due: dict[str, float] = {p.name: -1.0 for p in globbing(config)}
        self._wanted = trio.Event()
        self._refreshed = trio.Event()
        self._running = False

    def reconfigure(self, config: Config) -> None:
        """Serve ``config``'s models from now on (a reload): a fetched list is kept for a provider
        whose configuration did not change; any other globbing provider is fetched when next asked."""
        kept = {p.name for p in globbing(config) if p in set(globbing(self.config))}
        self.config = config
        self.fetched = {name: models for name, models in self.fetched.items() if name in kept}
        self._due = {
            p.name: self._due[p.name] if p.name in kept else -1.0 for p in globbing(config)
        }

    def _stale(self) -> list[ProviderConfig]:
        now = trio.current_time()
        return [p for p in globbing(self.config) if self._due[p.name] <= now]

    async def run(
        self,
        client: httpx.AsyncClient,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Refresh stale lists whenever asked to, until cancelled (with the server)."""
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wanted.wait()
                self._wanted = trio.Event()
                stale = self._stale()
                fetched, failures = await fetch_all(client, self.config, stale)
                now = trio.current_time()
                for provider in stale:
                    if provider not in globbing(self.config):
                        continue  # reconfigured while it was fetched
                    if provider.name in fetched:
                        self.fetched[provider.name] = fetched[provider.name]
                        self._due[provider.name] = now + TTL
                    else:
                        self._due[provider.name] = now + RETRY
                        log.warning(
                            "provider %r: cannot list its models: %s",
                            provider.name,
                            failures[provider.name],
                        )
                done, self._refreshed = self._refreshed, trio.Event()
                done.set()
        finally:
            self._running = False

    async def models(self) -> list[tuple[str, ProviderConfig]]:
        """The models to list now: a refresh is asked for when some list is stale, and waited for
        at most :data:`WAIT` seconds."""
        if self._running and self._stale():
            refreshed = self._refreshed
            self._wanted.set()
            with trio.move_on_after(WAIT):
                await refreshed.wait()
        return listed(self.config, self.fetched)
